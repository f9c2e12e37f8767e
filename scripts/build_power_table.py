"""Simulate the power tables that the study designer's power hints read.

    .venv/bin/python scripts/build_power_table.py realism|ratings [--simulations N]
        [--budget-minutes 60]

For every design of the grid (participants x sources x sources heard per condition), draws
``--simulations`` studies from the mixed model the report fits and refits each with lme4, as
R's simr does: ``realism`` (:func:`analysis.power.glmm_power_table`) stores the share of
studies called distinguishable and called equivalent per true ABX accuracy in
``sightsound_stats/power_realism.json``; ``ratings`` (:func:`analysis.power.lmm_power_table`)
the share whose valence shift against the reference is significant per true shift in
``sightsound_stats/power_ratings.json``. The study app's designer and the report read those
files through :mod:`sightsound_stats.planning` (neither imports the other).

Resumable: designs already in the file (with the same assumptions) are kept, the cheapest
missing ones run first, and the file is rewritten after each design, so a run cut short by
``--budget-minutes`` leaves a smaller, still valid table. Every design uses its own seed
(derived from its numbers), so a row can be recomputed on its own and must come out the same
(tests/analysis/test_analysis_power.py does that for one row of each table).

The lme4 fits of every design are kept in ``.cache/power/<kind>/`` (not in git), and each
simulated study's estimates (realism: each condition's logit, SE and df; ratings: each
shift's estimate, SE and df; all the verdicts read) in ``sightsound_stats/power_estimates/``
(in git, a few kB per design): when only the verdict rules change (the margin, the lapse
share), ``--refresh`` recomputes every stored row from them in seconds instead of refitting
for hours, on any machine; ``--lapse-share`` sets the share the equivalence verdicts must
survive (``--shares 0.15,0.2,0.25`` prints the false
"equivalent" of every stored design at each, to choose it by simulation). ``--inattentive``
simulates the same designs with 15 % unflagged random responders and 20 % of listeners
stopping halfway into ``sightsound_stats/power_realism_inattentive.json`` (the docs' table;
nothing reads it).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.calibration import CalibrationDesign  # noqa: E402
from analysis.power import (  # noqa: E402
    PLANNING_ACCURACIES,
    PLANNING_SHIFTS,
    glmm_power_rows_from_estimates,
    lmm_power_rows_from_estimates,
    rating_estimates,
    rating_planning_fits,
    rating_truth,
    realism_estimates,
    realism_planning_fits,
    realism_truth,
)
from sightsound_stats import planning  # noqa: E402
from sightsound_stats.planning import LAPSE_SHARE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TABLES = planning.TABLES
INATTENTIVE_TABLE = ROOT / "sightsound_stats" / "power_realism_inattentive.json"
CACHE = ROOT / ".cache" / "power"
ESTIMATES = ROOT / "sightsound_stats" / "power_estimates"
# The inattention of issue 21: listeners who pass every screen but answer at random, and
# listeners who stop halfway.
INATTENTION = {"random_responder_share": 0.15, "dropout_share": 0.2}
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
# Studies per design. The rating fits are cheap (0.1-0.25 s per study on one core), so their
# table has twice the Monte Carlo precision: at 200 a single cell's coverage of 90.5 % (80 x 16
# x 4) was Monte Carlo noise (docs/analysis.md, Ratings table).
SIMULATIONS = {"realism": 200, "ratings": 400}
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


def assumptions(kind: str, simulations: int, inattentive: bool = False,
                lapse_share: float = LAPSE_SHARE) -> dict:
    """What every row was simulated under; a file with other assumptions is started afresh."""
    defaults = asdict(CalibrationDesign())
    variance = {name.removeprefix("rating_"): defaults[name] for name in VARIANCE_FIELDS[kind]}
    if kind == "realism":
        stated = {
            "model": "correct ~ 0 + condition + crossed random effects (the report's ladder), "
                     "fitted by lme4::glmer",
            "inference": "Wald t on the logit, df = min(Welch-Satterthwaite, sources - 1); "
                         f"equivalence robust to {lapse_share:.0%} random responders",
            "variance_sd_logit": variance,
            "accuracies": list(PLANNING_ACCURACIES),
            "equivalence_margin": MARGIN,
            "lapse_share": lapse_share,
            "alpha": ALPHA,
            "max_conditions": MAX_CONDITIONS,
            "simulations_per_design": simulations,
            "repeats": 1,
        }
        if inattentive:
            stated["inattention"] = INATTENTION
        return stated
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


def fits_path(kind: str, participants: int, sources: int, heard: int, simulations: int,
              inattentive: bool = False, cache: Path = CACHE) -> Path:
    """One design's pickled fits in the cache (not in git)."""
    suffix = "_inattentive" if inattentive else ""
    return cache / kind / f"{participants}_{sources}_{heard}_{simulations}{suffix}.pkl"


