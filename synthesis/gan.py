"""The GAN's networks and its codec: visual embeddings + noise -> EnCodec latents -> audio.

What the `gan` condition is (trained by synthesis.training.gan, used by synthesis.conditions.gan):
a conditional GAN baseline beside the `vit_adapter`. Both start from the same visual embedding
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

The codec and the visual encoder are frozen (`freeze`): their parameters have
`requires_grad=False`. Gradients do pass *through* the frozen codec decoder (`decode_latents`).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional

from synthesis.models import LoadedMusicgen, one_cpu_thread, state_dict_sha256
from synthesis.sections import ConfigError

GENERATOR_FILE = "gan-generator.safetensors"  # the generator alone, for `gan.checkpoint`


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

    def __init__(
        self,
        shape: GanShape,
        mel_fft_sizes: list[int],
        mel_bands: int,
        channels: int,
        latent_discriminator: bool,
    ) -> None:
        super().__init__()
        members: list[nn.Module] = [
            MelDiscriminator(shape.sampling_rate, int(size), mel_bands, channels)
            for size in mel_fft_sizes
        ]
        if latent_discriminator:
            members.append(LatentDiscriminator(shape, channels))
        self.members = nn.ModuleList(members)

    def forward(
        self, audio: torch.Tensor, latents: torch.Tensor, visual: torch.Tensor
    ) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [member(audio, latents, visual) for member in self.members]


# --------------------------------------------------------------------------------------------
# Checkpoints


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
