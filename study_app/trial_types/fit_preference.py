"""Audio-video fit, two-alternative forced choice: the performance video plays muted with music A,
then with music B (the same segment, two conditions); "Which music fits this performance better?"
and how strongly.

Counterbalancing: every ordered pair (x, y) and (y, x) of the block's condition pairs is one
"cell kind"; the shared Latin-square lists give each segment a different ordered pair per list,
so over 2 x pairs participants every segment is heard with every pair in both orders.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from typing import Any

from ..catalog import Catalog
from ..counterbalance import latin_square_cells
from . import (
    AnswerError,
    MediaRef,
    TrialType,
    client_rt_ms,
    condition_name_problems,
    int_in_range,
    is_name_list,
    play_counts,
    register,
)
from .similarity import coverage_problems

STRENGTHS = {1: "slightly", 2: "clearly", 3: "strongly"}


def ordered_pairs(block: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Both presentation orders of every compared pair (all pairs of `conditions` by default)."""
    pairs = block["pairs"] or list(itertools.combinations(block["conditions"], 2))
    return [(a, b) for x, y in pairs for a, b in ((x, y), (y, x))]


@register
class FitPreference(TrialType):
    name = "fit_preference"
    label = "Audio-video fit preference (2AFC)"
    options = {
        "conditions": [],
        "pairs": None,  # e.g. [[vit_adapter, gan]]; default: every pair of `conditions`
        "trials_per_participant": None,  # default: one per segment
        "ask_strength": True,
        "require_full_listen": True,
    }
    export_columns = ("condition_a", "condition_b", "preferred_condition", "preference_strength")

    def validate_block(self, block: dict[str, Any], catalog: Catalog) -> list[str]:
        bid = block["id"]
        conditions, pairs = block["conditions"], block["pairs"]
        if not is_name_list(conditions):
            return [f"block {bid!r}: 'conditions' must be a list of condition names"]
        # Names first, in linear time: every pair is built only from a list that holds each of
        # the set's conditions at most once (issue 23).
        problems = condition_name_problems(bid, conditions, catalog)
        if problems:
            return problems
        if len(conditions) < 2:
            return [f"block {bid!r}: a preference needs at least two different conditions"]
        named = set(conditions)
        pairs_ok = pairs is None or (
            isinstance(pairs, list)
            and 0 < len(pairs) <= len(named) * (len(named) - 1) // 2
            and all(
                is_name_list(p) and len(p) == 2 and p[0] != p[1] and set(p) <= named for p in pairs
            )
            and len({frozenset(p) for p in pairs}) == len(pairs)
        )
        if not pairs_ok:
            return [
                f"block {bid!r}: 'pairs' must list distinct pairs of two different conditions "
                "named in 'conditions'"
            ]
        problems = coverage_problems(
            block,
            catalog,
            conditions,
            cells_per_segment=len(ordered_pairs(block)),
            cells="only {n} (segment, ordered pair) cells exist",
        )
        if not isinstance(block["ask_strength"], bool):
            problems.append(f"block {bid!r}: 'ask_strength' must be true or false")
        return problems

    def schedule(
        self, block: dict[str, Any], catalog: Catalog, assignment_index: int, rng: random.Random
    ) -> list[dict[str, Any]]:
        combos = ordered_pairs(block)
        segments = catalog.segments_with(block["conditions"])
        trials = block["trials_per_participant"] or len(segments)
        specs = []
        for cell in latin_square_cells(len(segments), len(combos), trials, assignment_index):
            segment = segments[cell.segment]
            first, second = combos[cell.condition]
            specs.append(
                {
                    "segment": segment.id,
                    "source": segment.source,
                    "condition_a": first,
                    "condition_b": second,
                    "clip_a": segment.clips[first],
                    "clip_b": segment.clips[second],
                    "list_index": assignment_index % len(combos),
                    "duration": segment.duration,
                    "is_catch": False,
                }
            )
        return specs

    def media(self, spec: Mapping[str, Any]) -> dict[str, MediaRef]:
        return {
            "video": MediaRef("video", spec["segment"]),
            "a": MediaRef("clip", spec["clip_a"]),
            "b": MediaRef("clip", spec["clip_b"]),
        }

    def required_slots(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        # Both soundtracks to choose between; the video is muted.
        return ("a", "b")

    def page_context(self, spec: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "require_full_listen": block["require_full_listen"],
            "ask_strength": block["ask_strength"],
            "strengths": STRENGTHS,
        }

    def parse_answer(
        self, spec: Mapping[str, Any], block: Mapping[str, Any], form: Mapping[str, str]
    ) -> dict[str, Any]:
        problems: list[str] = []
        choice = (form.get("answer") or "").strip().upper()
        if choice not in ("A", "B"):
            problems.append("Please choose the music that fits the performance better (A or B).")
        strength = None
        if block["ask_strength"]:
            strength = int_in_range(form, "strength", 1, 3, problems, label="how strongly")
        if problems:
            raise AnswerError(problems)
        return {
            "answer": choice,
            "strength": strength,
            "plays": play_counts(form, ("a", "b")),
            "client_rt_ms": client_rt_ms(form),
        }

    def export_fields(self, spec: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
        plays = answer.get("plays", {})
        chosen = spec["condition_a"] if answer["answer"] == "A" else spec["condition_b"]
        return {
            "source": spec["source"],
            "segment": spec["segment"],
            "conditions": f"{spec['condition_a']}|{spec['condition_b']}",
            "list_index": spec["list_index"],
            "clip_a": spec["clip_a"],
            "clip_b": spec["clip_b"],
            "condition_a": spec["condition_a"],
            "condition_b": spec["condition_b"],
            "answer": answer["answer"],
            "preferred_condition": chosen,
            "preference_strength": answer.get("strength"),
            "video_shown": 1,
            "plays_a": plays.get("a", 0),
            "plays_b": plays.get("b", 0),
            "clip_duration": spec["duration"],
        }

    def min_listen_seconds(self, spec: Mapping[str, Any], durations: Mapping[str, float]) -> float:
        return 2 * float(spec["duration"])
