"""The server's listening evidence as pure functions (study_app/listening.py): byte coverage of
the ranges sent, server response time and the unheard / too-quick flags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from study_app.listening import (
    MAX_RANGES,
    MAX_REQUESTS_PER_WINDOW,
    Fetch,
    ListeningEvidence,
    assess_listening,
    coverage,
    covered_bytes,
    merge_range,
    next_window,
    server_rt_ms,
    throttle_wait,
    too_quick,
)

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fetch(slot: str, first: int, end: int, total: int = 1000, seconds: float = 1.0) -> Fetch:
    return Fetch(slot, first, end, total, at(seconds))


@pytest.mark.parametrize(
    ("ranges", "covered"),
    [
        ([], 0),
        ([(0, 1000)], 1000),
        ([(0, 400)], 400),
        # overlapping ranges count once: the union, not the sum
        ([(0, 600), (400, 1000)], 1000),
        ([(0, 600), (0, 600), (100, 200)], 600),
        # a hole stays a hole, whatever the order the requests came in
        ([(600, 1000), (0, 300)], 700),
        ([(0, 300), (300, 700), (700, 1000)], 1000),  # adjacent ranges join up
        # ranges outside the file are clipped to it
        ([(-5, 10), (990, 5000)], 20),
    ],
)
def test_covered_bytes_is_the_union(ranges, covered):
    assert covered_bytes(ranges, 1000) == covered


def test_coverage_per_slot_counts_only_what_was_sent_before_the_answer():
    fetches = [
        fetch("a", 0, 500, seconds=1),
        fetch("a", 500, 1000, seconds=2),
        fetch("b", 0, 1000, seconds=1),
        fetch("x", 0, 400, seconds=1),
        fetch("x", 400, 1000, seconds=9),  # after the answer at 5 s
    ]
    assert coverage(fetches) == {"a": 1.0, "b": 1.0, "x": 1.0}
    assert coverage(fetches, before=at(5)) == {"a": 1.0, "b": 1.0, "x": 0.4}
    assert coverage(fetches, before=at(0.5)) == {}
    assert coverage([Fetch("e", 0, 0, 0, at(1))]) == {"e": 1.0}  # an empty file is whole


def test_server_rt_and_too_quick():
    assert server_rt_ms(at(0), at(12.3456)) == 12345
    assert server_rt_ms(None, at(3)) is None
    assert too_quick(2999, 3.0) and not too_quick(3000, 3.0)
    assert not too_quick(None, 3.0)  # no showing recorded: no measure, no flag
    assert not too_quick(0, 0.0)  # a trial without audio cannot be answered too quickly


def evidence(fetches, answered: float, presented: float | None = 0.0, minimum: float = 3.0):
    return assess_listening(
        audio_slots=("a", "b", "x"),
        fetches=fetches,
        presented_at=None if presented is None else at(presented),
        answered_at=at(answered),
        min_listen_seconds=minimum,
    )


def test_an_answer_without_any_download_is_unheard_however_late_it_comes():
    late = evidence([], answered=3600)
    assert late.flag_unheard and not late.flag_too_quick
    assert late.server_rt_ms == 3_600_000 and late.media_fetched == ""


def test_slots_sent_whole_in_several_ranges_are_heard():
    fetches = [fetch(s, lo, hi) for s in "abx" for lo, hi in ((0, 2), (0, 700), (650, 1000))]
    heard = evidence(fetches, answered=10)
    assert not heard.flag_unheard and not heard.flag_too_quick
    assert heard.media_fetched == "a:1.00;b:1.00;x:1.00"
    quick = evidence(fetches, answered=2.5)
    assert quick.flag_too_quick and not quick.flag_unheard


def test_one_slot_partly_sent_or_missing_is_unheard():
    partial = evidence([fetch("a", 0, 1000), fetch("b", 0, 1000), fetch("x", 0, 400)], 10)
    assert partial.flag_unheard and partial.media_fetched == "a:1.00;b:1.00;x:0.40"
    missing = evidence([fetch("a", 0, 1000), fetch("b", 0, 1000)], 10)
    assert missing.flag_unheard and missing.media_fetched == "a:1.00;b:1.00"
    # a slot that is not audio (a video) does not have to be fetched
    video = assess_listening(
        audio_slots=("clip",),
        fetches=[fetch("clip", 0, 1000)],
        presented_at=at(0),
        answered_at=at(10),
        min_listen_seconds=3,
    )
    assert not video.flag_unheard


def test_media_fetched_rounds_down_so_whole_means_whole():
    almost = ListeningEvidence(1, {"x": 0.999, "a": 1.0, "b": 0.0}, True, False)
    assert almost.media_fetched == "a:1.00;b:0.00;x:0.99"
    assert ListeningEvidence(1, {"a": 0.29}, True, False).media_fetched == "a:0.29"


# --- The bounded stored form: merged ranges and the flood throttle ------------------------------


def test_merge_range_keeps_the_union_as_it_grows():
    ranges: list[list[int]] = []
    for first, end in [(0, 2), (0, 700), (650, 1000), (5, 6), (2000, 2100), (1000, 1500)]:
        ranges = merge_range(ranges, first, end)
    assert ranges == [[0, 1500], [2000, 2100]]  # overlapping and touching ranges join
    assert merge_range(ranges, 40, 40) == ranges  # nothing sent adds nothing
    # whatever the order, the stored union covers what covered_bytes counts of all of them
    pieces = [(900, 1000), (0, 100), (450, 500), (100, 450), (600, 650)]
    merged: list[list[int]] = []
    for first, end in pieces:
        merged = merge_range(merged, first, end)
    assert covered_bytes(map(tuple, merged), 1000) == covered_bytes(pieces, 1000) == 650


def test_merge_range_past_the_cap_drops_the_smallest_never_bridges_a_gap():
    ranges: list[list[int]] = []
    for i in range(MAX_RANGES + 10):  # scattered one-byte requests, then one real range
        ranges = merge_range(ranges, 10 * i, 10 * i + 1)
    ranges = merge_range(ranges, 5000, 9000)
    assert len(ranges) == MAX_RANGES
    assert [5000, 9000] in ranges
    # under-counted (some single bytes forgotten), never over-counted (no gap filled)
    assert covered_bytes(map(tuple, ranges), 10_000) == 4000 + MAX_RANGES - 1


def test_throttle_refuses_past_the_allowance_until_the_window_ends():
    assert throttle_wait(None, 0, at(0)) == 0  # no request yet
    assert throttle_wait(at(0), MAX_REQUESTS_PER_WINDOW - 1, at(30)) == 0
    assert throttle_wait(at(0), MAX_REQUESTS_PER_WINDOW, at(30)) == 30
    assert throttle_wait(at(0), MAX_REQUESTS_PER_WINDOW, at(59.5)) == 1  # rounded up
    assert throttle_wait(at(0), 10**6, at(60)) == 0  # a new window
    assert throttle_wait(at(0), 3, at(1), limit=3) == 59
    assert next_window(None, 0, at(5)) == (at(5), 1)
    assert next_window(at(0), 7, at(59)) == (at(0), 8)
    assert next_window(at(0), 7, at(60)) == (at(60), 1)
