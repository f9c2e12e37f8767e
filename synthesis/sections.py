"""The config sections every run shares (models, video, audio, generation, adapter training).

Each condition declares its own section in its module under synthesis/conditions/;
synthesis.config assembles these and theirs into one run config. This module imports nothing
from the package, so that the models and the conditions can use its sections and `ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ENCODER_FAMILIES = ("vit", "videomae", "clip")
MUSICGEN_FAMILIES = ("musicgen", "melody")

# Field metadata: a field that names a file or a model on this machine. A config file's relative
# paths are resolved against its folder, and the manifest records them by name only
# (synthesis.config walks every section for these).
FILE_PATH = {"path": "file"}  # always a file: a relative path is the config file's
MODEL_PATH = {"path": "model"}  # a local folder, or a hub id when no such folder exists


class ConfigError(ValueError):
    """A config file that cannot be used."""


class Section:
    """A config section. `check` says what is wrong with its values beyond their types."""

    def check(self, where: str) -> None:
        """Raises ConfigError naming the key (`where` is the section's key, e.g. `gan`)."""


@dataclass
class VideoConfig(Section):
    frame_rate: float = 4.0  # frames per second sampled for the visual embeddings
    motion_rate: float = 25.0  # frames per second for motion features (onsets need more than 4)
    segment_seconds: float = 10.0
    segment_hop_seconds: float | None = None  # None: segments follow one another without overlap
    max_segments_per_source: int = 3
    frame_size: int = 224  # frames are decoded at this square size (the encoders' input size)


@dataclass
class AudioConfig(Section):
    loudness_lufs: float = -23.0
    fade_ms: float = 20.0
    channels: int = 1


@dataclass
class ModelSpec(Section):
    """Where a transformers model comes from: a local folder / hub id (read offline), or `tiny`."""

    family: str
    # local folder or a hub id already in the Hugging Face cache
    path: str | None = field(default=None, metadata=MODEL_PATH)
    tiny: dict[str, Any] | None = None  # random-weight model built from these config overrides
    dtype: str = (
        "auto"  # auto: bfloat16 on a GPU that supports it, else float16 on GPU, float32 CPU
    )

    @property
    def is_tiny(self) -> bool:
        return self.tiny is not None


@dataclass
class GenerationConfig(Section):
    seed: int = 0
    guidance_scale: float = 3.0
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 250
    batch_size: int = 4
    decoder: str = "fast"  # fast: our static-cache loop; transformers: model.generate
    compile: bool | None = None  # None: torch.compile (CUDA graphs) on a GPU only

    def check(self, where: str) -> None:
        if self.decoder not in ("fast", "transformers", "audiocraft"):
            raise ConfigError(f"{where}.decoder must be fast, transformers or audiocraft")


@dataclass
class TrainConfig(Section):
    """`train-adapter`'s settings (for the vit_adapter's and the vit_score's adapters)."""

    epochs: int = 10
    learning_rate: float = 1e-3
    batch_size: int = 4
    seed: int = 0
