"""Benchmark the analysis on a large simulated study, written through the export format.

    .venv/bin/python scripts/bench_analysis.py [--participants 1000] [--trials 120] [--models]

Each participant has 6 headphone-check trials and the rest split evenly between ABX and
emotion-rating trials. Prints the time of each stage; the target is under 20 s for the analysis
(read + report) of 1,000 participants x 120 trials on a 2-core machine. ``--models`` then fits
the mixed models once more on their own and prints where their time goes: R's start-up, the
CSV round trip, and every fit of every ladder (structure, outcome, seconds, whether it started
from the previous fit's estimates).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.load import Export, apply_exclusions, read_export  # noqa: E402
from analysis.report import ReportConfig, start_mixed_models, write_report  # noqa: E402
from analysis.simulate import simulate_export  # noqa: E402

R_LIBRARIES = ("suppressPackageStartupMessages({library(lme4); library(lmerTest); "
               "library(jsonlite)})")


def profile_models(export: Export, config: ReportConfig) -> None:
    """Fit the report's mixed models alone and print where the time goes."""
    started = time.perf_counter()
    subprocess.run(["Rscript", "-e", R_LIBRARIES], check=True)
    startup = time.perf_counter() - started
    kept = apply_exclusions(export.responses, config.exclusions).kept
    started = time.perf_counter()
    with start_mixed_models(kept, config) as pending:
        launched = time.perf_counter() - started
        pending.tables()
    wall = time.perf_counter() - started
    rows = sum(len(job.data) for job in pending.jobs)
    print(f"mixed models alone, one Rscript run with {config.r_cores} workers: {wall:.2f} s wall")
    print(f"  {'R start-up (Rscript, load lme4 lmerTest jsonlite)':<52} {startup:6.2f} s")
    print(f"  {f'jobs built + CSVs written ({rows} rows) + R launched':<52} {launched:6.2f} s")
    for (kind, _, dimension), result in zip(pending.labels, pending.fits, strict=True):
        fit = result[None]
        name = "realism GLMM" if kind == "abx" else f"rating LMM ({dimension})"
        total = sum(float(a.get("seconds") or 0) for a in fit.attempts) if fit else 0.0
        print(f"  {name}: {total:.2f} s in fits")
        for attempt in fit.attempts if fit else []:
            start = ", from previous estimates" if attempt.get("started_from_previous") else ""
            print(f"    {float(attempt.get('seconds') or 0):6.2f} s  {attempt['status']:<14} "
                  f"{attempt['name']}{start}")
            for tried in attempt.get("optimizers_tried") or []:
                # a singular fit's second optimiser (fit_mixed.R, check_singular_fit)
                print(f"      {float(tried.get('seconds') or 0):6.2f} s  {tried['optimizer']:<12} "
                      f"criterion {tried.get('criterion')}, singular {tried.get('singular')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--participants", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=120, help="trials per participant")
    parser.add_argument("--sources", type=int, default=12)
    parser.add_argument("--keep", help="write the export and report here instead of a temp dir")
    parser.add_argument("--models", action="store_true",
                        help="then time the mixed models alone, fit by fit")
    args = parser.parse_args()
    abx = (args.trials - 6) // 2
    ratings = args.trials - 6 - abx

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.keep or scratch)
        timings = {}
        started = time.perf_counter()
        paths = simulate_export(
            folder / "export",
            participants=args.participants,
            abx_trials=abx,
            rating_trials=ratings,
            sources=args.sources,
        )
        timings["simulate + write export"] = time.perf_counter() - started

        started = time.perf_counter()
        export = read_export(*paths)
        timings["read + validate export"] = time.perf_counter() - started

        started = time.perf_counter()
        write_report(export, folder / "report", ReportConfig())
        timings["report (all statistics, html, csv, json)"] = time.perf_counter() - started

    rows = len(export.responses)
    print(
        f"{args.participants} participants x {args.trials} trials = {rows} rows "
        f"({abx} ABX + {ratings} rating + 6 screening per participant)"
    )
    for stage, seconds in timings.items():
        print(f"  {stage:<45} {seconds:7.2f} s")
    analysis = (
        timings["read + validate export"] + timings["report (all statistics, html, csv, json)"]
    )
    print(f"  {'analysis total (read + report)':<45} {analysis:7.2f} s")
    if args.models:
        profile_models(export, ReportConfig())


if __name__ == "__main__":
    main()
