"""What the training commands share: (video, reference audio) pairs, embedded, and their run.

`train_on_videos` is `train-adapter`'s and `train-gan`'s common course: load MusicGen and the
visual encoder, cut and embed the videos' segments as `generate` does, turn them into the
trainer's examples, record the config beside the checkpoints, train.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from synthesis.conditions import SegmentInput
from synthesis.config import SynthesisConfig
from synthesis.encoders import EmbeddingCache, VisualEncoder, load_visual_encoder
from synthesis.manifest import code_version
from synthesis.models import LoadedMusicgen, load_musicgen
from synthesis.pipeline.ingest import IngestedSource, ingest_all
from synthesis.pipeline.summary import Log, RunSummary
from synthesis.sections import ModelSpec
from synthesis.video import discover_sources

Example = TypeVar("Example")
Result = TypeVar("Result")


@dataclass
class TrainingPairs:
    """MusicGen, the visual encoder and the ingested (video, reference audio) segments."""

    musicgen: LoadedMusicgen
    encoder: VisualEncoder
    ingested: list[IngestedSource]

    @property
    def segments(self) -> list[SegmentInput]:
        return [segment for source in self.ingested for segment in source.segments]

    def provenance(self, config: SynthesisConfig) -> dict[str, Any]:
        """What a checkpoint's sidecar says it was trained with (beside its trainer's own)."""
        return {
            "musicgen": self.musicgen.name,
            "musicgen_weights_sha256": self.musicgen.weights_sha256,
            "encoder": self.encoder.name,
            "encoder_weights_sha256": self.encoder.weights_sha256,
            "config": config.name,
            "code_version": code_version(),
        }


def load_training_pairs(
    videos: pathlib.Path,
    out: pathlib.Path,
    config: SynthesisConfig,
    device: str = "cpu",
    log: Log = print,
    with_score: bool = False,
    musicgen_spec: ModelSpec | None = None,
) -> TrainingPairs:
    """MusicGen, the visual encoder and the (video, reference audio) segments of `videos`.

    Segments are cut as `generate` cuts them; embeddings are cached in `out/.cache/embeddings`.
    Nothing is written into a stimulus set. Shared by `train-adapter` and `train-gan`.
    `with_score`: slice each source's score to its segments (sources without one are skipped).
    `musicgen_spec`: another MusicGen than the config's (vit_score's melody model).
    """
    torch_device = torch.device(device)
    musicgen = load_musicgen(musicgen_spec or config.musicgen, torch_device)
    encoder = load_visual_encoder(config.encoder, torch_device)
    summary = RunSummary(out)
    ingested = ingest_all(
        discover_sources(videos),
        config,
        encoder,
        EmbeddingCache(out / ".cache" / "embeddings"),
        musicgen.sampling_rate,
        None,
        summary,
        log,
        with_score=with_score,
    )
    return TrainingPairs(musicgen, encoder, ingested)


def train_on_videos(
    videos: pathlib.Path,
    out: pathlib.Path,
    config: SynthesisConfig,
    device: str,
    log: Log,
    what: str,
    examples_of: Callable[[TrainingPairs], list[Example]],
    train: Callable[[TrainingPairs, list[Example]], Result],
    with_score: bool = False,
    musicgen_spec: ModelSpec | None = None,
) -> Result:
    """Pairs of `videos` -> `examples_of` -> config written to `out` -> `train`'s result.

    `what` names the model in the log line ("the GAN"); `train` writes the checkpoints.
    """
    pairs = load_training_pairs(videos, out, config, device, log, with_score, musicgen_spec)
    examples = examples_of(pairs)
    log(f"training {what} on {len(examples)} segments from {len(pairs.ingested)} videos")
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")
    return train(pairs, examples)
