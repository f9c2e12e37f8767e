"""The `gan` condition: visual embeddings + noise -> EnCodec latents, decoded by MusicGen's codec.

A conditional GAN baseline beside the `vit_adapter`. Both start from the same visual embedding
sequence and both end in the same frozen audio decoder (MusicGen's EnCodec); they differ only in
how they get from vision to sound. The adapter conditions MusicGen's language model, which then
samples codec tokens; the GAN's generator writes the codec's *continuous* latents (the encoder's
output before quantization, `audio_encoder.encoder(x)`) directly, one vector per codec frame, and
`audio_encoder.decoder(latents)` turns them into audio.

Generator: the embedding sequence is normalised, projected and linearly interpolated in time to
the codec's latent frame rate x the segment's duration, concatenated with Gaussian noise per frame
and passed through dilated residual 1-D convolutions to the latent width. It works in
standardised latent space (per-channel mean and SD of the training latents, stored with it).

Discriminators: one per STFT size on log-mel spectrograms of the decoded audio (multi-scale),
plus optionally one on the (standardised) latents with the visual sequence beside them, which
makes that one conditional. The real side is the codec's own reconstruction of the reference
segment from its continuous latents, so the discriminators compare like with like: the codec
decoder is shared and only the latents differ.

Losses (generator): `reconstruction_weight` x L1 between generated and reference standardised
latents + `adversarial_weight` x adversarial loss (hinge: -D(fake); least squares: (D(fake)-1)^2),
averaged over discriminators + `feature_matching_weight` x L1 between the discriminators' hidden
features of generated and reference audio, averaged over layers and discriminators.
Discriminators: hinge (relu(1 - D(real)) + relu(1 + D(fake))) or least squares
((D(real) - 1)^2 + D(fake)^2), averaged over discriminators.

The codec and the visual encoder are frozen: their parameters have `requires_grad=False`, are not
given to any optimiser, and their weights' hash is checked after training. Gradients do pass
*through* the frozen codec decoder to the generator (the mel discriminators judge decoded audio).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pathlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional

from synthesis.config import ConfigError, GanConfig
from synthesis.models import LoadedMusicgen, one_cpu_thread, state_dict_sha256

STATE_FILE = "gan-state.pt"  # the whole training state, for resuming
GENERATOR_FILE = "gan-generator.safetensors"  # the generator alone, for `gan.checkpoint`
LOSS_LOG = "loss_log.jsonl"
STATE_FORMAT = "sightsound-gan-state/1"
LATENT_STD_FLOOR = 1e-3  # a channel that never moves must not blow up the standardisation


class GanCheckpointError(ConfigError):
    """A GAN checkpoint that is missing or does not fit this run's codec or encoder."""


@dataclass
class GanShape:
    """What a generator was built for: the encoder's and the codec's sizes, and its own."""

    embedding_size: int  # visual encoder width
    latent_size: int  # EnCodec's continuous latent width (its config's hidden_size)
    latent_frame_rate: int  # codec frames per second
    sampling_rate: int  # codec sample rate
    audio_channels: int  # codec channels (1 for every MusicGen codec)
    noise_size: int
    hidden_size: int
    residual_layers: int


def gan_shape(embedding_size: int, musicgen: LoadedMusicgen, gan: GanConfig) -> GanShape:
    """The shape of a generator for this encoder and this MusicGen's codec."""
    codec_config = musicgen.model.audio_encoder.config
    return GanShape(
        embedding_size=int(embedding_size),
        latent_size=int(codec_config.hidden_size),
        latent_frame_rate=musicgen.frame_rate,
        sampling_rate=musicgen.sampling_rate,
        audio_channels=int(codec_config.audio_channels),
        noise_size=gan.noise_size,
        hidden_size=gan.hidden_size,
        residual_layers=gan.residual_layers,
    )


# --------------------------------------------------------------------------------------------
# The frozen codec


