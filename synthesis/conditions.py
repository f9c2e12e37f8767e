"""Conditions: named strategies that say what one segment's clip is made from.

A condition returns a `ClipPlan`: either finished audio (`reference`, and `gan`, which makes its
own through MusicGen's frozen codec) or MusicGen conditioning to generate from. To add one, write
a class with a `name` and a `plan` method and decorate it with `@register`; list its name in a
config's `conditions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from synthesis.models import Conditioning, LoadedMusicgen, null_conditioning, text_conditioning

if TYPE_CHECKING:
    from synthesis.gan import GanSynthesizer


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


@dataclass
class ClipPlan:
    audio: np.ndarray | None = None  # finished audio (reference)
    audio_rate: int | None = None
    conditioning: Conditioning | None = None  # for MusicGen
    provenance: dict[str, Any] = field(default_factory=dict)


class ConditionSkipped(RuntimeError):
    """This condition cannot make a clip for this segment (the reason is reported)."""


@dataclass
class RunContext:
    """Shared models and all segments of the run (the mismatched control needs the others)."""

    musicgen: LoadedMusicgen | None
    encoder_name: str
    encoder_weights_sha256: str
    adapter: torch.nn.Module | None
    adapter_label: str | None
    labeller: Any  # encoders.ClipLabeller or None
    vocabularies: dict[str, list[str]]
    segments: list[SegmentInput]
    gan: GanSynthesizer | None = None  # the gan condition's generator + frozen codec
    gan_missing: str = ""  # why there is no generator, when there is none


class Condition(Protocol):
    name: str
    generates: bool

    def plan(self, segment: SegmentInput, context: RunContext) -> ClipPlan: ...


CONDITIONS: dict[str, Condition] = {}


def register(cls: type) -> type:
    instance = cls()
    CONDITIONS[instance.name] = instance
    return cls


def get_condition(name: str) -> Condition:
    if name not in CONDITIONS:
        raise KeyError(f"unknown condition {name!r}; registered: {sorted(CONDITIONS)}")
    return CONDITIONS[name]


def _adapter_conditioning(context: RunContext, embeddings: np.ndarray) -> Conditioning:
    if context.adapter is None or context.musicgen is None:
        raise ConditionSkipped("no adapter loaded (set adapter.checkpoint in the config)")
    device = context.musicgen.device
    with torch.no_grad():
        dtype = next(context.adapter.parameters()).dtype
        states = context.adapter(torch.from_numpy(embeddings)[None].to(device, dtype))
    states = states.to(context.musicgen.dtype)
    mask = torch.ones(states.shape[:2], dtype=torch.long, device=device)
    return Conditioning(states, mask, *null_conditioning(context.musicgen.family, states))


@register
class Reference:
    """The segment's own audio: the ground truth that generated clips are compared with."""

    name = "reference"
    generates = False

    def plan(self, segment: SegmentInput, context: RunContext) -> ClipPlan:
        return ClipPlan(audio=segment.reference_audio, audio_rate=segment.reference_rate)


@register
class VitAdapter:
    """MusicGen conditioned on the segment's visual embeddings through the trained adapter."""

    name = "vit_adapter"
    generates = True

    def plan(self, segment: SegmentInput, context: RunContext) -> ClipPlan:
        return ClipPlan(
            conditioning=_adapter_conditioning(context, segment.embeddings),
            provenance={
                "encoder": context.encoder_name,
                "encoder_weights_sha256": context.encoder_weights_sha256,
                "adapter": context.adapter_label,
                "prompt": None,
            },
        )


def mismatch_partner(segment: SegmentInput, segments: list[SegmentInput]) -> SegmentInput:
    """A segment of the next source (in id order, cyclic), at the same index where it has one."""
    sources = sorted({other.source_id for other in segments})
    if len(sources) < 2:
        raise ConditionSkipped("the mismatched control needs at least two sources")
    partner_source = sources[(sources.index(segment.source_id) + 1) % len(sources)]
    candidates = sorted(
        (other for other in segments if other.source_id == partner_source), key=lambda s: s.index
    )
    return candidates[min(segment.index, len(candidates) - 1)]


@register
class Mismatched:
    """The vit_adapter path fed another source's video: the control for semantic agreement."""

    name = "mismatched"
    generates = True

    def plan(self, segment: SegmentInput, context: RunContext) -> ClipPlan:
        partner = mismatch_partner(segment, context.segments)
        return ClipPlan(
            conditioning=_adapter_conditioning(context, partner.embeddings),
            provenance={
                "encoder": context.encoder_name,
                "encoder_weights_sha256": context.encoder_weights_sha256,
                "adapter": context.adapter_label,
                "prompt": None,
                "mismatched_with": partner.id,
            },
        )


def describe(labels: dict[str, str], tempo_bpm: float | None) -> str:
    """Zero-shot labels -> a MusicGen prompt, e.g. 'calm solo violin music, slow tempo'."""
    parts = [labels.get("mood", ""), labels.get("instrument", ""), "music"]
    prompt = " ".join(part for part in parts if part)
    if labels.get("tempo"):
        prompt += f", {labels['tempo']} tempo"
    if tempo_bpm is not None:
        prompt += f", around {round(tempo_bpm)} BPM"
    return prompt


@register
class TextBridge:
    """CLIP's zero-shot labels of the frames (mood, instrument, tempo) as a text prompt."""

    name = "text_bridge"
    generates = True

    def plan(self, segment: SegmentInput, context: RunContext) -> ClipPlan:
        if context.labeller is None or context.musicgen is None:
            raise ConditionSkipped("no CLIP labeller loaded")
        labels = context.labeller.label(segment.frames, context.vocabularies)
        prompt = describe(labels, segment.features.get("tempo_bpm"))
        return ClipPlan(
            conditioning=text_conditioning(context.musicgen, [prompt]),
            provenance={
                "encoder": context.labeller.name,
                "encoder_weights_sha256": context.labeller.weights_sha256,
                "prompt": prompt,
                "adapter": None,
                "labels": labels,
            },
        )


@register
class Gan:
    """The GAN baseline: visual embeddings + noise -> EnCodec latents -> the frozen codec decoder.

    Makes its audio here rather than through MusicGen's language model; the pipeline finishes it
    with the same chain as every other clip. The noise seed is the clip's seed (as for MusicGen's
    clips), so a clip does not depend on the order of the run.
    """

    name = "gan"
    generates = True

    def plan(self, segment: SegmentInput, context: RunContext) -> ClipPlan:
        if context.gan is None:
            raise ConditionSkipped(
                context.gan_missing or "no GAN generator loaded (gan.checkpoint)"
            )
        seed = context.gan.seed_for(f"{segment.id}.{self.name}")
        audio = context.gan.synthesize(segment.embeddings, segment.duration, seed)
        return ClipPlan(
            audio=audio,
            audio_rate=context.gan.sampling_rate,
            provenance={**context.gan.provenance, "seed": seed},
        )
