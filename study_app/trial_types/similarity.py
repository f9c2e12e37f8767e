"""Similarity to the reference: the reference and one clip of the same segment, rated 1-7
("How similar is sample B to the reference A?"). Conditions go to segments by Latin-square lists
(as emotion_rating); the reference may be listed too, as a same-same control."""

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


def latin_square_specs(
    block: Mapping[str, Any], catalog: Catalog, assignment_index: int, required: list[str]
) -> list[dict[str, Any]]:
    """One (segment, condition) per trial, by the shared Latin-square lists."""
    conditions = list(block["conditions"])
    segments = catalog.segments_with([*required, *conditions])
    trials = block["trials_per_participant"] or len(segments)
    specs = []
    for cell in latin_square_cells(len(segments), len(conditions), trials, assignment_index):
        segment = segments[cell.segment]
        condition = conditions[cell.condition]
        specs.append(
            {
                "segment": segment.id,
                "source": segment.source,
                "condition": condition,
                "list_index": assignment_index % len(conditions),
                "clip": segment.clips[condition],
                "reference_clip": segment.clips.get(REFERENCE),
                "duration": segment.duration,
                "is_catch": False,
            }
        )
    return specs


def validate_single(block: Mapping[str, Any], catalog: Catalog, required: list[str]) -> list[str]:
    bid = block["id"]
    conditions = block["conditions"]
    if not conditions or not is_name_list(conditions):
        return [f"block {bid!r}: 'conditions' must list at least one condition"]
    # Names first, in linear time, before the catalog is searched for them (issue 23).
    problems = condition_name_problems(bid, conditions, catalog)
    if problems:
        return problems
    return coverage_problems(
        block,
        catalog,
        [*required, *conditions],
        cells_per_segment=len(conditions),
        cells="the set has only {n} clips of these conditions",
    )


def coverage_problems(
    block: Mapping[str, Any],
    catalog: Catalog,
    needed: list[str],
    *,
    cells_per_segment: int,
    cells: str,
) -> list[str]:
    """The set has every listed condition, some segment has all of `needed`, and
    `trials_per_participant` fits in the (segment, cell) grid; `cells` words the bound ({n})."""
    bid = block["id"]
    problems = []
    missing = set(block["conditions"]) - catalog.conditions()
    if missing:
        problems.append(f"block {bid!r}: the stimulus set has no condition {sorted(missing)}")
    segments = catalog.segments_with(needed)
    if not segments:
        problems.append(f"block {bid!r}: no segment has a clip of every listed condition")
    trials = block["trials_per_participant"]
    if trials is not None and (
        not isinstance(trials, int) or isinstance(trials, bool) or trials < 1
    ):
        problems.append(f"block {bid!r}: 'trials_per_participant' must be >= 1")
    elif trials is not None and segments and trials > len(segments) * cells_per_segment:
        n = len(segments) * cells_per_segment
        problems.append(f"block {bid!r}: {trials} trials asked but {cells.format(n=n)}")
    return problems


@register
class Similarity(TrialType):
    name = "similarity"
    label = "Similarity to the reference (1-7)"
    open_slots = ("ref",)  # the labelled Reference
    options = {
        "conditions": [],
        "trials_per_participant": None,
        "require_full_listen": True,
    }
    export_columns = ("similarity", "plays_ref")

    def validate_block(self, block: dict[str, Any], catalog: Catalog) -> list[str]:
        return validate_single(block, catalog, [REFERENCE])

    def schedule(
        self, block: dict[str, Any], catalog: Catalog, assignment_index: int, rng: random.Random
    ) -> list[dict[str, Any]]:
        return latin_square_specs(block, catalog, assignment_index, [REFERENCE])

    def media(self, spec: Mapping[str, Any]) -> dict[str, MediaRef]:
        return {
            "ref": MediaRef("clip", spec["reference_clip"]),
            "clip": MediaRef("clip", spec["clip"]),
        }

    def required_slots(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        # The clip and the reference it is compared with.
        return ("ref", "clip")

    def page_context(self, spec: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
        return {"require_full_listen": block["require_full_listen"]}

    def parse_answer(
        self, spec: Mapping[str, Any], block: Mapping[str, Any], form: Mapping[str, str]
    ) -> dict[str, Any]:
        problems: list[str] = []
        value = int_in_range(form, "similarity", 1, 7, problems, label="similarity")
        if problems:
            raise AnswerError(problems)
        return {
            "similarity": value,
            "plays": play_counts(form, ("ref", "clip")),
            "client_rt_ms": client_rt_ms(form),
        }

    def export_fields(self, spec: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
        plays = answer.get("plays", {})
        return {
            "source": spec["source"],
            "segment": spec["segment"],
            "condition": spec["condition"],
            "conditions": f"{REFERENCE}|{spec['condition']}",
            "list_index": spec["list_index"],
            "clip": spec["clip"],
            "similarity": answer["similarity"],
            "plays": plays.get("clip", 0),
            "plays_ref": plays.get("ref", 0),
            "clip_duration": spec["duration"],
        }

    def min_listen_seconds(self, spec: Mapping[str, Any], durations: Mapping[str, float]) -> float:
        return 2 * float(spec["duration"])
