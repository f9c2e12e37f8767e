"""`mismatched`: the vit_adapter path fed another source's video, the control for semantic fit.

The partner is a segment of the next source in id order (cyclic), at the same index where it
has one; `provenance.mismatched_with` names it. A kept clip is remade when its partner's source
changed or when sources were added or removed (another partner now).
"""

from __future__ import annotations

from typing import Any

from synthesis.conditions.base import ClipPlan, ConditionSkipped, SegmentInput, register
from synthesis.conditions.vit_adapter import AdapterCondition


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
class Mismatched(AdapterCondition):
    name = "mismatched"

    def still_valid(
        self,
        clip: dict[str, Any],
        segment: SegmentInput,
        segments: list[SegmentInput],
        changed_segments: set[str],
    ) -> bool:
        partner = (clip.get("provenance") or {}).get("mismatched_with")
        if partner in changed_segments:  # made from a video that has other content now
            return False
        try:
            return partner == mismatch_partner(segment, segments).id
        except ConditionSkipped:
            return False

    def plan(self, segment: SegmentInput, segments: list[SegmentInput]) -> ClipPlan:
        partner = mismatch_partner(segment, segments)
        return ClipPlan(
            conditioning=self.conditioning(partner.embeddings),
            provenance={**self.provenance(), "mismatched_with": partner.id},
        )
