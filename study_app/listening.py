"""The server's own evidence that a participant listened, from its log of media fetches.

A browser can report any play count and response time it likes; the byte ranges the server sent
and its own clock it cannot change. Per answered trial this module computes, as pure functions
(no Flask, no database: the callers in quality.py load the rows):

* `server_rt_ms`: the answer's arrival minus the trial's first showing, both server clock;
* per media slot, the fraction of the file's bytes covered by the union of the ranges sent
  before the answer arrived (a browser may fetch a clip in several Range requests, some
  overlapping: only the union counts, never the sum). "Sent" means handed to the connection:
  the media route counts the bytes the WSGI server actually wrote (participant.py), so a client
  that asks and reads nothing is credited with what the kernel's buffers (or a buffering proxy)
  took, not with the whole file;
* `flag_unheard`: the answer arrived before every slot the participant must hear to answer
  (`TrialType.required_slots`: not an optional calibration sound, not a muted video) had been
  sent whole;
* `flag_too_quick`: `server_rt_ms` is shorter than the trial type's minimum listening time
  (`TrialType.min_listen_seconds`), the time the audio takes to be heard as the block requires.

What it cannot see: whether fetched audio was played, or played aloud. A fetch is necessary
for listening, not sufficient; together with the time it bounds what a participant can have
heard.

The stored form is bounded (`merge_range`, `throttle_wait`): one row per trial slot holding the
union of the ranges sent, never one row per request, and a participant who floods a slot with
requests is refused (429) for the rest of a one-minute window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

# At most this many disjoint ranges are kept per trial slot. A browser sends a few (a probe, the
# body, a seek's tail); more are a client scattering tiny requests. Past the cap the smallest
# range is dropped: the evidence may under-count then, never over-count (joining two ranges
# across a gap would credit bytes that were never sent).
MAX_RANGES = 32
# The flood throttle: media requests answered per trial slot per fixed one-minute window. A
# browser needs a handful per play (Range probes, chunks, seeks; every replay refetches, as the
# media are no-store); 300 a minute is five a second for a whole minute, far above any page's
# scrubbing, looping or replaying, and far below a script's 100 a second.
THROTTLE_WINDOW = timedelta(minutes=1)
MAX_REQUESTS_PER_WINDOW = 300


@dataclass(frozen=True)
class Fetch:
    """One media response as the server sent it: bytes [first_byte, end_byte) of total_bytes."""

    slot: str
    first_byte: int
    end_byte: int  # exclusive
    total_bytes: int
    at: datetime  # timezone-aware UTC


@dataclass(frozen=True)
class ListeningEvidence:
    server_rt_ms: int | None  # None: the trial has no recorded showing
    coverage: Mapping[str, float]  # slot -> fraction of its bytes sent before the answer
    flag_unheard: bool
    flag_too_quick: bool

    @property
    def media_fetched(self) -> str:
        """`slot:fraction` per fetched slot, `;`-separated, slots in name order, two decimals
        rounded down (so `1.00` means whole: 99.9 % shows as `0.99`); empty when none."""
        return ";".join(
            f"{slot}:{_floor2(fraction):.2f}" for slot, fraction in sorted(self.coverage.items())
        )


def _floor2(fraction: float) -> float:
    return int(fraction * 100 + 1e-9) / 100


def covered_bytes(ranges: Iterable[tuple[int, int]], total: int) -> int:
    """Bytes of [0, total) covered by the union of half-open ranges [first, end)."""
    covered = 0
    reached = 0  # every byte below this is counted already
    for first, end in sorted((max(0, f), min(total, e)) for f, e in ranges):
        if end <= reached:
            continue
        covered += end - max(first, reached)
        reached = end
    return covered


def merge_range(
    ranges: Sequence[Sequence[int]], first: int, end: int, *, cap: int = MAX_RANGES
) -> list[list[int]]:
    """`ranges` (sorted, disjoint, non-touching half-open [first, end) pairs) with [first, end)
    added: overlapping or touching ranges join, so the list is the union of every range added.
    Longer than `cap`, the smallest ranges are dropped (under-counting, never over-counting)."""
    merged: list[list[int]] = []
    for lo, hi in sorted([*(tuple(r) for r in ranges), (first, end)]):
        if hi <= lo:
            continue  # nothing sent
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    if len(merged) > cap:
        kept = sorted(merged, key=lambda r: r[1] - r[0], reverse=True)[:cap]
        merged = sorted(kept)
    return merged


def throttle_wait(
    window_start: datetime | None,
    window_requests: int,
    now: datetime,
    *,
    limit: int = MAX_REQUESTS_PER_WINDOW,
) -> int:
    """Seconds a request for a slot must wait (0: serve it), given the slot's current window
    (its start, None before the first request, and the requests answered in it)."""
    if window_start is None or now - window_start >= THROTTLE_WINDOW:
        return 0
    if window_requests < limit:
        return 0
    left = (window_start + THROTTLE_WINDOW - now).total_seconds()
    return max(1, int(left) + (left > int(left)))  # whole seconds, rounded up


def next_window(
    window_start: datetime | None, window_requests: int, now: datetime
) -> tuple[datetime, int]:
    """The slot's window after one more answered request: the same window counted up, or a new
    one starting now when the old one has run out."""
    if window_start is None or now - window_start >= THROTTLE_WINDOW:
        return now, 1
    return window_start, window_requests + 1


def coverage(fetches: Iterable[Fetch], before: datetime | None = None) -> dict[str, float]:
    """Per slot, the fraction of its bytes covered by the ranges sent (at or before `before`,
    when given). A slot never fetched is absent; an empty file fetched counts as whole."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    totals: dict[str, int] = {}
    for fetch in fetches:
        if before is not None and fetch.at > before:
            continue
        ranges.setdefault(fetch.slot, []).append((fetch.first_byte, fetch.end_byte))
        totals[fetch.slot] = max(totals.get(fetch.slot, 0), fetch.total_bytes)
    return {
        slot: (covered_bytes(spans, totals[slot]) / totals[slot] if totals[slot] else 1.0)
        for slot, spans in ranges.items()
    }


def server_rt_ms(presented_at: datetime | None, answered_at: datetime) -> int | None:
    if presented_at is None:
        return None
    return int((answered_at - presented_at).total_seconds() * 1000)


def assess_listening(
    *,
    audio_slots: Sequence[str],
    fetches: Iterable[Fetch],
    presented_at: datetime | None,
    answered_at: datetime,
    min_listen_seconds: float,
) -> ListeningEvidence:
    """The evidence for one answered trial. `audio_slots` are the slots the participant must
    hear to answer (`TrialType.required_slots`: all must be sent whole before the answer; other
    slots are reported in `coverage` but never flag); `min_listen_seconds` is the trial type's
    minimum listening time for this trial."""
    fetched = coverage(fetches, before=answered_at)
    rt = server_rt_ms(presented_at, answered_at)
    return ListeningEvidence(
        server_rt_ms=rt,
        coverage=fetched,
        flag_unheard=any(fetched.get(slot, 0.0) < 1.0 for slot in audio_slots),
        flag_too_quick=too_quick(rt, min_listen_seconds),
    )


def too_quick(rt_ms: int | None, min_listen_seconds: float) -> bool:
    """An answer sooner than the audio can be heard. (No showing recorded, as in answers stored
    before presented_at existed: no measure, no flag; the answer route always records one.)"""
    return rt_ms is not None and rt_ms < 1000 * min_listen_seconds