def design_fits(kind: str, participants: int, sources: int, heard: int, simulations: int,
                cores: int = 2, inattentive: bool = False, cache: Path | None = CACHE):
    """``(truth, conditions, fits)`` of one design: from the cache, or simulated with the
    design's own seed, fitted and then stored in the cache."""
    seed = design_seed(participants, sources, heard, 1)
    path = (fits_path(kind, participants, sources, heard, simulations, inattentive, cache)
            if cache is not None else None)
    if path is not None and path.exists():
        return pickle.loads(path.read_bytes())
    extra = INATTENTION if inattentive else {}
    if kind == "realism":
        fitted = realism_planning_fits(participants, sources, heard, repeats=1,
                                       n_simulations=simulations, seed=seed, cores=cores,
                                       **extra)
    else:
        fitted = rating_planning_fits(participants, sources, heard, n_simulations=simulations,
                                      seed=seed, cores=cores)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(fitted))
    return fitted


def estimates_folder(kind: str, inattentive: bool = False, root: Path = ESTIMATES) -> Path:
    """Where a table's per-study estimates are kept (gzip'd CSV, in git)."""
    return root / (f"{kind}_inattentive" if inattentive else kind)


def estimates_path(kind: str, participants: int, sources: int, heard: int, simulations: int,
                   inattentive: bool = False, root: Path = ESTIMATES) -> Path:
    """One design's file in :func:`estimates_folder`."""
    return (estimates_folder(kind, inattentive, root)
            / f"{participants}x{sources}x{heard}_{simulations}.csv.gz")


def design_estimates(kind: str, participants: int, sources: int, heard: int, simulations: int,
                     cores: int = 2, inattentive: bool = False, cache: Path | None = CACHE,
                     root: Path | None = ESTIMATES) -> pd.DataFrame:
    """One design's per-study estimates (realism: each condition's logit, SE and df; ratings:
    each shift's estimate, SE and df): stored under ``root``, else from its fits
    (:func:`design_fits`), then stored (``root=None``: from the fits, not stored). The file
    is byte-for-byte reproducible (gzip without a time stamp, floats written exactly, so
    reading it back gives the very numbers the fits gave)."""
    path = (estimates_path(kind, participants, sources, heard, simulations, inattentive, root)
            if root is not None else None)
    if path is not None and path.exists():
        return pd.read_csv(path)
    _, conditions, fits = design_fits(kind, participants, sources, heard, simulations,
                                      cores, inattentive, cache)
    estimates = (realism_estimates if kind == "realism" else rating_estimates)(conditions, fits)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        estimates.to_csv(path, index=False, compression={"method": "gzip", "mtime": 0})
        estimates = pd.read_csv(path)  # the numbers as every later refresh will read them
    return estimates


