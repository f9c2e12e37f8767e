"""The scheduler: which trials a participant gets, in which order, with which clips.

`build_schedule` is a pure function of (design, catalog, participant seed, assignment index): no
Flask, no database, no clock. Everything random comes from a `random.Random` seeded from the
participant's seed, so a stored seed reproduces the schedule exactly; everything that must balance
*across* participants (Latin-square list, A/B position, X identity) comes from the assignment
index, the participant's position in the order of arrival.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .catalog import Catalog
from .design import with_defaults
from .trial_types import get_trial_type


@dataclass(frozen=True)
class Assignment:
    """Who the schedule is for."""

    seed: int
    index: int  # 0-based order of arrival in the study


@dataclass(frozen=True)
class TrialSpec:
    block_id: str
    block_index: int
    trial_type: str
    spec: dict[str, Any]  # server-side only: holds clip ids and conditions


def block_rng(seed: int, block_index: int) -> random.Random:
    """An independent stream per block, so editing one block leaves the others' draws alone."""
    return random.Random(f"{seed}:{block_index}")


def latin_square_condition(segment_position: int, list_index: int, conditions: list[str]) -> str:
    """Condition that list `list_index` gives the segment at `segment_position`."""
    return conditions[(segment_position + list_index) % len(conditions)]


def build_schedule(
    design: dict[str, Any], catalog: Catalog, assignment: Assignment
) -> list[TrialSpec]:
    """Every trial of a participant's session, in presentation order."""
    schedule: list[TrialSpec] = []
    for block_index, stored_block in enumerate(design["blocks"]):
        block = with_defaults(stored_block)
        trial_type = get_trial_type(block["type"])
        rng = block_rng(assignment.seed, block_index)
        specs = trial_type.schedule(block, catalog, assignment.index, rng)
        if block.get("randomize", True) and not trial_type.orders_own_trials:
            rng.shuffle(specs)
        schedule.extend(TrialSpec(block["id"], block_index, trial_type.name, s) for s in specs)
    return schedule
