"""Configuration of a synthesis run: one JSON or YAML file, or the name of a shipped config.

Every section is a dataclass so that a typo in a config file is an error, not a silently ignored
key. `load_config("tiny")` resolves to `synthesis/configs/tiny.json`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import typing
from dataclasses import dataclass, field
from typing import Any

SHIPPED_CONFIGS = pathlib.Path(__file__).parent / "configs"

ENCODER_FAMILIES = ("vit", "videomae", "clip")
MUSICGEN_FAMILIES = ("musicgen", "melody")
GAN_ADVERSARIAL_LOSSES = ("hinge", "least_squares")


class ConfigError(ValueError):
    """A config file that cannot be used."""


@dataclass
class VideoConfig:
    frame_rate: float = 4.0  # frames per second sampled for the visual embeddings
    motion_rate: float = 25.0  # frames per second for motion features (onsets need more than 4)
    segment_seconds: float = 10.0
    segment_hop_seconds: float | None = None  # None: segments follow one another without overlap
    max_segments_per_source: int = 3
    frame_size: int = 224  # frames are decoded at this square size (the encoders' input size)


@dataclass
class AudioConfig:
    loudness_lufs: float = -23.0
    fade_ms: float = 20.0
    channels: int = 1


@dataclass
class ModelSpec:
    """Where a transformers model comes from: a local folder / hub id (read offline), or `tiny`."""

    family: str
    path: str | None = None  # local folder or a hub id already in the Hugging Face cache
    tiny: dict[str, Any] | None = None  # random-weight model built from these config overrides
    dtype: str = (
        "auto"  # auto: bfloat16 on a GPU that supports it, else float16 on GPU, float32 CPU
    )

    @property
    def is_tiny(self) -> bool:
        return self.tiny is not None


@dataclass
class GenerationConfig:
    seed: int = 0
    guidance_scale: float = 3.0
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 250
    batch_size: int = 4
    decoder: str = "fast"  # fast: our static-cache loop; transformers: model.generate
    compile: bool | None = None  # None: torch.compile (CUDA graphs) on a GPU only


@dataclass
class AdapterConfig:
    checkpoint: str | None = None
    allow_untrained: bool = False  # tiny smoke tests only: a randomly initialised adapter
    num_tokens: int = 8  # conditioning tokens the adapter emits
    hidden_size: int = 512


@dataclass
class TrainConfig:
    epochs: int = 10
    learning_rate: float = 1e-3
    batch_size: int = 4
    seed: int = 0


@dataclass
class GanConfig:
    """The `gan` condition: its generator's sizes, its discriminators, losses and training.

    The generator maps visual embeddings plus noise to EnCodec's continuous latents, decoded by
    MusicGen's frozen codec decoder (see synthesis/gan.py and docs/synthesis.md).
    """

    checkpoint: str | None = None  # gan-generator.safetensors written by `train-gan`
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


DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"  # Debian's fluid-soundfont-gm


@dataclass
class ScoreRenderConfig:
    """The `score_render` condition: the score's slice through FluidSynth and a GM SoundFont."""

    soundfont: str = DEFAULT_SOUNDFONT  # any General MIDI .sf2
    fluidsynth: str = "fluidsynth"  # the command (Debian's `fluidsynth` package)
    gain: float = 0.5  # FluidSynth's master gain; loudness is matched afterwards anyway
    reverb: bool = False  # dry by default: the references are close-miked recordings


@dataclass
class ScoreDiffusionConfig:
    """The `score_diffusion` condition: Magenta's MIDI-to-spectrogram diffusion (diffusers)."""

    path: str | None = "google/music-spectrogram-diffusion"  # local folder or cached hub id
    tiny: dict[str, Any] | None = None  # random-weight stand-in built from these overrides
    steps: int = 100  # denoising steps per 5.12 s chunk
    dtype: str = "auto"


@dataclass
class VitScoreConfig:
    """The `vit_score` condition: MusicGen-melody given the score's chroma and the adapter."""

    musicgen: ModelSpec = field(
        default_factory=lambda: ModelSpec("melody", path="facebook/musicgen-melody")
    )
    adapter: AdapterConfig = field(default_factory=AdapterConfig)  # train-adapter --condition


