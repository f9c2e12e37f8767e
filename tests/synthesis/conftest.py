"""Fixtures for the synthesis tests: small generated videos (PyAV) and tiny configs."""

from __future__ import annotations

import fractions
import pathlib

import av
import numpy as np
import pytest
import torch

torch.set_num_threads(2)


def make_video(
    path: pathlib.Path,
    seconds: float = 3.0,
    fps: int = 10,
    size: int = 64,
    audio: bool = True,
    audio_rate: int = 16000,
    pulse_hz: float = 2.0,
    seed: int = 0,
) -> pathlib.Path:
    """An MPEG-4 video of a square bouncing at `pulse_hz`, with plucked tones at the same rate."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        if audio:
            sound = container.add_stream("aac", rate=audio_rate)
            sound.layout = "mono"
        background = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        frame_count = int(seconds * fps)
        for index in range(frame_count):
            image = background.copy()
            phase = np.sin(2 * np.pi * pulse_hz * index / fps)
            top = int((size - 16) * (0.5 + 0.5 * phase))
            image[top : top + 16, size // 4 : size // 4 + 16] = (230, 200, 40)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio:
            samples = int(seconds * audio_rate)
            time = np.arange(samples) / audio_rate
            envelope = np.exp(-8 * ((time * pulse_hz) % 1.0))
            tone = 0.3 * envelope * np.sin(2 * np.pi * (220 + 110 * seed) * time)
            tone += 0.01 * rng.standard_normal(samples)
            chunk = 1024
            for start in range(0, samples, chunk):
                block = tone[start : start + chunk].astype(np.float32)[None]
                frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
                frame.sample_rate = audio_rate
                frame.pts = start
                frame.time_base = fractions.Fraction(1, audio_rate)
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


@pytest.fixture(scope="session")
def video_maker():
    """`make_video` for tests that need videos of their own."""
    return make_video


@pytest.fixture(scope="session")
def video_folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Two good performance videos (3 s each)."""
    folder = tmp_path_factory.mktemp("videos")
    make_video(folder / "perf_a.mp4", seconds=3.0, pulse_hz=2.0, seed=0)
    make_video(folder / "perf_b.mp4", seconds=3.0, pulse_hz=1.5, seed=1)
    return folder


@pytest.fixture
def tiny_config():
    from synthesis.config import load_config

    return load_config("tiny")