def freeze(module: nn.Module) -> nn.Module:
    """No gradients into `module`'s parameters, and eval mode (no dropout, fixed statistics)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval()


def codec_weights_sha256(musicgen: LoadedMusicgen) -> str:
    return state_dict_sha256(musicgen.model.audio_encoder)


@torch.no_grad()
def codec_latents(musicgen: LoadedMusicgen, audio: torch.Tensor, frames: int) -> torch.Tensor:
    """Audio (B, channels, samples) at the codec's rate -> continuous latents (B, D, frames).

    The encoder's output before quantization. Channels are mixed down to the codec's own count;
    a codec that normalises its input (config.normalize) gets the RMS-normalised audio it was
    trained on (the clip's level is set later by loudness matching anyway).
    """
    codec = musicgen.model.audio_encoder
    audio = audio.to(musicgen.device, torch.float32)
    if audio.shape[1] != codec.config.audio_channels:
        audio = audio.mean(dim=1, keepdim=True).repeat(1, codec.config.audio_channels, 1)
    if codec.config.normalize:
        scale = audio.mean(dim=1, keepdim=True).pow(2).mean(dim=-1, keepdim=True).sqrt() + 1e-8
        audio = audio / scale
    latents = codec.encoder(audio)
    if latents.shape[-1] < frames:  # a reference a few samples short of the segment
        latents = functional.pad(latents, (0, frames - latents.shape[-1]), mode="replicate")
    return latents[..., :frames]


def decode_latents(musicgen: LoadedMusicgen, latents: torch.Tensor) -> torch.Tensor:
    """Continuous latents (B, D, F) -> audio (B, channels, F x hop) through the frozen decoder.

    No `no_grad` here: in training, gradients pass through the decoder to the generator (the
    decoder's own parameters are frozen and get none).
    """
    return musicgen.model.audio_encoder.decoder(latents.float())


# --------------------------------------------------------------------------------------------
# Generator


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.dilated = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.pointwise = nn.Conv1d(channels, channels, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        update = self.dilated(functional.leaky_relu(hidden, 0.2))
        return hidden + self.pointwise(functional.leaky_relu(update, 0.2))


class LatentGenerator(nn.Module):
    """(visual embeddings, noise) -> standardised EnCodec latents, one vector per codec frame."""

    def __init__(self, shape: GanShape) -> None:
        super().__init__()
        self.shape = shape
        self.input_norm = nn.LayerNorm(shape.embedding_size)
        self.visual_projection = nn.Linear(shape.embedding_size, shape.hidden_size)
        self.input_conv = nn.Conv1d(
            shape.hidden_size + shape.noise_size, shape.hidden_size, 3, 1, 1
        )
        # dilations 1, 2, 4, 8, 1, 2, ...: a receptive field of about a second at 50 Hz
        self.blocks = nn.ModuleList(
            ResidualBlock(shape.hidden_size, 2 ** (index % 4))
            for index in range(shape.residual_layers)
        )
        self.output_conv = nn.Conv1d(shape.hidden_size, shape.latent_size, 3, padding=1)
        self.register_buffer("latent_mean", torch.zeros(shape.latent_size))
        self.register_buffer("latent_std", torch.ones(shape.latent_size))

    def frames_for(self, seconds: float) -> int:
        """Latent frames of a clip of `seconds`: the codec's frame rate x the duration."""
        return int(round(seconds * self.shape.latent_frame_rate))

    def forward(self, embeddings: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(B, T, E) embeddings and (B, noise_size, F) noise -> (B, latent_size, F) standardised.

        The visual sequence (a few frames per second) is interpolated linearly to the F latent
        frames, so the output length is set by the noise, i.e. by the segment's duration.
        """
        visual = self.visual_projection(self.input_norm(embeddings)).transpose(1, 2)
        visual = functional.interpolate(visual, size=noise.shape[-1], mode="linear")
        hidden = self.input_conv(torch.cat([visual, noise.to(visual.dtype)], dim=1))
        for block in self.blocks:
            hidden = block(hidden)
        return self.output_conv(functional.leaky_relu(hidden, 0.2))

    def standardize(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents - self.latent_mean[:, None]) / self.latent_std[:, None]

    def to_latents(self, standardized: torch.Tensor) -> torch.Tensor:
        return standardized * self.latent_std[:, None] + self.latent_mean[:, None]


def draw_noise(
    shape: GanShape, batch: int, frames: int, generator: torch.Generator
) -> torch.Tensor:
    """Noise drawn on the CPU from `generator`, so a seed gives the same clip on any device."""
    return torch.randn((batch, shape.noise_size, frames), generator=generator)


# --------------------------------------------------------------------------------------------
# Discriminators


def mel_filterbank(sampling_rate: int, n_fft: int, bands: int) -> torch.Tensor:
    """Triangular filters on the HTK mel scale from 0 Hz to Nyquist, shape (bands, n_fft//2+1)."""

    def to_mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    def to_hz(mel: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)

    edges = to_hz(np.linspace(0.0, to_mel(np.array(sampling_rate / 2.0)), bands + 2))
    frequencies = np.linspace(0.0, sampling_rate / 2.0, n_fft // 2 + 1)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (frequencies - low) / np.maximum(centre - low, 1e-9)
    falling = (high - frequencies) / np.maximum(high - centre, 1e-9)
    return torch.from_numpy(np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32))


def log_mel(
    audio: torch.Tensor, n_fft: int, window: torch.Tensor, filterbank: torch.Tensor
) -> torch.Tensor:
    """(B, channels, n) audio -> (B, 1, bands, frames) log-mel magnitudes, in float32."""
    # STFT and log in float32 even under autocast: bf16 has too few bits for small magnitudes.
    with torch.autocast(audio.device.type, enabled=False):
        mono = audio.float().mean(dim=1)
        spectrum = torch.stft(
            mono,
            n_fft,
            hop_length=n_fft // 4,
            window=window,
            center=True,
            return_complex=True,
        ).abs()
        mel = torch.matmul(filterbank, spectrum)
        return torch.log(torch.clamp(mel, min=1e-5))[:, None]


class MelDiscriminator(nn.Module):
    """A 2-D convolutional patch discriminator on the log-mel spectrogram of one STFT size."""

    def __init__(self, sampling_rate: int, n_fft: int, bands: int, channels: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        # Not learned, rebuilt from the settings: kept out of the state dict.
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer(
            "filterbank", mel_filterbank(sampling_rate, n_fft, bands), persistent=False
        )
        self.layers = nn.ModuleList(
            [
                nn.Conv2d(1, channels, (3, 9), padding=(1, 4)),
                nn.Conv2d(channels, channels, (3, 9), stride=(2, 2), padding=(1, 4)),
                nn.Conv2d(channels, channels, (3, 9), stride=(2, 2), padding=(1, 4)),
                nn.Conv2d(channels, channels, (3, 3), padding=(1, 1)),
            ]
        )
        self.output = nn.Conv2d(channels, 1, (3, 3), padding=(1, 1))

    def forward(
        self, audio: torch.Tensor, latents: torch.Tensor, visual: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Patch logits and the hidden feature maps (for feature matching) of decoded audio."""
        hidden = log_mel(audio, self.n_fft, self.window, self.filterbank)
        features = []
        for layer in self.layers:
            hidden = functional.leaky_relu(layer(hidden), 0.2)
            features.append(hidden)
        return self.output(hidden), features


class LatentDiscriminator(nn.Module):
    """A 1-D discriminator on standardised latents with the visual sequence beside them.

    Conditional: it sees which video the latents are meant to go with, so it can penalise latents
    that are plausible sound but do not fit the performance.
    """

    def __init__(self, shape: GanShape, channels: int) -> None:
        super().__init__()
        self.visual_projection = nn.Linear(shape.embedding_size, channels)
        self.layers = nn.ModuleList(
            [
                nn.Conv1d(shape.latent_size + channels, channels, 3, padding=1),
                nn.Conv1d(channels, channels, 5, stride=2, padding=2),
                nn.Conv1d(channels, channels, 5, stride=2, padding=2),
            ]
        )
        self.output = nn.Conv1d(channels, 1, 3, padding=1)

    def forward(
        self, audio: torch.Tensor, latents: torch.Tensor, visual: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        projected = self.visual_projection(visual).transpose(1, 2)
        projected = functional.interpolate(projected, size=latents.shape[-1], mode="linear")
        hidden = torch.cat([latents.to(projected.dtype), projected], dim=1)
        features = []
        for layer in self.layers:
            hidden = functional.leaky_relu(layer(hidden), 0.2)
            features.append(hidden)
        return self.output(hidden), features


class GanDiscriminators(nn.Module):
    """The multi-scale mel discriminators, and the latent discriminator when configured."""

    def __init__(self, shape: GanShape, gan: GanConfig) -> None:
        super().__init__()
        members: list[nn.Module] = [
            MelDiscriminator(
                shape.sampling_rate, int(size), gan.mel_bands, gan.discriminator_channels
            )
            for size in gan.mel_fft_sizes
        ]
        if gan.latent_discriminator:
            members.append(LatentDiscriminator(shape, gan.discriminator_channels))
        self.members = nn.ModuleList(members)

    def forward(
        self, audio: torch.Tensor, latents: torch.Tensor, visual: torch.Tensor
    ) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [member(audio, latents, visual) for member in self.members]


# --------------------------------------------------------------------------------------------
# Losses


def discriminator_loss(
    real: list[torch.Tensor], fake: list[torch.Tensor], kind: str
) -> torch.Tensor:
    """Hinge or least-squares loss of the discriminators, averaged over them."""
    losses = []
    for real_logits, fake_logits in zip(real, fake, strict=True):
        real_logits, fake_logits = real_logits.float(), fake_logits.float()
        if kind == "hinge":
            loss = functional.relu(1 - real_logits).mean() + functional.relu(1 + fake_logits).mean()
        else:
            loss = (real_logits - 1).pow(2).mean() + fake_logits.pow(2).mean()
        losses.append(loss)
    return torch.stack(losses).mean()


def generator_adversarial_loss(fake: list[torch.Tensor], kind: str) -> torch.Tensor:
    """The generator's side of the hinge or least-squares game, averaged over discriminators."""
    if kind == "hinge":
        losses = [-logits.float().mean() for logits in fake]
    else:
        losses = [(logits.float() - 1).pow(2).mean() for logits in fake]
    return torch.stack(losses).mean()


def feature_matching_loss(
    real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]
) -> torch.Tensor:
    """L1 between hidden features of generated and reference inputs, averaged over all layers."""
    losses = [
        functional.l1_loss(fake_map.float(), real_map.detach().float())
        for real_maps, fake_maps in zip(real, fake, strict=True)
        for real_map, fake_map in zip(real_maps, fake_maps, strict=True)
    ]
    return torch.stack(losses).mean()


# --------------------------------------------------------------------------------------------
# Training


@dataclass
class GanExample:
    """One (video, reference audio) segment prepared for the GAN."""

    segment_id: str
    embeddings: np.ndarray  # (T, E) visual embedding sequence
    latents: torch.Tensor  # (D, F) the reference's continuous codec latents
    audio: torch.Tensor  # (channels, F x hop) the codec's reconstruction from those latents
    content_key: str = ""  # identifies the segment's content (video hash, start, duration)


def prepare_examples(
    musicgen: LoadedMusicgen, segments: list[Any], content_keys: dict[str, str] | None = None
) -> list[GanExample]:
    """Segments (`conditions.SegmentInput`) -> GAN examples: reference latents, real audio."""
    freeze(musicgen.model)
    examples = []
    for segment in segments:
        frames = musicgen.frames_for(segment.duration)
        waveform = torch.from_numpy(np.asarray(segment.reference_audio, dtype=np.float32))[None]
        latents = codec_latents(musicgen, waveform, frames)
        with torch.no_grad():
            audio = decode_latents(musicgen, latents)
        examples.append(
            GanExample(
                segment.id,
                np.asarray(segment.embeddings, dtype=np.float32),
                latents[0].cpu(),
                audio[0].float().cpu(),
                (content_keys or {}).get(segment.id, ""),
            )
        )
    return examples


def training_set_sha256(examples: list[GanExample]) -> str:
    """sha256 over the sorted lines `segment id <space> content key` of the training segments."""
    lines = sorted(f"{example.segment_id} {example.content_key}" for example in examples)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def latent_statistics(examples: list[GanExample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and SD of the training latents over all frames of all segments."""
    stacked = torch.cat([example.latents for example in examples], dim=1)  # (D, sum F)
    mean = stacked.mean(dim=1)
    std = stacked.std(dim=1, unbiased=False).clamp_min(LATENT_STD_FLOOR)
    return mean, std


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on a GPU; nothing on the CPU (training there stays float32, reproducible)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _rnn_backward_in_eval_mode(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """cuDNN's LSTM cannot backpropagate in eval mode, and the frozen codec decoder (an LSTM
    inside) stays in eval mode; PyTorch's own LSTM kernels can, so cuDNN is off for that pass."""
    if device.type == "cuda":
        return torch.backends.cudnn.flags(enabled=False)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Discriminator weights get no gradients during the generator's step (saves the work)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in module.parameters():
            parameter.requires_grad_(True)


def _atomic_torch_save(payload: dict[str, Any], path: pathlib.Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)  # a checkpoint is either complete or the previous one


def save_generator(
    generator: LatentGenerator, path: pathlib.Path, metadata: dict[str, Any]
) -> pathlib.Path:
    """Generator weights as safetensors with a JSON sidecar holding the shape and provenance."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    temporary = path.with_name(path.name + ".tmp")
    save_file(tensors, temporary)
    sidecar = {"kind": "sightsound-gan-generator", "shape": asdict(generator.shape), **metadata}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2), encoding="utf-8")
    temporary.replace(path)
    return path


def load_generator(path: pathlib.Path) -> tuple[LatentGenerator, dict[str, Any]]:
    """A generator written by `save_generator`; a clear error when it or its sidecar is absent."""
    sidecar_path = path.with_suffix(".json")
    if not path.is_file():
        raise GanCheckpointError(
            f"GAN checkpoint {path} does not exist: train one with `python -m synthesis "
            f"train-gan --videos DIR --out FOLDER --config FILE` and point gan.checkpoint at "
            f"FOLDER/{GENERATOR_FILE}"
        )
    if not sidecar_path.is_file():
        raise GanCheckpointError(
            f"GAN checkpoint {path} has no sidecar {sidecar_path.name} (shape and provenance): "
            "use the files written by `train-gan` together"
        )
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    if sidecar.get("kind") != "sightsound-gan-generator":
        raise GanCheckpointError(f"{path} is not a GAN generator written by train-gan")
    generator = LatentGenerator(GanShape(**sidecar["shape"]))
    try:
        generator.load_state_dict(load_file(str(path)))
    except RuntimeError as error:
        raise GanCheckpointError(
            f"GAN checkpoint {path} does not match its sidecar: {error}"
        ) from error
    return generator.eval(), sidecar


def check_generator_fits(
    shape: GanShape, expected: GanShape, sidecar: dict[str, Any], codec_sha256: str, where: str
) -> None:
    """Refuses a generator made for another encoder or codec, naming what differs."""
    fields = ("embedding_size", "latent_size", "latent_frame_rate", "sampling_rate")
    differences = [
        f"{name} {getattr(shape, name)} (this run: {getattr(expected, name)})"
        for name in fields
        if getattr(shape, name) != getattr(expected, name)
    ]
    if differences:
        raise GanCheckpointError(
            f"GAN checkpoint {where} was trained for another visual encoder or codec: "
            + "; ".join(differences)
        )
    trained_codec = sidecar.get("codec_weights_sha256")
    if trained_codec and trained_codec != codec_sha256:
        raise GanCheckpointError(
            f"GAN checkpoint {where} was trained on latents of another codec (weights sha256 "
            f"{trained_codec[:12]}..., this run's MusicGen codec {codec_sha256[:12]}...): its "
            "latents would mean something else to this decoder; retrain it with this model"
        )


@dataclass
class GanStep:
    """The losses of one training step (None while the discriminators are not yet in play)."""

    step: int
    generator: float
    discriminator: float | None
    adversarial: float | None
    feature_matching: float | None
    reconstruction: float
    seconds: float
    segments: int = 0  # in the step's batch: segments / seconds is the training throughput


def training_throughput(records: list[dict[str, Any]]) -> float | None:
    """Segments per second over the logged steps (timed from batch assembly to optimizer step,
    checkpoint writing excluded); None for a log without timings."""
    seconds = sum(record.get("seconds", 0.0) for record in records)
    segments = sum(record.get("segments", 0) for record in records)
    return segments / seconds if seconds > 0 and segments > 0 else None


def _read_log(path: pathlib.Path, up_to_step: int) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [record for record in records if record["step"] <= up_to_step]


def _write_log(path: pathlib.Path, records: list[dict[str, Any]]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    temporary.replace(path)


def train_gan(
    musicgen: LoadedMusicgen,
    examples: list[GanExample],
    out_dir: pathlib.Path,
    gan: GanConfig,
    embedding_size: int,
    metadata: dict[str, Any],
    steps: int | None = None,
    progress: Callable[[GanStep], None] | None = None,
    show_progress_bar: bool | None = None,
) -> list[dict[str, Any]]:
    """Trains (or resumes training of) the GAN up to `steps`; returns the whole loss log.

    Resumes from `out_dir/gan-state.pt` when it exists (same training set and settings, else an
    error): generator, discriminators, both optimisers, the step and the RNG states come back,
    so the continued run computes exactly what an uninterrupted one would. Writes
    `loss_log.jsonl` (one line per step), the state every `gan.checkpoint_every` steps and at
    the end, and `gan-generator.safetensors` (+ .json) for generation. `progress` is called
    after every step. MusicGen (its codec included) stays frozen.
    """
    if not examples:
        raise ValueError("no training examples")
    total_steps = int(steps if steps is not None else gan.steps)
    device = musicgen.device
    shape = gan_shape(embedding_size, musicgen, gan)
    freeze(musicgen.model)
    codec_before = codec_weights_sha256(musicgen)
    data_sha = training_set_sha256(examples)
    # Everything that changes what a step computes; steps and checkpoint_every do not.
    settings = {k: v for k, v in asdict(gan).items() if k not in ("steps", "checkpoint_every")}
    settings.pop("checkpoint", None)
    settings.pop("allow_untrained", None)

    torch.manual_seed(gan.seed)  # initial weights
    generator = LatentGenerator(shape).to(device)
    discriminators = GanDiscriminators(shape, gan).to(device)
    betas = (float(gan.adam_betas[0]), float(gan.adam_betas[1]))
    generator_optimizer = torch.optim.AdamW(
        generator.parameters(), lr=gan.generator_learning_rate, betas=betas
    )
    discriminator_optimizer = torch.optim.AdamW(
        discriminators.parameters(), lr=gan.discriminator_learning_rate, betas=betas
    )
    data_rng = torch.Generator().manual_seed(gan.seed)  # batches and noise, on the CPU
    step = 0
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / STATE_FILE
    log_path = out_dir / LOSS_LOG
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise GanCheckpointError(f"{state_path} is not a GAN training state of this version")
        if state["shape"] != asdict(shape):
            raise GanCheckpointError(
                f"{state_path} was trained with generator shape {state['shape']}, this run has "
                f"{asdict(shape)}: use another --out folder"
            )
        if state["training_set_sha256"] != data_sha:
            raise GanCheckpointError(
                f"{state_path} was trained on another set of segments: use another --out "
                "folder, or the same videos and config to resume"
            )
        if state["settings"] != json.loads(json.dumps(settings)):
            raise GanCheckpointError(
                f"{state_path} was trained with other gan settings: use another --out folder"
            )
        generator.load_state_dict(state["generator"])
        discriminators.load_state_dict(state["discriminators"])
        generator_optimizer.load_state_dict(state["generator_optimizer"])
        discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
        data_rng.set_state(state["rng"]["data"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        step = int(state["step"])
    else:
        mean, std = latent_statistics(examples)
        generator.latent_mean.copy_(mean.to(device))
        generator.latent_std.copy_(std.to(device))
    # Lines logged after the last checkpoint of an interrupted run are computed again.
    records = _read_log(log_path, step)
    _write_log(log_path, records)

    def checkpoint() -> None:
        rng = {
            "data": data_rng.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        }
        _atomic_torch_save(
            {
                "format": STATE_FORMAT,
                "step": step,
                "generator": generator.state_dict(),
                "discriminators": discriminators.state_dict(),
                "generator_optimizer": generator_optimizer.state_dict(),
                "discriminator_optimizer": discriminator_optimizer.state_dict(),
                "rng": rng,
                "shape": asdict(shape),
                "settings": json.loads(json.dumps(settings)),
                "training_set_sha256": data_sha,
            },
            state_path,
        )
        sidecar = {
            **metadata,
            "steps": step,
            "seed": gan.seed,
            "training_set_sha256": data_sha,
            "training_segments": sorted(example.segment_id for example in examples),
            "codec_weights_sha256": codec_before,
            "settings": settings,
        }
        save_generator(generator, out_dir / f"gan-generator-step{step:06d}.safetensors", sidecar)
        save_generator(generator, out_dir / GENERATOR_FILE, sidecar)

    generator.train()
    discriminators.train()
    batch_size = min(gan.batch_size, len(examples))
    from tqdm import tqdm

    bar = tqdm(
        total=total_steps,
        initial=min(step, total_steps),
        desc="train-gan",
        unit="step",
        disable=None if show_progress_bar is None else not show_progress_bar,  # None: if a tty
    )
    try:
        while step < total_steps:
            started = time.perf_counter()
            chosen = [examples[int(i)] for i in torch.randperm(len(examples), generator=data_rng)]
            chosen = chosen[:batch_size]
            frames = min(example.latents.shape[1] for example in chosen)
            samples = min(example.audio.shape[1] for example in chosen)
            steps_visual = min(example.embeddings.shape[0] for example in chosen)
            visual = torch.stack(
                [torch.from_numpy(example.embeddings[:steps_visual]) for example in chosen]
            ).to(device)
            real_latents = torch.stack([e.latents[:, :frames] for e in chosen]).to(device)
            real_audio = torch.stack([e.audio[:, :samples] for e in chosen]).to(device)
            noise = draw_noise(shape, len(chosen), frames, data_rng).to(device)
            real_standardized = generator.standardize(real_latents)
            adversarial_on = step >= gan.warmup_steps

            with _autocast(device), _rnn_backward_in_eval_mode(device):
                fake_standardized = generator(visual, noise)
                fake_audio = decode_latents(musicgen, generator.to_latents(fake_standardized))
                fake_audio = fake_audio[..., :samples]

            discriminator_value = None
            if adversarial_on:
                with _autocast(device):
                    real_outputs = discriminators(real_audio, real_standardized, visual)
                    fake_outputs = discriminators(
                        fake_audio.detach(), fake_standardized.detach(), visual
                    )
                    d_loss = discriminator_loss(
                        [logits for logits, _ in real_outputs],
                        [logits for logits, _ in fake_outputs],
                        gan.adversarial_loss,
                    )
                discriminator_optimizer.zero_grad(set_to_none=True)
                d_loss.backward()
                discriminator_optimizer.step()
                discriminator_value = float(d_loss.detach())

            with _autocast(device):
                reconstruction = functional.l1_loss(fake_standardized.float(), real_standardized)
                g_loss = gan.reconstruction_weight * reconstruction
                adversarial_value = feature_value = None
                if adversarial_on:
                    with _frozen(discriminators):
                        fake_outputs = discriminators(fake_audio, fake_standardized, visual)
                        with torch.no_grad():  # features of the reference, after D's update
                            real_outputs = discriminators(real_audio, real_standardized, visual)
                    adversarial = generator_adversarial_loss(
                        [logits for logits, _ in fake_outputs], gan.adversarial_loss
                    )
                    matching = feature_matching_loss(
                        [features for _, features in real_outputs],
                        [features for _, features in fake_outputs],
                    )
                    g_loss = (
                        g_loss
                        + gan.adversarial_weight * adversarial
                        + gan.feature_matching_weight * matching
                    )
                    adversarial_value = float(adversarial.detach())
                    feature_value = float(matching.detach())
            generator_optimizer.zero_grad(set_to_none=True)
            g_loss.backward()
            generator_optimizer.step()
            step += 1

            record = GanStep(
                step=step,
                generator=float(g_loss.detach()),
                discriminator=discriminator_value,
                adversarial=adversarial_value,
                feature_matching=feature_value,
                reconstruction=float(reconstruction.detach()),
                seconds=round(time.perf_counter() - started, 4),
                segments=len(chosen),
            )
            records.append(asdict(record))
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(asdict(record)) + "\n")
            bar.update()
            bar.set_postfix(rec=f"{record.reconstruction:.3f}", g=f"{record.generator:.3f}")
            if step % gan.checkpoint_every == 0 or step == total_steps:
                checkpoint()
            if progress is not None:
                progress(record)
    finally:
        bar.close()
    if not state_path.exists() or step == 0:
        checkpoint()  # asked for no more steps than already done: still leave a generator
    generator.eval()
    if codec_weights_sha256(musicgen) != codec_before:
        raise RuntimeError("the frozen codec's weights changed during GAN training")
    return records


# --------------------------------------------------------------------------------------------
# Generation


@dataclass
class GanSynthesizer:
    """A loaded generator and the frozen codec: one segment's embeddings -> audio."""

    generator: LatentGenerator
    musicgen: LoadedMusicgen
    label: str  # checkpoint file name and sha256, or the untrained note
    provenance: dict[str, Any]  # every field of a gan clip's provenance but its seed
    seed_for: Callable[[str], int]  # the clip's noise seed from its id (the pipeline's scheme)

    @property
    def sampling_rate(self) -> int:
        return self.generator.shape.sampling_rate

    @torch.no_grad()
    def synthesize(self, embeddings: np.ndarray, seconds: float, seed: int) -> np.ndarray:
        """(T, E) embeddings of a segment -> (channels, samples) float32 audio of `seconds`."""
        frames = self.generator.frames_for(seconds)
        device = self.musicgen.device
        noise = draw_noise(self.generator.shape, 1, frames, torch.Generator().manual_seed(seed))
        visual = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))[None].to(device)
        with one_cpu_thread(device):  # the same bytes whatever the run's thread count
            standardized = self.generator(visual, noise.to(device))
            audio = decode_latents(self.musicgen, self.generator.to_latents(standardized))
        samples = int(round(seconds * self.sampling_rate))
        return audio[0, :, :samples].float().cpu().numpy()


def untrained_generator(shape: GanShape, seed: int) -> LatentGenerator:
    """A randomly initialised generator (identity standardisation): smoke tests only."""
    torch.manual_seed(seed)
    return LatentGenerator(shape).eval()
