"""Benchmark the analysis on a large simulated study, written through the export format.

    .venv/bin/python scripts/bench_analysis.py [--participants 1000] [--trials 120]

Each participant has 6 headphone-check trials and the rest split evenly between ABX and
emotion-rating trials. Prints the time of each stage; the target is under 60 s in total for
1,000 participants x 120 trials on a 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.load import read_export  # noqa: E402
from analysis.report import ReportConfig, write_report  # noqa: E402
from analysis.simulate import simulate_export  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--participants", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=120, help="trials per participant")
    parser.add_argument("--sources", type=int, default=12)
    parser.add_argument("--keep", help="write the export and report here instead of a temp dir")
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


if __name__ == "__main__":
    main()
