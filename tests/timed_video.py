"""Videos whose every frame shows its own number, written at chosen presentation times (PyAV).

For checking which frame a sampler takes at which time: frame k shows k in binary as a 4 x 4
grid of black and white squares (16 bits, most significant bit top left), which survives lossy
coding and scaling, so `shown_number` reads it back from any sampled frame. A frame's time is
its pts; leaving times out makes a variable-frame-rate file (a frozen stretch, dropped frames).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np

GRID = 4  # squares per side: numbers up to 2**16 - 1


def numbered_image(number: int, size: int = 64) -> np.ndarray:
    """(size, size, 3) uint8 showing `number` as GRID x GRID black (0) and white (1) squares."""
    bits = [(number >> (GRID * GRID - 1 - index)) & 1 for index in range(GRID * GRID)]
    cells = np.array(bits, dtype=np.uint8).reshape(GRID, GRID) * 255
    cell = size // GRID
    return np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)[..., None].repeat(3, axis=2)


def shown_number(image: np.ndarray) -> int:
    """The number a (possibly scaled, gray or RGB) frame of `numbered_image` shows."""
    gray = image.mean(axis=2) if image.ndim == 3 else image
    gray = gray / 255.0 if gray.max() > 1.0 else gray
    cell_rows = np.array_split(np.arange(gray.shape[0]), GRID)
    cell_cols = np.array_split(np.arange(gray.shape[1]), GRID)
    number = 0
    for rows in cell_rows:
        for cols in cell_cols:
            # the cell's middle half: its edges blur into the neighbours after coding
            inner_rows = rows[len(rows) // 4 : len(rows) - len(rows) // 4]
            inner_cols = cols[len(cols) // 4 : len(cols) - len(cols) // 4]
            bit = gray[np.ix_(inner_rows, inner_cols)].mean() > 0.5
            number = (number << 1) | int(bit)
    return number


def write_timed_video(
    path: pathlib.Path,
    times: Sequence[Fraction],
    time_base: Fraction,
    rate: int = 25,
    codec: str = "libx264",
    size: int = 64,
    last_duration: Fraction | None = None,
) -> pathlib.Path:
    """An MP4 whose frame k shows k and is presented at `times[k]` seconds (multiples of
    `time_base`); `rate` is the frame rate the stream states (a phone's nominal 30 fps).
    libx264 by default: B-frames, so the decoder reorders frames, as with phone video.
    `last_duration` is how long the last frame shows (MP4 states it; default: the previous
    frame's step)."""
    ticks = [time / time_base for time in times]
    assert all(tick.denominator == 1 for tick in ticks), "times must be multiples of time_base"
    assert all(a < b for a, b in zip(ticks, ticks[1:], strict=False)), "times must increase"
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        for number, tick in enumerate(ticks):
            frame = av.VideoFrame.from_ndarray(numbered_image(number, size), format="rgb24")
            frame.pts = int(tick)
            frame.time_base = time_base
            if last_duration is not None and number == len(ticks) - 1:
                frame.duration = int(last_duration / time_base)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def showing_at(times: Sequence[Fraction], when: Fraction) -> int:
    """The number of the frame whose presentation interval [times[k], times[k + 1]) holds `when`
    (the first frame for a time before it)."""
    earlier = [index for index, time in enumerate(times) if time <= when]
    return earlier[-1] if earlier else 0