@dataclass
class SynthesisConfig:
    name: str
    fit_for_studies: bool
    encoder: ModelSpec
    musicgen: ModelSpec
    clip: ModelSpec  # zero-shot labeller for text_bridge
    conditions: list[str] = field(default_factory=lambda: ["reference", "vit_adapter"])
    video: VideoConfig = field(default_factory=VideoConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    score_render: ScoreRenderConfig = field(default_factory=ScoreRenderConfig)
    score_diffusion: ScoreDiffusionConfig = field(default_factory=ScoreDiffusionConfig)
    vit_score: VitScoreConfig = field(default_factory=VitScoreConfig)
    labels: dict[str, list[str]] = field(default_factory=dict)  # text_bridge vocabularies
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    # A field whose type is one of these sections is built (and checked) as one, at any depth.
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = _build(hints[key], value, f"{where}.{key}")
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from error


def config_from_dict(data: dict[str, Any]) -> SynthesisConfig:
    config = _build(SynthesisConfig, data, "config")
    if config.encoder.family not in ENCODER_FAMILIES:
        raise ConfigError(f"encoder.family must be one of {ENCODER_FAMILIES}")
    if config.musicgen.family not in MUSICGEN_FAMILIES:
        raise ConfigError(f"musicgen.family must be one of {MUSICGEN_FAMILIES}")
    if config.generation.decoder not in ("fast", "transformers", "audiocraft"):
        raise ConfigError("generation.decoder must be fast, transformers or audiocraft")
    _check_gan(config.gan)
    if config.vit_score.musicgen.family != "melody":
        raise ConfigError("vit_score.musicgen.family must be melody (its chroma is the score's)")
    if config.score_diffusion.steps < 1:
        raise ConfigError("score_diffusion.steps must be at least 1")
    unknown = sorted(set(config.conditions) - set(_registered_conditions()))
    if unknown:
        raise ConfigError(
            f"unknown conditions {unknown}; registered: {sorted(_registered_conditions())}"
        )
    return config


def _registered_conditions() -> list[str]:
    # Imported here: the conditions import models, which import this module.
    from synthesis.conditions import CONDITIONS

    return list(CONDITIONS)


def _check_gan(gan: GanConfig) -> None:
    if gan.adversarial_loss not in GAN_ADVERSARIAL_LOSSES:
        raise ConfigError(f"gan.adversarial_loss must be one of {GAN_ADVERSARIAL_LOSSES}")
    if not gan.mel_fft_sizes or any(int(size) < 16 for size in gan.mel_fft_sizes):
        raise ConfigError("gan.mel_fft_sizes must list FFT sizes of at least 16")
    if len(gan.adam_betas) != 2 or not all(0 <= beta < 1 for beta in gan.adam_betas):
        raise ConfigError("gan.adam_betas must be two numbers in [0, 1)")
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
        if int(getattr(gan, name)) < 1:
            raise ConfigError(f"gan.{name} must be at least 1")


def load_config(name_or_path: str | pathlib.Path) -> SynthesisConfig:
    """Load a config file, or a shipped config by name (`tiny`, `musicgen-small`)."""
    path = pathlib.Path(name_or_path)
    if not path.exists():
        shipped = SHIPPED_CONFIGS / f"{name_or_path}.json"
        if not shipped.exists():
            available = sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.json"))
            raise ConfigError(
                f"no config file {path} and no shipped config of that name {available}"
            )
        path = shipped
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    config = config_from_dict(data)
    if path.resolve().parent != SHIPPED_CONFIGS.resolve():
        resolve_relative_paths(config, path.resolve().parent)
    return config


def resolve_relative_paths(config: SynthesisConfig, folder: pathlib.Path) -> None:
    """Makes the relative paths of a config file relative to the file's folder, in place.

    A config kept beside its checkpoints (`checkpoint: checkpoints/adapter.safetensors`) then
    works from any current directory. A model `path` is resolved only when that folder exists
    there: otherwise it is taken as a Hugging Face hub id (`facebook/musicgen-small`). Shipped
    configs are not resolved: their paths are relative to the directory the command runs in.
    """
    for section in (config.adapter, config.gan, config.vit_score.adapter):
        if section.checkpoint and not pathlib.Path(section.checkpoint).is_absolute():
            section.checkpoint = str(folder / section.checkpoint)
    soundfont = config.score_render.soundfont
    if soundfont and not pathlib.Path(soundfont).is_absolute():
        config.score_render.soundfont = str(folder / soundfont)
    for spec in (
        config.encoder,
        config.musicgen,
        config.clip,
        config.vit_score.musicgen,
        config.score_diffusion,
    ):
        if spec.path and not pathlib.Path(spec.path).is_absolute():
            candidate = folder / spec.path
            if candidate.exists():
                spec.path = str(candidate)
