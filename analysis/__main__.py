"""Command line: ``python -m analysis report ...`` and ``python -m analysis objective SET``."""

from __future__ import annotations

import argparse
import sys

from analysis.load import ExclusionConfig, ExportError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis")
    commands = parser.add_subparsers(dest="command", required=True)

    report = commands.add_parser("report", help="statistics report from a study export")
    report.add_argument("--responses", required=True)
    report.add_argument("--study", required=True)
    report.add_argument("--out", required=True)
    report.add_argument("--objective", help="per-clip CSV from `python -m analysis objective`")
    report.add_argument("--margin", type=float, default=0.1, help="TOST margin around 0.5")
    report.add_argument("--alpha", type=float, default=0.05)
    report.add_argument("--unit", choices=["source", "segment"], default="source")
    report.add_argument("--n-boot", type=int, default=2000)
    report.add_argument("--n-permutations", type=int, default=2000)
    report.add_argument("--seed", type=int, default=0)
    report.add_argument("--keep-failed-screening", action="store_true")
    report.add_argument("--keep-failed-catch", action="store_true")
    report.add_argument("--keep-too-fast", action="store_true")

    objective = commands.add_parser("objective", help="objective audio metrics of a stimulus set")
    objective.add_argument("set_dir")
    objective.add_argument("--out", required=True)
    objective.add_argument("--embedding", help="module:function mapping (audio, rate) -> vector")
    objective.add_argument("--tagger", help="local path of a Hugging Face audio classifier")

    args = parser.parse_args(argv)
    try:
        if args.command == "report":
            from analysis.report import ReportConfig, report_from_files

            config = ReportConfig(
                exclusions=ExclusionConfig(
                    failed_screening=not args.keep_failed_screening,
                    failed_catch=not args.keep_failed_catch,
                    too_fast=not args.keep_too_fast,
                ),
                equivalence_margin=args.margin, alpha=args.alpha, unit=args.unit,
                n_boot=args.n_boot, n_permutations=args.n_permutations, seed=args.seed,
            )
            summary = report_from_files(args.responses, args.study, args.out, config,
                                        args.objective)
            print(f"wrote {args.out}/report.html, report.json and {len(summary['tables'])} "
                  f"tables in {summary['seconds']} s")
        else:
            from analysis.objective import load_embedding, run_objective

            embedding = load_embedding(args.embedding) if args.embedding else None
            table = run_objective(args.set_dir, args.out, embedding=embedding,
                                  tagger_path=args.tagger)
            print(f"wrote {args.out}/objective.csv and objective.json ({len(table)} clips)")
    except (ExportError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
