"""`reference`: the segment's own audio, the ground truth that generated clips are compared with."""

from __future__ import annotations

from synthesis.conditions.base import ClipPlan, Condition, SegmentInput, register


@register
class Reference(Condition):
    name = "reference"
    generates = False

    def plan(self, segment: SegmentInput, segments: list[SegmentInput]) -> ClipPlan:
        return ClipPlan(audio=segment.reference_audio, audio_rate=segment.reference_rate)
