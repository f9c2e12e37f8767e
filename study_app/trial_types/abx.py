"""ABX: A and B are the reference and a generated clip of one segment, X is one of them.

Counterbalancing (see docs/design-format.md): conditions go to segments by Latin-square lists
chosen by assignment index; for each (segment, condition) cell the participants who receive it
rotate through the four arrangements of (reference in A or B) x (X is A or B).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from ..catalog import REFERENCE, Catalog
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

SLOTS = ("a", "b", "x")


def arrangement(rotation: int) -> tuple[str, str]:
    """(slot holding the reference, slot X copies) for rotation 0..3."""
    reference_slot = "A" if rotation % 4 < 2 else "B"
    x_slot = "A" if rotation % 2 == 0 else "B"
    return reference_slot, x_slot


MAX_REPETITIONS = 10


@register
class ABX(TrialType):
    name = "abx"
    label = "ABX discrimination"
    options = {
        "conditions": [],
        "trials_per_participant": None,  # default: one per segment
        "repetitions": 1,  # each participant's trial list is played this many times
        "catch_trials": 0,  # X copies A or B, and A and B are obviously different recordings
        "max_plays": 0,  # 0 = unlimited
        "require_full_listen": True,
    }

    def validate_block(self, block: dict[str, Any], catalog: Catalog) -> list[str]:
        problems = []
        conditions = block["conditions"]
        if not conditions or not is_name_list(conditions):
            return [f"block {block['id']!r}: 'conditions' must list at least one condition"]
        if REFERENCE in conditions:
            problems.append(
                f"block {block['id']!r}: ABX compares each condition with {REFERENCE!r}; "
                "do not list the reference among 'conditions'"
            )
        # Names first, in linear time, before the catalog is searched for them (issue 23).
        problems.extend(condition_name_problems(block["id"], conditions, catalog))
        if problems:
            return problems
        segments = catalog.segments_with([REFERENCE, *conditions])
        if not segments:
            problems.append(
                f"block {block['id']!r}: no segment has a reference clip and a clip of every "
                "listed condition"
            )
        trials = block["trials_per_participant"]
        if trials is not None and (not isinstance(trials, int) or trials < 1):
            problems.append(f"block {block['id']!r}: 'trials_per_participant' must be >= 1")
        elif trials is not None and segments and trials > len(segments) * len(conditions):
            problems.append(
                f"block {block['id']!r}: {trials} trials asked but the set can fill only "
                f"{len(segments) * len(conditions)} distinct (segment, condition) pairs"
            )
        # Capped: a schedule grows with both, and a participant hears every trial anyway.
        for option, low, high in (("repetitions", 1, MAX_REPETITIONS), ("catch_trials", 0, 50)):
            value = block[option]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                problems.append(
                    f"block {block['id']!r}: {option!r} must be a whole number {low}-{high}"
                )
        if block["catch_trials"] and len(catalog.segments_with([REFERENCE])) < 2:
            problems.append(
                f"block {block['id']!r}: catch trials pair two segments' references; "
                "the set needs at least two"
            )
        if not isinstance(block["max_plays"], int) or block["max_plays"] < 0:
            problems.append(f"block {block['id']!r}: 'max_plays' must be 0 (unlimited) or more")
        return problems

    def schedule(
        self, block: dict[str, Any], catalog: Catalog, assignment_index: int, rng: random.Random
    ) -> list[dict[str, Any]]:
        conditions = list(block["conditions"])
        segments = catalog.segments_with([REFERENCE, *conditions])
        trials = block["trials_per_participant"] or len(segments)
        specs = []
        for cell in latin_square_cells(len(segments), len(conditions), trials, assignment_index):
            segment = segments[cell.segment]
            condition = conditions[cell.condition]
            # participants who get this cell rotate through the four A/B x X arrangements
            reference_slot, x_slot = arrangement(cell.turn + cell.segment + cell.round)
            reference_clip = segment.clips[REFERENCE]
            generated_clip = segment.clips[condition]
            clip_a, clip_b = (
                (reference_clip, generated_clip)
                if reference_slot == "A"
                else (generated_clip, reference_clip)
            )
            specs.append(
                {
                    "segment": segment.id,
                    "source": segment.source,
                    "condition": condition,
                    "conditions": [REFERENCE, condition],
                    "list_index": assignment_index % len(conditions),
                    "clip_a": clip_a,
                    "clip_b": clip_b,
                    "clip_x": clip_a if x_slot == "A" else clip_b,
                    "reference_slot": reference_slot,
                    "correct_answer": x_slot,
                    "duration": segment.duration,
                    "is_catch": False,
                }
            )
        once = specs
        specs = [
            _with_x_flipped(spec) if repetition % 2 else dict(spec)
            for repetition in range(block["repetitions"])
            for spec in once
        ]
        specs.extend(self._catch_trials(block["catch_trials"], catalog, rng))
        return specs

    def _catch_trials(self, n: int, catalog: Catalog, rng: random.Random) -> list[dict[str, Any]]:
        """Trials any attentive listener gets right: A and B are the references of two
        different performances, X copies one of them."""
        segments = catalog.segments_with([REFERENCE])
        specs = []
        for _ in range(n):
            first, second = rng.sample(segments, 2)
            clip_a, clip_b = first.clips[REFERENCE], second.clips[REFERENCE]
            x_slot = rng.choice("AB")
            specs.append(
                {
                    "segment": first.id,
                    "source": first.source,
                    "condition": None,
                    "conditions": [REFERENCE, REFERENCE],
                    "list_index": None,
                    "clip_a": clip_a,
                    "clip_b": clip_b,
                    "clip_x": clip_a if x_slot == "A" else clip_b,
                    "reference_slot": None,
                    "correct_answer": x_slot,
                    # both are references: the duration of the longer one bounds listening
                    "duration": max(first.duration, second.duration),
                    "is_catch": True,
                }
            )
        return specs

    def media(self, spec: Mapping[str, Any]) -> dict[str, MediaRef]:
        return {slot: MediaRef("clip", spec[f"clip_{slot}"]) for slot in SLOTS}

    def required_slots(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        # Whether X is A or B: all three must be heard.
        return SLOTS

    def page_context(self, spec: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "slots": SLOTS,
            "max_plays": block["max_plays"],
            "require_full_listen": block["require_full_listen"],
        }

    def parse_answer(
        self, spec: Mapping[str, Any], block: Mapping[str, Any], form: Mapping[str, str]
    ) -> dict[str, Any]:
        problems: list[str] = []
        answer = (form.get("answer") or "").strip().upper()
        if answer not in ("A", "B"):
            problems.append("Please choose whether X is A or B.")
        confidence = int_in_range(form, "confidence", 1, 5, problems, label="confidence")
        if problems:
            raise AnswerError(problems)
        return {
            "answer": answer,
            "confidence": confidence,
            "plays": play_counts(form, SLOTS),
            "client_rt_ms": client_rt_ms(form),
        }

    def export_fields(self, spec: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
        plays = answer.get("plays", {})
        return {
            "source": spec["source"],
            "segment": spec["segment"],
            "condition": spec["condition"],
            "conditions": "|".join(spec["conditions"]),
            "list_index": spec["list_index"],
            "clip_a": spec["clip_a"],
            "clip_b": spec["clip_b"],
            "clip_x": spec["clip_x"],
            "reference_slot": spec["reference_slot"],
            "correct_answer": spec["correct_answer"],
            "answer": answer["answer"],
            "correct": int(answer["answer"] == spec["correct_answer"]),
            "confidence": answer["confidence"],
            "plays_a": plays.get("a", 0),
            "plays_b": plays.get("b", 0),
            "plays_x": plays.get("x", 0),
            "clip_duration": spec["duration"],
        }

    def min_listen_seconds(self, spec: Mapping[str, Any], durations: Mapping[str, float]) -> float:
        # Switching slots stops the one playing, so hearing all three takes three clip lengths.
        return 3 * float(spec["duration"])


def _with_x_flipped(spec: dict[str, Any]) -> dict[str, Any]:
    """The same pair with X copying the other slot, so a repeat is not a memory test."""
    x_slot = "B" if spec["correct_answer"] == "A" else "A"
    return spec | {"correct_answer": x_slot, "clip_x": spec[f"clip_{x_slot.lower()}"]}
