"""The designer's power hints: how likely the report's verdicts are for a block's design.

For an ABX block, the realism verdicts (distinguishable, equivalent); for an emotion-rating
block with the reference among its conditions, the valence shift against the reference. The
numbers come from ``sightsound_stats/power_realism.json`` and ``power_ratings.json``, written
by ``scripts/build_power_table.py``: for each design of a grid (listeners x sources x sources
each listener hears per condition) it simulated studies from the mixed model the report fits
and refitted every one with lme4, as R's simr does. The app only reads the files (it never
imports ``analysis``); every function here is pure. Each row also says whether the report's
verdicts are calibrated for the block at that many listeners or only exploratory
(:func:`sightsound_stats.planning.calibration`, the rule the report applies too).

A design between grid points is read at the grid point below it on every axis (fewer sources,
fewer sources heard): power grows with each, so the hint is a lower bound, and it says so. The
report corrects across a block's conditions by Holm; the table plans with Bonferroni's
``alpha / k``, Holm's first step, a lower bound too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sightsound_stats import planning

from .catalog import REFERENCE, Catalog

POWER_TABLES = planning.TABLES
TARGET_POWER = 0.8
# The questions each hint answers, as (table column, true value, label, is power): the true
# value is an ABX accuracy (realism) or a valence shift in scale points (ratings). The rows
# that are not power are the design's simulated error rates, shown beside the power because
# with few sources they can exceed their nominal 5 % (docs/analysis.md, Power planning).
QUESTIONS = {
    "realism": (
        ("distinguishable", 0.6, "detect a condition at accuracy 0.60", True),
        ("distinguishable", 0.7, "detect a condition at accuracy 0.70", True),
        ("equivalent", 0.5, "show a condition at chance indistinguishable (even if "
         f"{planning.LAPSE_SHARE:.0%} of listeners answer at random)", True),
        ("distinguishable", 0.5, "false 'distinguishable' at chance", False),
        ("equivalent", 0.6, "false 'indistinguishable' on the margin", False),
    ),
    "ratings": (
        ("shifted", 0.5, "detect a valence shift of 0.5 points", True),
        ("shifted", 1.0, "detect a valence shift of 1 point", True),
        ("shifted", 0.0, "false shift when there is none", False),
    ),
}
TRUTH = {"realism": "accuracy", "ratings": "shift"}


@dataclass(frozen=True)
class BlockDesign:
    """What the power of a block depends on, read off the block and the stimulus set."""

    block_id: str
    kind: str  # "realism" (ABX) or "ratings" (emotion rating against the reference)
    conditions: int  # generated conditions, each compared with the reference
    sources: int  # distinct source recordings among the block's segments
    sources_heard: int  # sources each listener hears per condition (at least)
    repetitions: int


def block_design(block: dict[str, Any], catalog: Catalog) -> BlockDesign | None:
    """The block's design, or None for a block no hint is for (another type, no segments,
    ratings without the reference or without valence).

    The scheduler's Latin square gives each listener ``trials // k`` segments of each of the
    ``k`` scheduled conditions (one more for some), each on a different segment; segments of
    one source count once here, so ``sources_heard`` is a lower bound on distinct sources.
    """
    kind = {"abx": "realism", "emotion_rating": "ratings"}.get(block.get("type"))
    conditions = block.get("conditions") or []
    if kind is None or not conditions or not all(isinstance(c, str) for c in conditions):
        return None
    if kind == "realism":
        scheduled = [REFERENCE, *conditions]  # ABX: each trial holds the reference too
        per_trial = len(conditions)
    else:
        if REFERENCE not in conditions or len(conditions) < 2:
            return None  # the report's shift test compares with the rated reference
        if "valence" not in (block.get("scales") or []):
            return None
        scheduled = list(conditions)
        per_trial = len(conditions)
    segments = catalog.segments_with(scheduled)
    trials = block.get("trials_per_participant") or len(segments)
    if not segments or not isinstance(trials, int) or trials < 1:
        return None
    sources = len({segment.source for segment in segments})
    repetitions = block.get("repetitions", 1)
    return BlockDesign(
        block_id=str(block.get("id", "")),
        kind=kind,
        conditions=len(conditions) - (kind == "ratings"),
        sources=sources,
        sources_heard=min(sources, trials // per_trial),
        repetitions=repetitions if isinstance(repetitions, int) and repetitions >= 1 else 1,
    )


def load_power_table(kind: str) -> dict[str, Any]:
    """The simulated table of ``kind`` (cached: each is read once per process)."""
    return planning.load_table(kind)


def power_hint(
    design: BlockDesign, table: dict[str, Any], participants_cap: int | None = None
) -> dict[str, Any]:
    """The hint for one block: power per number of listeners, as the designer shows it.

    Returns ``{"block", "kind", "design", "simulated", "rows", "needed", "cap", "notes",
    "questions", "assumptions"}``: ``rows`` has one entry per simulated number of listeners
    with the power of each question of :data:`QUESTIONS` (Bonferroni-corrected for the
    block's conditions); ``needed`` the fewest simulated listeners reaching
    :data:`TARGET_POWER` per power question (None: not within the table); ``simulated`` the
    grid design read (None when the block is below the grid).
    """
    questions = QUESTIONS[design.kind]
    truth = TRUTH[design.kind]
    assumptions = table["assumptions"]
    rows = table["rows"]
    k = min(design.conditions, assumptions["max_conditions"])
    notes = []
    grid = sorted({(r["sources"], r["sources_heard"]) for r in rows})
    below = [(s, m) for s, m in grid if s <= design.sources and m <= design.sources_heard]
    # Of the grid designs below the block's, the one with most sources heard (answers per
    # condition weigh most), then most sources.
    simulated = max(below, key=lambda sm: (sm[1], sm[0]), default=None)
    hint: dict[str, Any] = {
        "block": design.block_id,
        "kind": design.kind,
        "design": {"conditions": design.conditions, "sources": design.sources,
                   "sources_heard": design.sources_heard,
                   "repetitions": design.repetitions},
        "simulated": None, "rows": [], "needed": {}, "cap": participants_cap, "notes": notes,
        "questions": [label for _, _, label, _ in questions],
        "is_power": [is_power for _, _, _, is_power in questions],
        "assumptions": assumptions,
    }
    if simulated is None:
        smallest = min(grid, key=lambda sm: (sm[1], sm[0]))
        notes.append(
            f"This block is smaller than every simulated design (each listener hears "
            f"{design.sources_heard} of {design.sources} sources per condition; the smallest "
            f"simulated: {smallest[1]} of {smallest[0]}): too few answers per condition to "
            "plan with this table.")
        return hint
    sources, heard = simulated
    hint["simulated"] = {"sources": sources, "sources_heard": heard}
    if (sources, heard) != (design.sources, design.sources_heard):
        notes.append(f"Read at the simulated design below this block's ({heard} of {sources} "
                     "sources heard per condition): the power shown is a lower bound.")
    if design.repetitions > 1:
        notes.append(f"Simulated without repetitions: the block's {design.repetitions} "
                     "repetitions add answers, so the power shown is a lower bound.")
    notes.append("The columns headed 'false ...' are this design's simulated error rates, "
                 "nominally 5 % over the block's conditions; with few answers per source they "
                 "can be higher.")
    if design.conditions > 1:
        notes.append(f"{design.conditions} conditions: planned at alpha / "
                     f"{design.conditions} (Bonferroni), the strictest step of the report's "
                     "Holm correction.")
    if design.conditions > k:
        notes.append(f"More conditions than simulated ({k}): the correction shown is for "
                     f"{k}, so the power shown may be too high.")
    cell = {(r["participants"], r[truth]): r for r in rows
            if (r["sources"], r["sources_heard"]) == simulated}
    for participants in sorted({p for p, _ in cell}):
        # Calibration is read at the block's own design (its grid cell), not the one below.
        verdicts = planning.calibration(table, design.kind, participants, design.sources,
                                        design.sources_heard)
        entry = {"participants": participants, "calibrated": verdicts["calibrated"],
                 "calibration": verdicts["reason"]}
        for index, (column, value, _, _) in enumerate(questions):
            row = cell.get((participants, value))
            entry[f"q{index}"] = None if row is None else row[f"{column}_{k}"]
        hint["rows"].append(entry)
    exploratory = [e for e in hint["rows"] if not e["calibrated"]]
    if exploratory:
        notes.append("Exploratory at " + ", ".join(str(e["participants"]) for e in exploratory)
                     + " listeners: the report will label this block's verdicts exploratory, "
                     "not state them at 5 % (" + exploratory[0]["calibration"] + ").")
    for index, (_, _, _, is_power) in enumerate(questions):
        if not is_power:
            continue
        reaching = [e["participants"] for e in hint["rows"]
                    if e[f"q{index}"] is not None and e[f"q{index}"] >= TARGET_POWER]
        hint["needed"][f"q{index}"] = min(reaching, default=None)
    return hint


def power_hints(design: dict[str, Any], catalog: Catalog,
                table: Callable[[str], dict[str, Any]] = load_power_table,
                ) -> list[dict[str, Any]]:
    """One hint per ABX or emotion-rating block of a (normalized, valid) design;
    ``table(kind)`` gives the simulated table of a kind (read only when a block needs it)."""
    cap = (design.get("completion") or {}).get("max_completed")
    hints = []
    for block in design.get("blocks", []):
        read = block_design(block, catalog) if isinstance(block, dict) else None
        if read is not None:
            hints.append(power_hint(read, table(read.kind),
                                    cap if isinstance(cap, int) else None))
    return hints
