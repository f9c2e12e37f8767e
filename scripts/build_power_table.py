"""Simulate the power tables that the study designer's power hints read.

    .venv/bin/python scripts/build_power_table.py realism|ratings [--simulations 100]
        [--budget-minutes 60]

For every design of the grid (participants x sources x sources heard per condition), draws
``--simulations`` studies from the mixed model the report fits and refits each with lme4, as
R's simr does: ``realism`` (:func:`analysis.power.glmm_power_table`) stores the share of
studies called distinguishable and called equivalent per true ABX accuracy in
``study_app/power_realism.json``; ``ratings`` (:func:`analysis.power.lmm_power_table`) the
share whose valence shift against the reference is significant per true shift in
``study_app/power_ratings.json``. The study app only reads those files (it never imports
``analysis``).

Resumable: designs already in the file (with the same assumptions) are kept, the cheapest
missing ones run first, and the file is rewritten after each design, so a run cut short by
``--budget-minutes`` leaves a smaller, still valid table. Every design uses its own seed
(derived from its numbers), so a row can be recomputed on its own and must come out the same
(tests/analysis/test_analysis_power.py does that for one row of each table).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.calibration import CalibrationDesign  # noqa: E402
from analysis.power import (  # noqa: E402
    PLANNING_ACCURACIES,
    PLANNING_SHIFTS,
    glmm_power_table,
    lmm_power_table,
)

APP = Path(__file__).resolve().parents[1] / "study_app"
TABLES = {"realism": APP / "power_realism.json", "ratings": APP / "power_ratings.json"}
PARTICIPANTS = {"realism": (20, 40, 80, 160), "ratings": (20, 40, 80)}
# (sources, sources heard per condition per listener): a listener hears at most every source.
SOURCES_HEARD = {
    "realism": ((8, 2), (8, 4), (8, 8), (16, 2), (16, 4), (16, 8), (16, 16),
                (32, 2), (32, 4), (32, 8), (32, 16)),
    # The rating models take longer per study (four variance terms with four conditions,
    # lmerTest's Satterthwaite df: 0.6-3 s per simulated study here against 0.2-2.4 s for the
    # GLMM): a coarser grid, read the same way (at the design below).
    "ratings": ((8, 2), (8, 4), (16, 4)),
}
MARGIN = 0.1
ALPHA = 0.05
MAX_CONDITIONS = 6
VARIANCE_FIELDS = {
    "realism": ("participant_sd", "participant_condition_sd", "unit_sd", "clip_sd"),
    "ratings": ("rating_participant_sd", "rating_participant_condition_sd", "rating_unit_sd",
                "rating_clip_sd", "rating_noise_sd"),
}


def design_seed(participants: int, sources: int, sources_heard: int, repeats: int) -> int:
    """The seed of one design's simulations: fixed by its numbers, so a row can be redone."""
    return participants * 1_000_000 + sources * 10_000 + sources_heard * 100 + repeats


def assumptions(kind: str, simulations: int) -> dict:
    """What every row was simulated under; a file with other assumptions is started afresh."""
    defaults = asdict(CalibrationDesign())
    variance = {name.removeprefix("rating_"): defaults[name] for name in VARIANCE_FIELDS[kind]}
    if kind == "realism":
        return {
            "model": "correct ~ 0 + condition + crossed random effects (the report's ladder), "
                     "fitted by lme4::glmer",
            "variance_sd_logit": variance,
            "accuracies": list(PLANNING_ACCURACIES),
            "equivalence_margin": MARGIN,
            "alpha": ALPHA,
            "max_conditions": MAX_CONDITIONS,
            "simulations_per_design": simulations,
            "repeats": 1,
        }
    return {
        "model": "valence ~ condition (reference baseline) + crossed random effects (the "
                 "report's ladder), fitted by lme4::lmer (REML) with lmerTest's "
                 "Satterthwaite t",
        "variance_sd_points": variance,
        "shifts": list(PLANNING_SHIFTS),
        "alpha": ALPHA,
        "max_conditions": MAX_CONDITIONS,
        "simulations_per_design": simulations,
    }


def design_table(kind: str, participants: int, sources: int, heard: int,
                 simulations: int, cores: int = 2) -> list[dict]:
    """The rows of one design, simulated with that design's own seed."""
    seed = design_seed(participants, sources, heard, 1)
    if kind == "realism":
        table = glmm_power_table(participants, sources, heard, repeats=1, margin=MARGIN,
                                 alpha=ALPHA, max_conditions=MAX_CONDITIONS,
                                 n_simulations=simulations, seed=seed, cores=cores)
    else:
        table = lmm_power_table(participants, sources, heard, alpha=ALPHA,
                                max_conditions=MAX_CONDITIONS, n_simulations=simulations,
                                seed=seed, cores=cores)
    return table.to_dict("records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(TABLES))
    parser.add_argument("--simulations", type=int, default=100)
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--table", type=Path, help="default: study_app/power_<kind>.json")
    args = parser.parse_args()
    args.table = args.table or TABLES[args.kind]

    wanted = assumptions(args.kind, args.simulations)
    rows: list[dict] = []
    if args.table.exists():
        stored = json.loads(args.table.read_text(encoding="utf-8"))
        if stored.get("assumptions") == wanted:
            rows = stored["rows"]
    grid = [(p, s, m) for p in PARTICIPANTS[args.kind] for s, m in SOURCES_HEARD[args.kind]]
    # Rows of designs no longer in the grid go: the hint reads whole designs.
    rows = [r for r in rows if (r["participants"], r["sources"], r["sources_heard"]) in grid]
    done = {(r["participants"], r["sources"], r["sources_heard"]) for r in rows}
    todo = [design for design in grid if design not in done]
    todo.sort(key=lambda design: design[0] * design[2])  # answers per condition: the cost
    started = time.perf_counter()
    for participants, sources, heard in todo:
        if time.perf_counter() - started > args.budget_minutes * 60:
            print(f"budget spent; {len(todo)} designs were missing at the start", flush=True)
            break
        tick = time.perf_counter()
        rows.extend(design_table(args.kind, participants, sources, heard, args.simulations,
                                 args.cores))
        rows.sort(key=lambda r: (r["participants"], r["sources"], r["sources_heard"],
                                 r.get("accuracy", r.get("shift"))))
        args.table.write_text(json.dumps({"assumptions": wanted, "rows": rows}, indent=1)
                              + "\n", encoding="utf-8")
        print(f"{participants:4d} listeners x {sources:2d} sources, {heard:2d} heard: "
              f"{time.perf_counter() - tick:6.1f} s", flush=True)


if __name__ == "__main__":
    main()
