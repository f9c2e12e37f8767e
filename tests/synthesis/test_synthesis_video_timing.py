"""Which frame `sample_video` takes at which time (issue 26, item 1), on generated video whose
every frame shows its own number (`tests/timed_video.py`), so the truth is known exactly.

Sample j of rate r must be the frame whose presentation interval [pts, next pts) holds j / r.
The sampler used to step through frames with the average frame period: inside a gap of a
variable-frame-rate file it took the frame after the gap (up to 2.5 s early here), and on
constant-rate video a sample falling exactly on a frame time was one frame early.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from timed_video import showing_at, shown_number, write_timed_video

from synthesis.video import sample_video

MS = Fraction(1, 1000)
TICK = Fraction(1, 90000)  # phones' and FFmpeg's usual MP4 video time base


def frozen_times(offset: Fraction = Fraction(0)) -> list[Fraction]:
    """25 fps for 2 s, no frames for 2.5 s (a frozen stretch), then 25 fps again to 6 s."""
    before = [Fraction(k, 25) for k in range(51)]  # 0 .. 2.0 s
    after = [Fraction(9, 2) + Fraction(k, 25) for k in range(1, 39)]  # 4.54 .. 6.02 s
    return [offset + time for time in before + after]


def decimated_times(seconds: int = 12, seed: int = 3) -> list[Fraction]:
    """A 30 fps recording after FFmpeg's `mpdecimate`: runs of 1-5 frames kept, then runs of
    0-10 near-duplicates dropped, so gaps of up to 11 frames (0.37 s) at irregular places."""
    rng = np.random.default_rng(seed)
    kept, index = [], 0
    while index < 30 * seconds:
        run = int(rng.integers(1, 6))
        kept += range(index, min(index + run, 30 * seconds))
        index += run + int(rng.integers(0, 11))
    return [Fraction(k, 30) for k in kept]


def check_every_sample(times: list[Fraction], sampled, end: Fraction) -> None:
    """Each sample, at both rates, shows the frame whose interval holds its time; the samples
    run up to the end of the last frame's interval."""
    for images, rate in (
        (sampled.frames, sampled.frame_rate),
        (sampled.motion_frames * 255.0, sampled.motion_rate),
    ):
        step = Fraction(rate)
        assert len(images) == math.ceil(end * step)
        shown = [shown_number(image) for image in images]
        expected = [showing_at(times, index / step) for index in range(len(images))]
        wrong = [
            (float(index / step), float(times[got]), float(times[want]))
            for index, (got, want) in enumerate(zip(shown, expected, strict=True))
            if got != want
        ]
        assert wrong == [], f"{len(wrong)} of {len(images)} samples at {rate} Hz: {wrong[:5]}"


@pytest.mark.parametrize("offset", [Fraction(0), Fraction(1, 2)])
def test_a_frozen_stretch_keeps_showing_the_frame_before_it(tmp_path, offset):
    times = frozen_times(offset)
    video = write_timed_video(tmp_path / "frozen.mp4", times, TICK)
    sampled = sample_video(video, 10.0, 64, 25.0)
    check_every_sample(times, sampled, times[-1] + Fraction(1, 25))
    # inside the stretch every sample is the last frame before it, never the one after it
    inside = sampled.frames[int(10 * (offset + 2)) + 1 : int(10 * (offset + Fraction(9, 2)))]
    assert len(inside) == 24 and {shown_number(image) for image in inside} == {50}
    # a stream starting late: times before its first frame take the first frame
    assert {shown_number(image) for image in sampled.frames[: int(10 * offset)]} <= {0}
    assert sampled.duration == pytest.approx(float(times[-1] + Fraction(1, 25)))


def test_an_mpdecimate_style_file_is_sampled_at_its_frames_own_times(tmp_path):
    times = decimated_times()
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) == Fraction(11, 30)
    video = write_timed_video(tmp_path / "decimated.mp4", times, TICK, rate=30)
    for frame_rate, motion_rate in ((4.0, 25.0), (10.0, 30.0)):  # the shipped rates, and more
        sampled = sample_video(video, frame_rate, 64, motion_rate)
        check_every_sample(times, sampled, times[-1] + Fraction(1, 30))


def test_constant_rate_samples_on_frame_times_take_that_frame(tmp_path):
    """24 fps sampled at 10 Hz: every fifth sample (0.5 s = 12 frames) falls exactly on a frame
    time and must take that frame, not the one before it."""
    times = [Fraction(k, 24) for k in range(338)]  # 14.08 s: 141 samples at 10 Hz
    video = write_timed_video(tmp_path / "cfr.mp4", times, Fraction(1, 24), rate=24, codec="mpeg4")
    sampled = sample_video(video, 10.0, 64, 25.0)
    check_every_sample(times, sampled, Fraction(338, 24))
    assert len(sampled.frames) == 141
    on_frame_times = [shown_number(sampled.frames[j]) for j in range(0, 141, 5)]
    assert on_frame_times == [12 * (j // 5) for j in range(0, 141, 5)]
