"""GAN training: losses, the training loop (`train_gan`, resumable) and `train-gan`'s entry point.

The networks are in synthesis.gan. Losses (generator): `reconstruction_weight` x L1 between
generated and reference standardised latents + `adversarial_weight` x adversarial loss (hinge:
-D(fake); least squares: (D(fake)-1)^2), averaged over discriminators + `feature_matching_weight`
x L1 between the discriminators' hidden features of generated and reference audio, averaged over
layers and discriminators. Discriminators: hinge (relu(1 - D(real)) + relu(1 + D(fake))) or
least squares ((D(real) - 1)^2 + D(fake)^2), averaged over discriminators.

The codec and the visual encoder are frozen: their parameters are not given to any optimiser,
and the codec's weights' hash is checked after training. Gradients do pass *through* the frozen
codec decoder to the generator (the mel discriminators judge decoded audio).
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
from torch import nn
from torch.nn import functional

from synthesis.conditions.gan import GanConfig, gan_shape
from synthesis.config import SynthesisConfig
from synthesis.gan import (
    GENERATOR_FILE,
    GanCheckpointError,
    GanDiscriminators,
    LatentGenerator,
    codec_latents,
    codec_weights_sha256,
    decode_latents,
    draw_noise,
    freeze,
    save_generator,
)
from synthesis.models import LoadedMusicgen
from synthesis.sections import ConfigError
from synthesis.training.common import Log, TrainingPairs, train_on_videos

STATE_FILE = "gan-state.pt"  # the whole training state, for resuming
LOSS_LOG = "loss_log.jsonl"
STATE_FORMAT = "sightsound-gan-state/1"
LATENT_STD_FLOOR = 1e-3  # a channel that never moves must not blow up the standardisation


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
    discriminators = GanDiscriminators(
        shape,
        gan.mel_fft_sizes,
        gan.mel_bands,
        gan.discriminator_channels,
        gan.latent_discriminator,
    ).to(device)
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


def train_gan_on_videos(
    videos: pathlib.Path,
    out: pathlib.Path,
    config: SynthesisConfig,
    device: str = "cpu",
    steps: int | None = None,
    log: Log = print,
) -> list[dict[str, Any]]:
    """Trains the gan condition's generator on (video, reference audio) segments.

    The same pairs as `train-adapter` (see `load_training_pairs`). Resumes from
    `out/gan-state.pt` when present. Returns the loss log (one record per step).
    """

    def examples_of(pairs: TrainingPairs) -> list[GanExample]:
        freeze(pairs.musicgen.model)
        freeze(pairs.encoder.model)  # embeddings are precomputed; no gradient could reach it
        segments = pairs.segments
        if not segments:
            raise ConfigError(f"no usable (video, reference audio) segments in {videos}")
        video_hashes = {
            source.entry["id"]: source.entry["metadata"]["original_video_sha256"]
            for source in pairs.ingested
        }
        content_keys = {
            segment.id: f"{video_hashes[segment.source_id]}@{segment.start:g}+{segment.duration:g}"
            for segment in segments
        }
        return prepare_examples(pairs.musicgen, segments, content_keys)

    def train(pairs: TrainingPairs, examples: list[GanExample]) -> list[dict[str, Any]]:
        metadata = {
            **pairs.provenance(config),
            "videos": videos.resolve().name,  # a name, not this machine's path; segments identify
        }
        return train_gan(
            pairs.musicgen,
            examples,
            out,
            config.gan,
            pairs.encoder.embedding_size,
            metadata,
            steps=steps,
        )

    return train_on_videos(videos, out, config, device, log, "the GAN", examples_of, train)
