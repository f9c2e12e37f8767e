"""Command line: `python -m synthesis generate|train-adapter|train-gan|compare ...`."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from synthesis.config import ConfigError, load_config
from synthesis.models import ModelNotFoundError


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_threads() -> int:
    """CPU threads for torch when --threads is not given.

    One on machines of up to 4 cores (usually shared: more threads there only contend), else
    half the cores, at most 8. Clip bytes do not depend on it (docs/synthesis.md).
    """
    cores = os.cpu_count() or 1
    return 1 if cores <= 4 else min(8, cores // 2)


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: 1 on machines of up to 4 cores, else half the "
        "cores, at most 8)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m synthesis", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="make or complete a stimulus set")
    generate.add_argument(
        "--videos",
        type=pathlib.Path,
        required=True,
        help="folder of videos, or of URMP piece folders",
    )
    generate.add_argument(
        "--out",
        type=pathlib.Path,
        required=True,
        help="the stimulus set folder, e.g. stimuli/my-set",
    )
    generate.add_argument(
        "--config",
        required=True,
        help="config file (.json/.yaml) or a shipped name: tiny, musicgen-small",
    )
    generate.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    _add_threads(generate)

    train = commands.add_parser(
        "train-adapter", help="train the vit_adapter's (or vit_score's) adapter, MusicGen frozen"
    )
    train.add_argument("--videos", type=pathlib.Path, required=True)
    train.add_argument(
        "--out",
        type=pathlib.Path,
        required=True,
        help="checkpoint folder (adapter-epochNNN.safetensors, loss_log.jsonl)",
    )
    train.add_argument("--config", required=True)
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument(
        "--condition",
        choices=["vit_adapter", "vit_score"],
        default="vit_adapter",
        help="whose adapter: vit_adapter (also used by mismatched) or vit_score (melody, "
        "after the score's chroma; needs the videos' scores)",
    )
    train.add_argument("--device", default=None)
    _add_threads(train)

    train_gan = commands.add_parser(
        "train-gan", help="train the gan condition's generator, MusicGen's codec frozen"
    )
    train_gan.add_argument(
        "--videos",
        "--pairs",
        dest="videos",
        type=pathlib.Path,
        required=True,
        help="folder of (video, reference audio) pairs, as for train-adapter",
    )
    train_gan.add_argument(
        "--out",
        type=pathlib.Path,
        required=True,
        help="checkpoint folder (gan-state.pt, gan-generator.safetensors, loss_log.jsonl); "
        "an existing one is resumed",
    )
    train_gan.add_argument("--config", required=True)
    train_gan.add_argument(
        "--steps", type=int, default=None, help="train up to this step (default: gan.steps)"
    )
    train_gan.add_argument("--device", default=None)
    _add_threads(train_gan)

    compare = commands.add_parser(
        "compare", help="objective metrics of conditions of a stimulus set against its references"
    )
    compare.add_argument("--set", dest="set_folder", type=pathlib.Path, required=True)
    compare.add_argument(
        "--conditions", nargs="+", default=["vit_adapter", "gan"], help="conditions to compare"
    )
    compare.add_argument(
        "--out",
        type=pathlib.Path,
        required=True,
        help="folder for comparison.csv, comparison_clips.csv and comparison.json",
    )
    return parser


def _compare(arguments: argparse.Namespace) -> int:
    from synthesis.compare import ComparisonError, compare_conditions

    try:
        table = compare_conditions(arguments.set_folder, arguments.conditions, arguments.out)
    except ComparisonError as error:
        print(f"compare: {error}", file=sys.stderr)
        return 2
    for row in table["summary"]:
        figures = ", ".join(
            f"{key} {value:.3f}" for key, value in row.items() if isinstance(value, float)
        )
        print(f"{row['condition']} ({row['clips']} clips): {figures}")
    print(f"tables in {arguments.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    if arguments.command == "compare":  # reads a finished set: no config, no models
        return _compare(arguments)
    try:
        config = load_config(arguments.config)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    if not arguments.videos.is_dir():
        print(f"no such folder: {arguments.videos}", file=sys.stderr)
        return 2
    threads = arguments.threads if arguments.threads is not None else default_threads()
    if threads < 1:
        print("--threads must be at least 1", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(threads)
    from synthesis import pipeline, training

    device = arguments.device or _default_device()
    try:
        if arguments.command == "generate":
            summary = pipeline.generate_set(arguments.videos, arguments.out, config, device)
            print(summary.text())
            return 0 if not summary.manifest_problems else 1
        if arguments.command == "train-gan":
            records = training.train_gan_on_videos(
                arguments.videos, arguments.out, config, device, arguments.steps
            )
            if not records:
                print(f"no steps to train: {arguments.out} is already at the requested step")
                return 0
            from synthesis.training.gan import training_throughput

            throughput = training_throughput(records)
            speed = f" ({throughput:.2f} segments/s on {device})" if throughput else ""
            print(
                f"GAN trained to step {records[-1]['step']}{speed}: reconstruction loss "
                f"{records[0]['reconstruction']:.4f} -> {records[-1]['reconstruction']:.4f}; "
                f"point gan.checkpoint at {arguments.out / 'gan-generator.safetensors'}"
            )
            return 0
        losses = training.train_adapter_on_videos(
            arguments.videos,
            arguments.out,
            config,
            device,
            arguments.epochs,
            condition=arguments.condition,
        )
        print(
            f"adapter trained: loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
            f"checkpoints in {arguments.out}"
        )
        return 0
    except ModelNotFoundError as error:
        print(f"model not found: {error}", file=sys.stderr)
        return 3
    except ConfigError as error:  # e.g. segments too long for the model, adapter shape mismatch
        print(f"config error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
