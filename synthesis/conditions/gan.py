"""`gan`: the GAN baseline, visual embeddings + noise -> EnCodec latents -> the frozen codec.

Makes its own audio rather than going through MusicGen's language model; the pipeline finishes
it with the same chain as every other clip. The noise seed is the clip's seed (as for MusicGen's
clips), so a clip does not depend on the order of the run. Its config section (GanConfig: the
generator's sizes, discriminators, losses and training) is declared here; the networks are in
synthesis/gan.py, their training in synthesis/training/gan.py.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Any

from synthesis.conditions.base import (
    ClipPlan,
    Condition,
    ConditionSkipped,
    RunSetup,
    SegmentInput,
    register,
)
from synthesis.gan import (
    GanShape,
    GanSynthesizer,
    check_generator_fits,
    codec_weights_sha256,
    freeze,
    load_generator,
    untrained_generator,
)
from synthesis.models import LoadedMusicgen, state_dict_sha256
from synthesis.sections import FILE_PATH, ConfigError, Section
from synthesis.video import file_sha256

GAN_ADVERSARIAL_LOSSES = ("hinge", "least_squares")


@dataclass
class GanConfig(Section):
    """The `gan` section: its generator's sizes, its discriminators, losses and training.

    The generator maps visual embeddings plus noise to EnCodec's continuous latents, decoded by
    MusicGen's frozen codec decoder (see synthesis/gan.py and docs/synthesis.md).
    """

    # gan-generator.safetensors written by `train-gan`
    checkpoint: str | None = field(default=None, metadata=FILE_PATH)
    allow_untrained: bool = False  # tiny smoke tests only: a randomly initialised generator
    noise_size: int = 32  # noise channels per latent frame
    hidden_size: int = 256  # generator width
    residual_layers: int = 8  # dilated residual blocks (dilations 1, 2, 4, 8, 1, 2, ...)
    discriminator_channels: int = 32
    mel_fft_sizes: list[int] = field(default_factory=lambda: [512, 1024, 2048])  # one D each
    mel_bands: int = 80
    latent_discriminator: bool = True  # also a discriminator on (latents, visual sequence)
    adversarial_loss: str = "hinge"  # hinge or least_squares
    adversarial_weight: float = 1.0
    feature_matching_weight: float = 2.0
    reconstruction_weight: float = 10.0  # L1 on the standardised latents
    steps: int = 20000
    batch_size: int = 16
    generator_learning_rate: float = 2e-4
    discriminator_learning_rate: float = 2e-4
    adam_betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    warmup_steps: int = 0  # steps with the reconstruction loss only, before the discriminators
    checkpoint_every: int = 1000
    seed: int = 0

    def check(self, where: str) -> None:
        if self.adversarial_loss not in GAN_ADVERSARIAL_LOSSES:
            raise ConfigError(f"{where}.adversarial_loss must be one of {GAN_ADVERSARIAL_LOSSES}")
        if not self.mel_fft_sizes or any(int(size) < 16 for size in self.mel_fft_sizes):
            raise ConfigError(f"{where}.mel_fft_sizes must list FFT sizes of at least 16")
        if len(self.adam_betas) != 2 or not all(0 <= beta < 1 for beta in self.adam_betas):
            raise ConfigError(f"{where}.adam_betas must be two numbers in [0, 1)")
        positive = (
            "noise_size",
            "hidden_size",
            "residual_layers",
            "discriminator_channels",
            "mel_bands",
            "steps",
            "batch_size",
            "checkpoint_every",
        )
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{where}.{name} must be at least 1")


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


def load_gan_for_run(setup: RunSetup) -> tuple[GanSynthesizer | None, str]:
    """(the generator with the frozen codec, why absent).

    A configured checkpoint that is missing or was made for another encoder or codec stops the
    run with a GanCheckpointError (a ConfigError) naming what is wrong.
    """
    config, encoder, musicgen = setup.config, setup.encoder, setup.musicgen
    expected = gan_shape(encoder.embedding_size, musicgen, config.gan)
    codec_sha = codec_weights_sha256(musicgen)
    freeze(musicgen.model)
    provenance: dict[str, Any] = {
        "model": musicgen.name,
        "model_family": musicgen.family,
        "weights_sha256": musicgen.weights_sha256,
        "codec": f"EnCodec of {musicgen.name} (frozen decoder, continuous latents)",
        "codec_weights_sha256": codec_sha,
        "encoder": encoder.name,
        "encoder_weights_sha256": encoder.weights_sha256,
        "guidance": None,
        "prompt": None,
        "adapter": None,
        "code_version": setup.code_version,
        "decoder": "frozen EnCodec decoder on generated continuous latents (synthesis.gan)",
    }
    if config.gan.checkpoint:
        path = pathlib.Path(config.gan.checkpoint)
        generator, sidecar = load_generator(path)
        check_generator_fits(generator.shape, expected, sidecar, codec_sha, str(path))
        checkpoint_sha = file_sha256(path)
        label = f"{path.name} sha256:{checkpoint_sha}"
        # the folder's name only: older sidecars hold the training machine's path
        trained_on = pathlib.PurePath(sidecar["videos"]).name if sidecar.get("videos") else None
        provenance["gan"] = {
            "checkpoint": path.name,
            "checkpoint_sha256": checkpoint_sha,
            "steps": sidecar.get("steps"),
            "seed": sidecar.get("seed"),
            "training_set": {
                "videos": trained_on,
                "segments": len(sidecar.get("training_segments", [])),
                "segments_sha256": sidecar.get("training_set_sha256"),
            },
        }
    elif config.gan.allow_untrained:
        generator = untrained_generator(expected, config.generation.seed)
        label = f"untrained random init (seed {config.generation.seed}), smoke test only"
        provenance["gan"] = {
            "checkpoint": None,
            "checkpoint_sha256": None,
            "steps": 0,
            "seed": config.generation.seed,
            "training_set": None,
            "untrained": label,
        }
    else:
        return None, "no GAN checkpoint configured (gan.checkpoint)"
    provenance["gan"]["generator_weights_sha256"] = state_dict_sha256(generator)
    generator = generator.to(musicgen.device)
    return GanSynthesizer(generator, musicgen, label, provenance, setup.clip_seed), ""


@register
class Gan(Condition):
    name = "gan"
    sections = {"gan": GanConfig}

    def __init__(self, setup: RunSetup) -> None:
        super().__init__(setup)
        self.gan, self.missing = load_gan_for_run(setup)

    def checkpoints(self) -> dict[str, str | None]:
        return {"gan": self.gan.label if self.gan else None}

    def plan(self, segment: SegmentInput, segments: list[SegmentInput]) -> ClipPlan:
        if self.gan is None:
            raise ConditionSkipped(self.missing or "no GAN generator loaded (gan.checkpoint)")
        seed = self.gan.seed_for(f"{segment.id}.{self.name}")
        audio = self.gan.synthesize(segment.embeddings, segment.duration, seed)
        return ClipPlan(
            audio=audio,
            audio_rate=self.gan.sampling_rate,
            provenance={**self.gan.provenance, "seed": seed},
        )
