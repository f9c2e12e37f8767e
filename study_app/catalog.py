"""A plain-data view of a stimulus set, all the scheduler needs to know about it.

The scheduler must stay a pure function, so it sees neither the database nor the files: the app
builds a `Catalog` from the imported set and hands it over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

REFERENCE = "reference"


@dataclass(frozen=True)
class CatalogSegment:
    id: str
    source: str
    duration: float
    clips: dict[str, str] = field(default_factory=dict)  # condition -> clip id


@dataclass(frozen=True)
class Catalog:
    segments: tuple[CatalogSegment, ...]

    @classmethod
    def from_clips(cls, rows: Iterable[tuple[str, str, str, str, float]]) -> Catalog:
        """Build from (segment id, source id, condition, clip id, duration) rows."""
        by_segment: dict[str, CatalogSegment] = {}
        for segment_id, source_id, condition, clip_id, duration in rows:
            seg = by_segment.setdefault(
                segment_id, CatalogSegment(segment_id, source_id, duration, {})
            )
            seg.clips[condition] = clip_id
        return cls(tuple(sorted(by_segment.values(), key=lambda s: s.id)))

    def conditions(self) -> set[str]:
        return {c for seg in self.segments for c in seg.clips}

    def segments_with(self, conditions: Iterable[str]) -> list[CatalogSegment]:
        """Segments that have a clip for every one of `conditions`, in a stable order."""
        wanted = set(conditions)
        return [s for s in self.segments if wanted <= s.clips.keys()]
