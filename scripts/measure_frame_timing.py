"""Measures how far the frames `sample_video` takes are from the frames showing at their times.

Writes three generated videos whose every frame shows its own number (`tests/timed_video.py`,
the files the tests use), samples them as the pipeline does, and prints per file and rate: the
samples, how many took the wrong frame, and the max and mean |time of the frame taken - time
of the frame showing| in seconds (a positive max_early: a later frame, i.e. content shown early).

    python scripts/measure_frame_timing.py
    git show <commit>:synthesis/video.py > /tmp/old_video.py
    python scripts/measure_frame_timing.py --video-module /tmp/old_video.py   # another version

docs/synthesis.md (Ingest) has the figures, before and after issue 26.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "synthesis")]

from test_synthesis_video_timing import TICK, decimated_times, frozen_times  # noqa: E402
from timed_video import showing_at, shown_number, write_timed_video  # noqa: E402


def load_sampler(module: Path | None) -> Callable:
    """`sample_video` from synthesis.video, or from another copy of that file."""
    if module is None:
        from synthesis.video import sample_video

        return sample_video
    spec = importlib.util.spec_from_file_location("other_video", module)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules["other_video"] = loaded  # dataclasses look their module up
    spec.loader.exec_module(loaded)
    return loaded.sample_video


def errors(times: list[Fraction], images, rate: float) -> tuple[int, int, float, float, float]:
    """(samples, wrong, max |error|, mean |error|, max early) of one sampled sequence."""
    step = Fraction(rate)
    signed = [
        float(times[shown_number(image)] - times[showing_at(times, index / step)])
        for index, image in enumerate(images)
    ]
    absolute = [abs(value) for value in signed]
    wrong = sum(value != 0 for value in signed)
    return len(signed), wrong, max(absolute), sum(absolute) / len(absolute), max(signed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video-module", type=Path, help="another synthesis/video.py to measure")
    args = parser.parse_args()
    sample_video = load_sampler(args.video_module)
    with tempfile.TemporaryDirectory() as folder:
        cfr = [Fraction(k, 24) for k in range(338)]
        videos = [
            ("frozen 2.5 s (25 fps)", frozen_times(), TICK, 25, "libx264"),
            ("mpdecimate (30 fps)", decimated_times(), TICK, 30, "libx264"),
            ("constant 24 fps", cfr, Fraction(1, 24), 24, "mpeg4"),
        ]
        print("file                   rate Hz  samples  wrong  max_err_s  mean_err_s  max_early_s")
        for index, (name, times, time_base, rate, codec) in enumerate(videos):
            path = write_timed_video(
                Path(folder) / f"{index}.mp4", times, time_base, rate=rate, codec=codec
            )
            sampled = sample_video(path, 10.0, 64, 25.0)
            shipped = sample_video(path, 4.0, 64, 25.0)  # musicgen-small's rates
            for images, sample_rate in (
                (shipped.frames, 4.0),
                (sampled.frames, 10.0),
                (sampled.motion_frames * 255.0, 25.0),
            ):
                count, wrong, largest, mean, early = errors(times, images, sample_rate)
                print(
                    f"{name:22} {sample_rate:7g}  {count:7d}  {wrong:5d}  {largest:9.3f}  "
                    f"{mean:10.4f}  {early:11.3f}"
                )


if __name__ == "__main__":
    main()
