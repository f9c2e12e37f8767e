"""Absolute category rating (ACR, "overall quality", 5 = Excellent ... 1 = Bad) in the manner of
ITU-T P.808, with its quality control inside the block:

* rated clips: the block's conditions go to segments by the shared Latin-square lists;
* gold-standard questions (`gold_questions`): the reference itself (known answer 5) and a
  heavily degraded copy (known answer 1), alternating; passed within one category;
* trapping questions (`trapping_questions`): a clip of a listed condition with a voice asking for
  one answer (random per question); passed only by exactly that answer;
* rest periods (`rest_every`, `rest_seconds`): a pause page after every so many ratings.

Gold and trapping items are catch trials: a wrong one sets the participant's failed-catch flag
(excluded, as P.808 removes such listeners). Their pages are identical to a rated clip's and
their audio has the same format, duration and loudness, so only listening tells them apart.
A P.808 qualification is its own block type (`p808_qualification`), placed before this one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from scipy import stats

from ..catalog import REFERENCE, Catalog
from ..p808 import (
    ACR_LABELS,
    GOLD_EXPECTED,
    gold_low_wav_bytes,
    gold_passed,
    shortest_trap_clip_seconds,
    trap_passed,
    trap_wav_bytes,
)
from . import AnswerError, MediaRef, TrialType, client_rt_ms, int_in_range, play_counts, register
from .similarity import latin_square_specs, validate_single

TRAP_CONDITION = "p808_trap"


@register
class AbsoluteCategoryRating(TrialType):
    name = "acr"
    label = "Overall quality, ACR 1-5 (ITU-T P.808)"
    options = {
        "conditions": [],
        "trials_per_participant": None,  # rated clips; default: one per segment
        "question": "How would you rate the overall quality of this music?",
        "gold_questions": 2,
        "trapping_questions": 1,
        "rest_every": 0,  # ratings between pauses; 0: no pauses
        "rest_seconds": 20,
        "require_full_listen": True,
    }
    export_columns = ("acr_item", "acr_rating")
    orders_own_trials = True  # catch items never first, pauses at fixed intervals

    def validate_block(self, block: dict[str, Any], catalog: Catalog) -> list[str]:
        problems = validate_single(block, catalog, [])
        bid = block["id"]
        for option, high in (
            ("gold_questions", 20),
            ("trapping_questions", 20),
            ("rest_every", 500),
            ("rest_seconds", 600),
        ):
            value = block[option]
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
                problems.append(f"block {bid!r}: '{option}' must be a whole number 0-{high}")
        if not isinstance(block["question"], str) or not block["question"].strip():
            problems.append(f"block {bid!r}: 'question' must be a sentence")
        if problems:
            return problems
        if block["gold_questions"] and not catalog.segments_with([REFERENCE]):
            problems.append(f"block {bid!r}: gold questions need segments with a reference clip")
        if block["trapping_questions"] and not _trap_segments(block, catalog):
            problems.append(
                f"block {bid!r}: trapping questions need clips of at least "
                f"{shortest_trap_clip_seconds():.1f} s (the spoken instruction must fit); "
                "set trapping_questions: 0 for shorter clips"
            )
        return problems

    def schedule(
        self, block: dict[str, Any], catalog: Catalog, assignment_index: int, rng: random.Random
    ) -> list[dict[str, Any]]:
        ratings = latin_square_specs(block, catalog, assignment_index, [])
        items = [spec | {"item": "rating"} for spec in ratings]
        if block["randomize"]:
            rng.shuffle(items)
        checks = []
        references = catalog.segments_with([REFERENCE])
        first = rng.randrange(2)
        for i in range(block["gold_questions"]):
            segment = rng.choice(references)
            kind = ("p808_gold_high", "p808_gold_low")[(first + i) % 2]
            checks.append(
                _check_spec("gold", kind, segment, segment.clips[REFERENCE], GOLD_EXPECTED[kind])
            )
        long_enough = _trap_segments(block, catalog)
        for _ in range(block["trapping_questions"]):
            segment = rng.choice(long_enough)
            clip = segment.clips[rng.choice(block["conditions"])]
            checks.append(_check_spec("trap", TRAP_CONDITION, segment, clip, rng.randint(1, 5)))
        for check in checks:  # anywhere but first: the first clip sets the listener's scale
            items.insert(rng.randint(1, len(items)), check)
        if not block["rest_every"]:
            return items
        with_rests = []
        for i, item in enumerate(items, 1):
            with_rests.append(item)
            if i % block["rest_every"] == 0 and i < len(items):
                with_rests.append({"item": "rest", "rest_seconds": block["rest_seconds"]})
        return with_rests

    def media(self, spec: Mapping[str, Any]) -> dict[str, MediaRef]:
        item = spec["item"]
        if item == "rest":
            return {}
        if spec.get("condition") == "p808_gold_low":
            return {"clip": MediaRef("p808_gold_low", spec["clip"])}
        if item == "trap":
            return {"clip": MediaRef("p808_trap", f"{spec['correct_answer']}:{spec['clip']}")}
        return {"clip": MediaRef("clip", spec["clip"])}

    def required_slots(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        # The rated clip (also a gold or trapping one); a rest page has none.
        return () if spec["item"] == "rest" else ("clip",)

    def render_media(self, ref: MediaRef, clip_file: Callable[[str], Path]) -> bytes | None:
        if ref.kind == "p808_gold_low":
            return gold_low_wav_bytes(clip_file(ref.key))
        if ref.kind == "p808_trap":
            rating, _, clip = ref.key.partition(":")
            return trap_wav_bytes(clip_file(clip), int(rating))
        return None

    def page_context(self, spec: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
        # The same context for rated, gold and trapping items: the page must not tell them apart.
        rest = spec["item"] == "rest"
        return {
            "rest": rest,
            "rest_seconds": spec.get("rest_seconds", 0),
            "require_full_listen": block["require_full_listen"] and not rest,
            "question": block["question"],
            "labels": ACR_LABELS,
        }

    def parse_answer(
        self, spec: Mapping[str, Any], block: Mapping[str, Any], form: Mapping[str, str]
    ) -> dict[str, Any]:
        if spec["item"] == "rest":
            return {"rest": True, "client_rt_ms": client_rt_ms(form)}
        problems: list[str] = []
        rating = int_in_range(form, "rating", 1, 5, problems, label="overall quality")
        if problems:
            raise AnswerError(problems)
        return {
            "rating": rating,
            "plays": play_counts(form, ("clip",)),
            "client_rt_ms": client_rt_ms(form),
        }

    def catch_failed(self, spec: Mapping[str, Any], answer: Mapping[str, Any]) -> bool:
        return _passed(spec, answer) is False

    def export_rows(
        self, spec: Mapping[str, Any], answer: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        if spec["item"] == "rest":
            return []  # a pause is not a response
        passed = _passed(spec, answer)
        return [
            {
                "source": spec["source"],
                "segment": spec["segment"],
                "condition": spec["condition"],
                "conditions": spec["condition"],
                "list_index": spec.get("list_index"),
                "clip": spec["clip"],
                "acr_item": spec["item"],
                "acr_rating": answer["rating"],
                "answer": str(answer["rating"]),
                "correct_answer": spec.get("correct_answer"),
                "correct": None if passed is None else int(passed),
                "plays": answer.get("plays", {}).get("clip", 0),
                "clip_duration": spec["duration"],
            }
        ]

    def min_listen_seconds(self, spec: Mapping[str, Any], durations: Mapping[str, float]) -> float:
        return 0.0 if spec["item"] == "rest" else float(spec["duration"])

    def min_answer_seconds(self, spec: Mapping[str, Any], block: Mapping[str, Any]) -> float:
        # The pause's own length, as its page counts it down (the spec, not today's block: the
        # page showed the spec's value).
        return float(spec.get("rest_seconds", 0)) if spec["item"] == "rest" else 0.0

    def study_tables(self, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """MOS with 95% Student-t intervals (ITU-T P.800.2) per clip and per listener, over the
        rated clips of listeners who are not excluded (P.808: failed gold/trap removed)."""
        rated = [r for r in rows if r.get("acr_item") == "rating" and not r.get("excluded")]
        return {
            "acr_mos_per_clip": _mos_rows(rated, ("condition", "clip")),
            "acr_mos_per_listener": _mos_rows(rated, ("participant",)),
        }


def _check_spec(item: str, condition: str, segment, clip: str, expected: int) -> dict[str, Any]:
    return {
        "item": item,
        "segment": segment.id,
        "source": segment.source,
        "condition": condition,
        "clip": clip,
        "correct_answer": expected,
        "duration": segment.duration,
        "is_catch": True,
    }


def _trap_segments(block: Mapping[str, Any], catalog: Catalog) -> list:
    shortest = shortest_trap_clip_seconds()
    return [s for s in catalog.segments_with(block["conditions"]) if s.duration >= shortest]


def _passed(spec: Mapping[str, Any], answer: Mapping[str, Any]) -> bool | None:
    """Gold and trap items: whether the answer passed; None for anything else."""
    if spec["item"] == "gold":
        return gold_passed(answer["rating"], spec["correct_answer"])
    if spec["item"] == "trap":
        return trap_passed(answer["rating"], spec["correct_answer"])
    return None


def _mos_rows(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(float(row["acr_rating"]))
    table = []
    for key, values in sorted(groups.items()):
        n = len(values)
        mean = sum(values) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
        half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if sd is not None else None
        table.append(
            dict(zip(keys, key, strict=True))
            | {
                "n": n,
                "mos": round(mean, 4),
                "sd": None if sd is None else round(sd, 4),
                "ci_low": None if half is None else round(mean - half, 4),
                "ci_high": None if half is None else round(mean + half, 4),
            }
        )
    return table
