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
    report.add_argument("--lapse-share", type=float,
                        help="share of listeners who may answer at random unflagged; an "
                        "'equivalent' verdict must hold even then (default 0.25, "
                        "sightsound_stats.planning.LAPSE_SHARE; 0: assume all listened)")
    report.add_argument("--alpha", type=float, default=0.05)
    report.add_argument("--unit", choices=["source", "segment"], default="source")
    report.add_argument("--n-boot", type=int, default=2000)
    report.add_argument("--n-permutations", type=int, default=2000)
    report.add_argument("--seed", type=int, default=0)
    report.add_argument("--keep-failed-screening", action="store_true")
    report.add_argument("--keep-failed-catch", action="store_true")
    report.add_argument("--keep-too-fast", action="store_true")
    report.add_argument(
        "--keep-unheard",
        action="store_true",
        help="keep rows the server flags as not listened (flag_unheard, flag_too_quick)",
    )

    objective = commands.add_parser("objective", help="objective audio metrics of a stimulus set")
    objective.add_argument("set_dir")
    objective.add_argument("--out", required=True)
    objective.add_argument(
        "--embedding",
        help="encodec:FOLDER or clap:FOLDER (a local model), or module:function mapping "
        "(audio, rate) -> vector",
    )
    objective.add_argument(
        "--notes",
        action="store_true",
        help="note-level descriptors from basic-pitch (fetched from PyPI if not installed)",
    )
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
                    not_listened=not args.keep_unheard,
                ),
                equivalence_margin=args.margin,
                **({} if args.lapse_share is None else {"lapse_share": args.lapse_share}),
                alpha=args.alpha, unit=args.unit,
                n_boot=args.n_boot, n_permutations=args.n_permutations, seed=args.seed,
            )
            summary = report_from_files(args.responses, args.study, args.out, config,
                                        args.objective)
            print(f"wrote {args.out}/report.html, report.json and {len(summary['tables'])} "
                  f"tables in {summary['seconds']} s")
        else:
            from analysis.objective import load_embedding, run_objective

            embedding = load_embedding(args.embedding) if args.embedding else None
            transcriber = None
            if args.notes:
                from analysis.transcription import BasicPitch

                transcriber = BasicPitch()
            table = run_objective(args.set_dir, args.out, embedding=embedding,
                                  tagger_path=args.tagger, transcriber=transcriber)
            print(f"wrote {args.out}/objective.csv and objective.json ({len(table)} clips)")
            for condition, entry in table.attrs["frechet"].items():
                # MMD first: unbiased at any set size, it is the between-set test to read
                mmd = table.attrs["mmd"][condition]
                print(f"MMD^2 {condition}: {mmd['mmd2']:.3g} (95% {mmd['mmd2_ci_low']:.3g} "
                      f"to {mmd['mmd2_ci_high']:.3g}; permutation p = {mmd['mmd_pval']:.3g}; "
                      f"{mmd['clips']} vs {mmd['reference_clips']} clips)")
                print(f"Frechet distance {condition}: {entry['frechet_distance']:.3g} "
                      f"(bootstrap 95% {entry['frechet_ci_low']:.3g}-"
                      f"{entry['frechet_ci_high']:.3g}; "
                      f"{entry['samples']} vs {entry['reference_samples']} samples, "
                      f"{entry['dimensions']} dimensions"
                      + ("; biased: small-set bias is a large share)" if
                         entry["frechet_bias_warning"] else ")"))
                print(f"FAD-inf {condition}: {entry['fad_inf']:.3g} (95% "
                      f"{entry['fad_inf_ci_low']:.3g} to {entry['fad_inf_ci_high']:.3g}"
                      + (")" if entry["fad_inf_extrapolable"] else
                         "; too few samples to extrapolate)"))
    except (ExportError, OSError, ValueError, RuntimeError) as error:
        # A refused or unreadable export: status 2 and the problems, never a partial report
        # (OSError: a missing or unreadable file; ValueError includes bad JSON and CSV).
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
