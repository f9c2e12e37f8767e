"""`text_bridge`: CLIP's zero-shot labels of the frames (mood, instrument, tempo word) plus the
motion tempo as a prompt, e.g. `calm violin music, slow tempo, around 72 BPM`, through T5."""

from __future__ import annotations

from synthesis.conditions.base import ClipPlan, Condition, RunSetup, SegmentInput, register
from synthesis.encoders import load_clip_labeller
from synthesis.models import text_conditioning


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
class TextBridge(Condition):
    name = "text_bridge"

    def __init__(self, setup: RunSetup) -> None:
        super().__init__(setup)
        self.labeller = load_clip_labeller(setup.config.clip, setup.device)

    def plan(self, segment: SegmentInput, segments: list[SegmentInput]) -> ClipPlan:
        labels = self.labeller.label(segment.frames, self.setup.config.labels)
        prompt = describe(labels, segment.features.get("tempo_bpm"))
        return ClipPlan(
            conditioning=text_conditioning(self.setup.musicgen, [prompt]),
            provenance={
                "encoder": self.labeller.name,
                "encoder_weights_sha256": self.labeller.weights_sha256,
                "prompt": prompt,
                "adapter": None,
                "labels": labels,
            },
        )
