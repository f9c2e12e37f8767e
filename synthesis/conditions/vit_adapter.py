"""`vit_adapter`: MusicGen conditioned on the segment's visual embeddings through the adapter.

The adapter (synthesis/adapter.py) pools the embedding sequence to `adapter.num_tokens` tokens
and maps them into the decoder's width: MusicGen's `encoder_hidden_states` (melody's prefix).
`mismatched` uses the same adapter, loaded once per run. Both read the `adapter` section
(AdapterConfig, declared here); `vit_score` has one of its own.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

import numpy as np
import torch

from synthesis.adapter import AdapterShape, VisualAdapter, load_adapter
from synthesis.conditions.base import (
    ClipPlan,
    Condition,
    ConditionSkipped,
    RunSetup,
    SegmentInput,
    register,
)
from synthesis.models import Conditioning, LoadedMusicgen, null_conditioning
from synthesis.sections import FILE_PATH, ConfigError, Section
from synthesis.video import file_sha256


@dataclass
class AdapterConfig(Section):
    """An adapter's settings: the `adapter` section (vit_adapter, mismatched), vit_score's own."""

    checkpoint: str | None = field(default=None, metadata=FILE_PATH)  # adapter.safetensors
    allow_untrained: bool = False  # tiny smoke tests only: a randomly initialised adapter
    num_tokens: int = 8  # conditioning tokens the adapter emits
    hidden_size: int = 512


def load_adapter_for_run(
    settings: AdapterConfig,
    embedding_size: int,
    musicgen: LoadedMusicgen,
    seed: int,
    condition: str = "vit_adapter",
) -> tuple[VisualAdapter | None, str | None, str]:
    """(adapter, provenance label, why absent) for `condition`'s adapter settings.

    A configured checkpoint that is missing, was made for other widths or for another condition
    stops the run with a ConfigError naming what is wrong.
    """
    if settings.checkpoint:
        path = pathlib.Path(settings.checkpoint)
        if not path.is_file() or not path.with_suffix(".json").is_file():
            raise ConfigError(
                f"adapter checkpoint {path} (or its .json sidecar) does not exist: train one with "
                f"`python -m synthesis train-adapter --condition {condition}` and point the "
                "config's adapter.checkpoint at its adapter.safetensors"
            )
        adapter, sidecar = load_adapter(path)
        # Sidecars written before vit_score existed name no condition: they are vit_adapter's.
        trained_for = sidecar.get("condition", "vit_adapter")
        if trained_for != condition:
            raise ConfigError(
                f"adapter {path} was trained for the {trained_for} condition, not {condition}: "
                f"train one with `python -m synthesis train-adapter --condition {condition}`"
            )
        shape = adapter.shape
        if shape.embedding_size != embedding_size or shape.decoder_width != musicgen.decoder_width:
            raise ConfigError(
                f"adapter {path} expects embeddings of {shape.embedding_size} and a decoder of "
                f"{shape.decoder_width}; this config has {embedding_size} and "
                f"{musicgen.decoder_width}"
            )
        label = f"{path.name} sha256:{file_sha256(path)}"
        return adapter.to(musicgen.device, musicgen.dtype), label, ""
    if settings.allow_untrained:
        torch.manual_seed(seed)
        shape = AdapterShape(
            embedding_size, musicgen.decoder_width, settings.num_tokens, settings.hidden_size
        )
        adapter = VisualAdapter(shape).eval().to(musicgen.device, musicgen.dtype)
        return adapter, f"untrained random init (seed {seed}), smoke test only", ""
    return None, None, "no adapter checkpoint configured (adapter.checkpoint)"


def adapter_states(
    adapter: VisualAdapter, musicgen: LoadedMusicgen, embeddings: np.ndarray
) -> torch.Tensor:
    """(1, num_tokens, decoder width) adapter tokens of one segment's embedding sequence."""
    with torch.no_grad():
        dtype = next(adapter.parameters()).dtype
        states = adapter(torch.from_numpy(embeddings)[None].to(musicgen.device, dtype))
    return states.to(musicgen.dtype)


class AdapterCondition(Condition):
    """Shared by vit_adapter and mismatched: the run's adapter, loaded once for both."""

    sections = {"adapter": AdapterConfig}

    def __init__(self, setup: RunSetup) -> None:
        super().__init__(setup)
        self.adapter, self.label, self.missing = setup.share(
            "adapter",
            lambda: load_adapter_for_run(
                setup.config.adapter,
                setup.encoder.embedding_size,
                setup.musicgen,
                setup.config.generation.seed,
            ),
        )

    def checkpoints(self) -> dict[str, str | None]:
        return {"adapter": self.label}

    def conditioning(self, embeddings: np.ndarray) -> Conditioning:
        if self.adapter is None:
            raise ConditionSkipped(self.missing)
        musicgen = self.setup.musicgen
        states = adapter_states(self.adapter, musicgen, embeddings)
        mask = torch.ones(states.shape[:2], dtype=torch.long, device=musicgen.device)
        return Conditioning(states, mask, *null_conditioning(musicgen.family, states))

    def provenance(self) -> dict[str, object]:
        return {
            "encoder": self.setup.encoder.name,
            "encoder_weights_sha256": self.setup.encoder.weights_sha256,
            "adapter": self.label,
            "prompt": None,
        }


@register
class VitAdapter(AdapterCondition):
    name = "vit_adapter"

    def plan(self, segment: SegmentInput, segments: list[SegmentInput]) -> ClipPlan:
        return ClipPlan(
            conditioning=self.conditioning(segment.embeddings), provenance=self.provenance()
        )
