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


def make_bowing_video(
    path: pathlib.Path,
    bpm: float,
    seconds: float = 20.0,
    fps: int = 25,
    size: int = 64,
    accent: float = 1.0,
    seed: int = 0,
) -> pathlib.Path:
    """Movement at `bpm`: a bow (bright bar) stroking across the frame once per beat.

    Each stroke is quick (0.12 s) and followed by stillness, alternating direction like down-
    and up-bows, so the motion bursts once per beat while the bar's position repeats only every
    two beats. Up-bows travel `accent` of the way (1: even strokes). A slow sway of a second
    object (0.13 Hz, unrelated to the beat) adds motion that is not the pulse.
    """
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    beat, stroke = 60.0 / bpm, 0.12
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        background = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        for index in range(int(seconds * fps)):
            time = index / fps
            count = int(np.floor(time / beat))
            travel = min(1.0, (time - count * beat) / stroke)
            reach = 1.0 if count % 2 == 0 else accent
            start, end = (0.0, reach) if count % 2 == 0 else (1.0, 1.0 - reach)
            left = int(4 + (size - 28) * (start + (end - start) * travel))
            image = background.copy()
            image[24:40, left : left + 20] = (230, 200, 40)
            sway = int(4 * np.sin(2 * np.pi * 0.13 * time))
            image[8 + sway : 18 + sway, 4:14] = (90, 160, 220)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
    return path


def make_truncated_copy(
    source: pathlib.Path, path: pathlib.Path, keep: float = 0.45
) -> pathlib.Path:
    """`source` remuxed with its index at the start (faststart), then cut after `keep` of it.

    Like a half-copied download: the index still states the full duration.
    """
    whole = path.with_name(path.stem + ".whole" + path.suffix)
    with (
        av.open(str(source)) as reader,
        av.open(str(whole), "w", options={"movflags": "faststart"}) as writer,
    ):
        streams = {s.index: writer.add_stream_from_template(s) for s in reader.streams}
        for packet in reader.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            writer.mux(packet)
    data = whole.read_bytes()
    whole.unlink()
    assert data[4:8] == b"ftyp" and b"moov" in data[:4096]  # the index comes first
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.fixture(scope="session")
def bowing_video_maker():
    """`make_bowing_video`: movement at a known tempo."""
    return make_bowing_video


@pytest.fixture(scope="session")
def truncated_copy_maker():
    """`make_truncated_copy`: an MP4 whose index promises more than the file holds."""
    return make_truncated_copy


@pytest.fixture(scope="session")
def video_maker():
    """`make_video` for tests that need videos of their own."""
    return make_video


@pytest.fixture(scope="session")
def video_folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Two good performance videos (3 s each), each with its score beside it (`<video>.mid`)."""
    folder = tmp_path_factory.mktemp("videos")
    make_video(folder / "perf_a.mp4", seconds=3.0, pulse_hz=2.0, seed=0)
    make_video(folder / "perf_b.mp4", seconds=3.0, pulse_hz=1.5, seed=1)
    # a note on every beat of the 2 Hz / 1.5 Hz pulse, violin and cello, in every segment
    violin = [(69 + k % 3, k / 2, k / 2 + 0.4, 90) for k in range(6)]
    cello = [(48 + k % 4, k / 1.5, k / 1.5 + 0.5, 80) for k in range(5)]
    make_score(folder / "perf_a.mid", [(40, violin)])
    make_score(folder / "perf_b.mid", [(42, cello)])
    return folder


@pytest.fixture
def tiny_config():
    from synthesis.config import load_config

    return load_config("tiny")


# --------------------------------------------------------------------------------------------
# Scores (issue 16)

Note = tuple[int, float, float, int]  # pitch, start s, end s, velocity


def make_score(
    path: pathlib.Path, parts: list[tuple[int, list[Note]]], tempo_bpm: float = 120.0
) -> pathlib.Path:
    """A MIDI score: one instrument per (GM program, notes) part, times in seconds."""
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo_bpm)
    for program, notes in parts:
        instrument = pretty_midi.Instrument(program=program)
        for pitch, start, end, velocity in notes:
            instrument.notes.append(pretty_midi.Note(velocity, pitch, start, end))
        midi.instruments.append(instrument)
    path.parent.mkdir(parents=True, exist_ok=True)
    midi.write(str(path))
    return path


def write_tone_wav(path: pathlib.Path, seconds: float, hz: float, rate: int = 48000) -> None:
    """A mono 16-bit WAV of a sine (URMP's mixes and separated tracks are WAV files)."""
    tone = (0.2 * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(tone[None], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_urmp_piece(
    root: pathlib.Path,
    name: str,
    parts: list[tuple[int, list[Note]]],
    seconds: float = 2.5,
    seed: int = 0,
) -> pathlib.Path:
    """A URMP piece folder `root/name`: silent video, mix, one separated track per part, score."""
    piece = root / name
    make_video(piece / f"Vid_{name}.mp4", seconds=seconds, audio=False, seed=seed)
    write_tone_wav(piece / f"AuMix_{name}.wav", seconds, 220.0 * (seed + 1))
    number, piece_name = name.split("_")[:2]
    codes = name.split("_")[2:]
    for index, code in enumerate(codes[: len(parts)], start=1):
        write_tone_wav(piece / f"AuSep_{index}_{code}_{number}_{piece_name}.wav", seconds, 220.0)
    make_score(piece / f"Sco_{name}.mid", parts)
    return piece


@pytest.fixture(scope="session")
def score_maker():
    """`make_score`: a MIDI score from (program, notes) parts."""
    return make_score


@pytest.fixture(scope="session")
def tone_wav_maker():
    """`write_tone_wav`: a mono 16-bit WAV of a sine."""
    return write_tone_wav


@pytest.fixture(scope="session")
def urmp_maker():
    """`make_urmp_piece`: a URMP-style piece folder with a MIDI score."""
    return make_urmp_piece
