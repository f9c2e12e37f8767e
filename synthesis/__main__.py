"""Command line: `python -m synthesis generate ...` and `python -m synthesis train-adapter ...`."""

from __future__ import annotations

import argparse
import pathlib
import sys

from synthesis.config import ConfigError, load_config
from synthesis.models import ModelNotFoundError


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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

    train = commands.add_parser("train-adapter", help="train the vit_adapter, MusicGen frozen")
    train.add_argument("--videos", type=pathlib.Path, required=True)
    train.add_argument(
        "--out",
        type=pathlib.Path,
        required=True,
        help="checkpoint folder (adapter-epochNNN.safetensors, loss_log.jsonl)",
    )
    train.add_argument("--config", required=True)
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--device", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        config = load_config(arguments.config)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    if not arguments.videos.is_dir():
        print(f"no such folder: {arguments.videos}", file=sys.stderr)
        return 2
    from synthesis import pipeline

    device = arguments.device or _default_device()
    try:
        if arguments.command == "generate":
            summary = pipeline.generate_set(arguments.videos, arguments.out, config, device)
            print(summary.text())
            return 0 if not summary.manifest_problems else 1
        losses = pipeline.train_adapter_on_videos(
            arguments.videos, arguments.out, config, device, arguments.epochs
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