def design_table(kind: str, participants: int, sources: int, heard: int,
                 simulations: int, cores: int = 2, inattentive: bool = False,
                 cache: Path | None = CACHE, lapse_share: float = LAPSE_SHARE,
                 estimates_root: Path | None = ESTIMATES) -> list[dict]:
    """The rows of one design, simulated with that design's own seed (or read from its stored
    estimates under ``estimates_root`` or its cached fits), the verdicts by today's rules."""
    estimates = design_estimates(kind, participants, sources, heard, simulations, cores,
                                 inattentive, cache, estimates_root)
    if kind == "realism":
        rows = glmm_power_rows_from_estimates(realism_truth(PLANNING_ACCURACIES), estimates,
                                              simulations, MARGIN, ALPHA, MAX_CONDITIONS,
                                              lapse_share)
    else:
        rows = lmm_power_rows_from_estimates(rating_truth(PLANNING_SHIFTS), estimates,
                                             simulations, ALPHA, MAX_CONDITIONS)
    design = {"participants": participants, "sources": sources, "sources_heard": heard}
    if kind == "realism":
        design["repeats"] = 1
    return [{**design, **row} for row in rows.to_dict("records")]


def false_equivalent_by_share(shares: list[float], simulations: int,
                              inattentive: bool) -> str:
    """Per stored design, the false "equivalent" at accuracy 0.6 under each lapse share, and
    pooled: the evidence for choosing ``--lapse-share`` by simulation."""
    truth = realism_truth(PLANNING_ACCURACIES)
    folder = estimates_folder("realism", inattentive)
    lines = ["| listeners x sources x heard | studies | "
             + " | ".join(f"s = {s:g}" for s in shares) + " |",
             "|---|---|" + "---|" * len(shares)]
    pooled: dict[float, list[float]] = {s: [] for s in shares}
    paths = sorted(folder.glob(f"*_{simulations}.csv.gz"),
                   key=lambda p: tuple(int(n) for n in p.name.split("_")[0].split("x")))
    for path in paths:
        estimates = pd.read_csv(path)
        cells = []
        for share in shares:
            rows = glmm_power_rows_from_estimates(truth, estimates, simulations, MARGIN, ALPHA,
                                                  1, share)
            value = float(rows.loc[rows["accuracy"] == 0.6, "equivalent_1"].iloc[0])
            pooled[share].append(value)
            cells.append(f"{100 * value:.1f} %")
        name = path.name.split("_")[0].replace("x", " x ")
        lines.append(f"| {name} | {estimates['study'].nunique()} | " + " | ".join(cells) + " |")
    lines.append("| pooled (worst) | | " + " | ".join(
        f"{100 * sum(v) / max(len(v), 1):.1f} % ({100 * max(v, default=0):.1f} %)"
        for v in pooled.values()) + " |")
    return "\n".join(lines)


