"""Configuration of a synthesis run: one JSON or YAML file, or the name of a shipped config.

Every section is a dataclass so that a typo in a config file is an error, not a silently ignored
key. `load_config("tiny")` resolves to `synthesis/configs/tiny.json`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from dataclasses import dataclass, field
from typing import Any

SHIPPED_CONFIGS = pathlib.Path(__file__).parent / "configs"

ENCODER_FAMILIES = ("vit", "videomae", "clip")
MUSICGEN_FAMILIES = ("musicgen", "melody")


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
    nested = {
        "video": VideoConfig,
        "audio": AudioConfig,
        "generation": GenerationConfig,
        "adapter": AdapterConfig,
        "train": TrainConfig,
        "encoder": ModelSpec,
        "musicgen": ModelSpec,
        "clip": ModelSpec,
    }
    kwargs = {}
    for key, value in data.items():
        if cls is SynthesisConfig and key in nested:
            kwargs[key] = _build(nested[key], value, f"{where}.{key}")
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
    return config


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
    return config_from_dict(data)
