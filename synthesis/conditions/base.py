"""What every condition shares: the segment it plans for, its plan, the run it loads in, and
the registry of conditions and of the config sections they declare.

A condition is a class registered under its name (`@register`). The pipeline makes one instance
per run, after the run's shared models (the visual encoder, MusicGen) are loaded and before any
video is read, so that a condition loads its own models and checks its own checkpoints there and
a wrong path stops the run at once. Then, for every segment, `plan` returns either finished audio
or MusicGen conditioning to generate from. A condition with settings of its own declares their
config section (`sections`, a dataclass in its module); synthesis.config assembles the run's
config from the registered sections, so this module imports nothing from synthesis.config.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import torch

from synthesis.models import Conditioning, LoadedMusicgen

if TYPE_CHECKING:
    from synthesis.encoders import VisualEncoder
    from synthesis.score import ScoreSlice

T = TypeVar("T")


@dataclass
class SegmentInput:
    """Everything a condition may need about one segment."""

    id: str
    source_id: str
    index: int  # position of the segment within its source
    start: float
    duration: float
    embeddings: np.ndarray  # (T', E) visual embedding sequence
    frames: np.ndarray  # (T, S, S, 3) uint8 frames sampled for the encoder
    features: dict[str, Any]
    reference_audio: np.ndarray  # (channels, n) float32
    reference_rate: int
    score: ScoreSlice | None = None  # the score's notes in this window, when the run needs them


@dataclass
class ClipPlan:
    audio: np.ndarray | None = None  # finished audio (reference, gan, score_render, ...)
    audio_rate: int | None = None
    conditioning: Conditioning | None = None  # for MusicGen
    provenance: dict[str, Any] = field(default_factory=dict)
    musicgen: LoadedMusicgen | None = None  # which MusicGen generates it (None: the run's)


class ConditionSkipped(RuntimeError):
    """This condition cannot make a clip for this segment (the reason is reported)."""


def clip_seed(base_seed: int, clip_id: str) -> int:
    """Each clip's own seed, so its audio does not depend on batching or on resuming."""
    digest = hashlib.sha256(f"{base_seed}:{clip_id}".encode()).hexdigest()
    return int(digest[:8], 16)


@dataclass
class RunSetup:
    """What a condition may use when it loads: the config and the run's shared models."""

    config: Any  # synthesis.config.SynthesisConfig, assembled from the registered sections
    device: torch.device
    musicgen: LoadedMusicgen  # the run's MusicGen: its codec's rate is the set's sample rate
    encoder: VisualEncoder
    code_version: str
    shared: dict[str, Any] = field(default_factory=dict)

    def share(self, key: str, make: Callable[[], T]) -> T:
        """A model that two conditions use (vit_adapter and mismatched: one adapter), made once."""
        if key not in self.shared:
            self.shared[key] = make()
        return self.shared[key]

    def clip_seed(self, clip_id: str) -> int:
        return clip_seed(self.config.generation.seed, clip_id)


class Condition:
    """One way of making a segment's clip. Subclass, set `name`, and decorate with `@register`."""

    name: ClassVar[str]
    generates: ClassVar[bool] = True  # False only for the reference: its clips carry no provenance
    needs_score: ClassVar[bool] = False  # True: sources need a MIDI score, segments its notes
    # The config sections this condition reads, by top-level key (`gan`: GanConfig); two
    # conditions may share one (vit_adapter and mismatched: `adapter`).
    sections: ClassVar[dict[str, type]] = {}

    def __init__(self, setup: RunSetup) -> None:
        self.setup = setup

    def checkpoints(self) -> dict[str, str | None]:
        """Labels (file name + sha256) of what this condition loaded beyond the config and the
        run's shared models; a change of any remakes every clip of the set."""
        return {}

    def segment_problem(self, segment: SegmentInput) -> str | None:
        """Why this segment cannot be in the set at all when this condition is (None: it can)."""
        if not self.needs_score:
            return None
        if segment.score is None:
            return f"{segment.id} has no score"
        if segment.score.note_count == 0:
            end = segment.score.start + segment.score.duration
            return (
                f"no notes in the score {segment.score.score_name} between "
                f"{segment.score.start:.2f} s and {end:.2f} s"
            )
        return None

    def still_valid(
        self,
        clip: dict[str, Any],
        segment: SegmentInput,
        segments: list[SegmentInput],
        changed_segments: set[str],
    ) -> bool:
        """Whether a finished clip from an earlier run may be kept, beyond the checks for all:
        the same config and models, its own segment's source unchanged, its file intact."""
        return True

    def plan(self, segment: SegmentInput, segments: list[SegmentInput]) -> ClipPlan:
        raise NotImplementedError


CONDITIONS: dict[str, type[Condition]] = {}
SECTIONS: dict[str, type] = {}  # every registered condition's config sections, by key


def register(cls: type[Condition]) -> type[Condition]:
    """Registers a condition under its name, and the config sections it declares."""
    for key, section in cls.sections.items():
        if SECTIONS.setdefault(key, section) is not section:
            raise TypeError(
                f"{cls.__name__} declares the config section {key!r} as {section.__name__}, "
                f"already declared as {SECTIONS[key].__name__}"
            )
    CONDITIONS[cls.name] = cls
    return cls


def get_condition(name: str) -> type[Condition]:
    if name not in CONDITIONS:
        raise KeyError(f"unknown condition {name!r}; registered: {sorted(CONDITIONS)}")
    return CONDITIONS[name]


def needs_score(names: list[str]) -> bool:
    return any(get_condition(name).needs_score for name in names)


def load_conditions(names: list[str], setup: RunSetup) -> dict[str, Condition]:
    """One instance of each named condition, in the config's order (each loads its models)."""
    return {name: get_condition(name)(setup) for name in names}