def markdown(table: dict, kind: str) -> str:
    """Per design: its error rates, coverage and whether :mod:`sightsound_stats.planning`
    calls its verdicts calibrated; then the pooled rates (the docs' tables)."""
    designs = sorted({(r["participants"], r["sources"], r["sources_heard"])
                      for r in table["rows"]})
    if kind == "realism":
        lines = ["| listeners x sources x heard | studies | detect 0.6 / 0.7 | 'equivalent' at "
                 "0.5 | false 'distinguishable' at 0.5 | "
                 "false 'equivalent' at 0.6 (lapse-robust) | same, if all listened | "
                 "coverage 0.5 / 0.6 / 0.7 | lapse-widened coverage | verdicts |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
    else:
        lines = ["| listeners x sources x heard | studies | detect 0.5 / 1.0 | false shift at 0 | "
                 "coverage 0 / 0.5 / 1 | verdicts |", "|---|---|---|---|---|---|"]
    pooled: dict[str, list[float]] = {}
    for design in designs:
        rows = [r for r in table["rows"]
                if (r["participants"], r["sources"], r["sources_heard"]) == design]
        if "inattention" in table["assumptions"]:
            # With random responders in the data, the interval that must cover the attentive
            # listeners' accuracy is the lapse-widened one.
            problems = planning.design_problems(
                [{**r, "coverage": r["coverage_lapses"]} for r in rows], kind)
        else:
            problems = planning.design_problems(rows, kind)
        status = "calibrated" if not problems else "exploratory: " + "; ".join(problems)
        coverage = " / ".join(f"{100 * r['coverage']:.1f}" for r in rows)
        name = " x ".join(str(n) for n in design)
        if kind == "realism":
            at = {r["accuracy"]: r for r in rows}
            cells = [at[0.5]["distinguishable_1"], at[0.6]["equivalent_1"],
                     at[0.6]["equivalent_all_listened_1"]]
            for key, value in zip(("distinguishable", "equivalent", "equivalent_all"), cells,
                                  strict=True):
                pooled.setdefault(key, []).append(value)
            pooled.setdefault("coverage", []).extend(r["coverage"] for r in rows)
            lapses = " / ".join(f"{100 * r['coverage_lapses']:.1f}" for r in rows)
            power = (f"{100 * at[0.6]['distinguishable_1']:.0f} / "
                     f"{100 * at[0.7]['distinguishable_1']:.0f} % | "
                     f"{100 * at[0.5]['equivalent_1']:.0f} %")
            lines.append(f"| {name} | {rows[0]['simulations']} | {power} | "
                         + " | ".join(f"{100 * c:.1f} %" for c in cells)
                         + f" | {coverage} | {lapses} | {status} |")
        else:
            at = {r["shift"]: r for r in rows}
            pooled.setdefault("shifted", []).append(at[0.0]["shifted_1"])
            pooled.setdefault("coverage", []).extend(r["coverage"] for r in rows)
            power = (f"{100 * at[0.5]['shifted_1']:.0f} / {100 * at[1.0]['shifted_1']:.0f} %")
            lines.append(f"| {name} | {rows[0]['simulations']} | {power} | "
                         f"{100 * at[0.0]['shifted_1']:.1f} % | {coverage} | {status} |")
    lines.append("")
    lines.append("Pooled over the designs above: " + ", ".join(
        f"{key} {100 * sum(values) / len(values):.1f} % (worst "
        f"{100 * (min(values) if key == 'coverage' else max(values)):.1f} %)"
        for key, values in pooled.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(TABLES))
    parser.add_argument("--simulations", type=int,
                        help="studies per design (default: realism 200, ratings 400)")
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--table", type=Path, help="default: sightsound_stats/power_<kind>.json")
    parser.add_argument("--inattentive", action="store_true",
                        help="realism only: 15 %% random responders, 20 %% dropout")
    parser.add_argument("--refresh", action="store_true",
                        help="recompute the stored rows from the cached fits first")
    parser.add_argument("--designs", help="only these, e.g. 40x8x4,160x32x8")
    parser.add_argument("--markdown", action="store_true",
                        help="print the table's calibration summary for docs/analysis.md and stop")
    parser.add_argument("--backfill", action="store_true",
                        help="store the estimates of designs already in the table "
                        "(refitted from their seeds; rows that come out otherwise are replaced "
                        "and every moved cell printed)")
    parser.add_argument("--lapse-share", type=float, default=LAPSE_SHARE,
                        help="realism: the share of random responders 'equivalent' must survive")
    parser.add_argument("--shares", help="realism: print the false 'equivalent' at 0.6 of "
                        "every design with stored estimates at these lapse shares (e.g. "
                        "0.15,0.2) and stop")
    args = parser.parse_args()
    args.simulations = args.simulations or SIMULATIONS[args.kind]
    if args.inattentive and args.kind != "realism":
        parser.error("--inattentive is for the realism table")
    args.table = args.table or (INATTENTIVE_TABLE if args.inattentive else TABLES[args.kind])

    if args.shares:
        print(false_equivalent_by_share([float(v) for v in args.shares.split(",")],
                                        args.simulations, args.inattentive))
        return
    if args.markdown:
        print(markdown(json.loads(args.table.read_text(encoding="utf-8")), args.kind))
        return
    wanted = assumptions(args.kind, args.simulations, args.inattentive, args.lapse_share)
    rows: list[dict] = []
    if args.table.exists():
        stored = json.loads(args.table.read_text(encoding="utf-8"))
        if stored.get("assumptions") == wanted or args.refresh:
            rows = stored["rows"]
    grid = [(p, s, m) for p in PARTICIPANTS[args.kind] for s, m in SOURCES_HEARD[args.kind]]
    if args.designs:
        chosen = {tuple(int(n) for n in d.split("x")) for d in args.designs.split(",")}
        grid = [d for d in grid if d in chosen]
    if args.refresh:
        # Recomputed from the stored estimates or the cached fits; a design without either
        # goes (it is simulated again below).
        kept = []
        for design in sorted({(r["participants"], r["sources"], r["sources_heard"])
                              for r in rows}):
            found = (path(args.kind, *design, args.simulations, args.inattentive).exists()
                     for path in (estimates_path, fits_path))
            if any(found):
                kept.extend(design_table(args.kind, *design, args.simulations, args.cores,
                                         args.inattentive, lapse_share=args.lapse_share))
        rows = kept
    # Rows of designs no longer in the grid go: the hint reads whole designs.
    full_grid = [(p, s, m) for p in PARTICIPANTS[args.kind] for s, m in SOURCES_HEARD[args.kind]]
    rows = [r for r in rows if (r["participants"], r["sources"], r["sources_heard"]) in full_grid]
    done = {(r["participants"], r["sources"], r["sources_heard"]) for r in rows}
    todo = [design for design in grid if design not in done]
    todo.sort(key=lambda design: design[0] * design[2])  # answers per condition: the cost

    def write() -> None:
        rows.sort(key=lambda r: (r["participants"], r["sources"], r["sources_heard"],
                                 r.get("accuracy", r.get("shift"))))
        args.table.write_text(json.dumps({"assumptions": wanted, "rows": rows}, indent=1)
                              + "\n", encoding="utf-8")

    write()
    started = time.perf_counter()
    if args.backfill:
        # Rows stored before the estimates were kept may come from an older version of the
        # fitting code (the ladder changed while the tables were built): the refit under
        # today's code replaces them, and every cell that moved is printed.
        missing = sorted((d for d in done if d in grid and not estimates_path(
            args.kind, *d, args.simulations, args.inattentive).exists()),
            key=lambda d: d[0] * d[2])
        for design in missing:
            if time.perf_counter() - started > args.budget_minutes * 60:
                break
            tick = time.perf_counter()
            stored = [r for r in rows
                      if (r["participants"], r["sources"], r["sources_heard"]) == design]
            again = design_table(args.kind, *design, args.simulations, args.cores,
                                 args.inattentive, lapse_share=args.lapse_share)
            moved = [f"{before.get('accuracy', before.get('shift'))} {key} {before.get(key)}"
                     f" -> {after[key]}"
                     for before, after in zip(stored, again, strict=True) for key in after
                     if before.get(key) != after[key]]
            outcome = "the rows as stored" if not moved else "rows moved: " + "; ".join(moved)
            print(f"{' x '.join(map(str, design))}: estimates stored, {outcome} "
                  f"({time.perf_counter() - tick:.1f} s)", flush=True)
            rows[:] = [r for r in rows if r not in stored] + again
            write()
        todo = []
    for participants, sources, heard in todo:
        if time.perf_counter() - started > args.budget_minutes * 60:
            print(f"budget spent; {len(todo)} designs were missing at the start", flush=True)
            break
        tick = time.perf_counter()
        rows.extend(design_table(args.kind, participants, sources, heard, args.simulations,
                                 args.cores, args.inattentive, lapse_share=args.lapse_share))
        write()
        print(f"{participants:4d} listeners x {sources:2d} sources, {heard:2d} heard: "
              f"{time.perf_counter() - tick:6.1f} s", flush=True)


if __name__ == "__main__":
    main()
