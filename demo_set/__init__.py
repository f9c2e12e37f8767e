"""Owns the synthetic demo stimulus set, made entirely from code (no downloads, no models).

It lives outside the web package (study_app), which only imports it lazily for
`flask demo-setup`; it uses the app's WAV helpers (study_app.audio).

Why: the app, its tests and a researcher trying SightSound out need a valid stimulus set that
exercises everything (sources with muted videos, segments, a reference and several conditions of
identical format and loudness) long before any real synthesis system exists. The material is
marked `fit_for_studies: false`: it is for smoke tests and demos, never for data collection.

Each source is a short melody designed to carry one emotion (tempo, mode, register, dynamics),
rendered with a harmonic plucked-string timbre (the `reference`), plus a muted video of a pulsing
"performer" that flashes at every note onset, so the video carries the tempo. The conditions are
named for how they are made:

- `sine_resynthesis`: the same notes as pure sine tones (right notes, wrong timbre);
- `shuffled_notes`: the reference timbre with the notes in a seeded random order;
- `mismatched`: another source's reference audio (source i gets source i+1's).

Every clip has the same number of frames (44100 Hz, mono), the same 10 ms fades, and an
integrated loudness of -23 LUFS (EBU R 128), measured with pyloudnorm after 16-bit quantization.

Usage: `python -m demo_set OUT_DIR [--n-sources N] [--duration S] [--seed K]`.
"""

from __future__ import annotations

import argparse
import colorsys
import hashlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyloudnorm

from study_app.audio import read_wav_samples, write_wav

__all__ = ["CONDITIONS", "SAMPLE_RATE", "VIDEO_CODEC", "build_demo_set", "main"]

SAMPLE_RATE = 44100
LOUDNESS_TARGET_LUFS = -23.0
FADE_S = 0.010
CONDITIONS = ("reference", "sine_resynthesis", "shuffled_notes", "mismatched")
VIDEO_SIZE = (320, 240)
VIDEO_FPS = 25

_MIN_NOTES = 6
_MODES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
}


@dataclass(frozen=True)
class _Design:
    """What a melody is built to express: the musical cues of Juslin & Laukka (2003)."""

    name: str
    piece: str
    label: str
    valence: float  # 1-9 (SAM scale)
    arousal: float  # 1-9
    tempo_bpm: float
    tonic_midi: int
    mode: str
    beats: tuple[float, ...]  # note lengths to choose from, in beats
    velocity: float  # 0-1
    decay_s: float  # pluck decay time constant of the fundamental
    brightness: float  # pluck position: smaller is brighter


_DESIGNS = (
    _Design(
        name="bright",
        piece="Allegretto in C major",
        label="happy",
        valence=7.5,
        arousal=7.0,
        tempo_bpm=152,
        tonic_midi=72,
        mode="major",
        beats=(0.5, 0.5, 1.0),
        velocity=0.9,
        decay_s=0.35,
        brightness=0.12,
    ),
    _Design(
        name="lament",
        piece="Lament in A minor",
        label="sad",
        valence=2.5,
        arousal=2.5,
        tempo_bpm=60,
        tonic_midi=57,
        mode="minor",
        beats=(1.0, 1.5, 2.0),
        velocity=0.45,
        decay_s=1.2,
        brightness=0.3,
    ),
    _Design(
        name="lullaby",
        piece="Berceuse in F major",
        label="tender",
        valence=7.0,
        arousal=3.0,
        tempo_bpm=84,
        tonic_midi=65,
        mode="major",
        beats=(1.0, 1.0, 2.0),
        velocity=0.5,
        decay_s=0.9,
        brightness=0.25,
    ),
    _Design(
        name="toccata",
        piece="Toccata in E phrygian",
        label="angry",
        valence=2.5,
        arousal=8.0,
        tempo_bpm=168,
        tonic_midi=52,
        mode="phrygian",
        beats=(0.5, 0.5, 0.25, 0.25),
        velocity=1.0,
        decay_s=0.25,
        brightness=0.08,
    ),
)


@dataclass(frozen=True)
class _Note:
    onset: float  # seconds
    length: float  # seconds until the next note
    midi: int
    velocity: float


def _code_version() -> str:
    try:
        from importlib.metadata import version

        return version("sightsound")
    except Exception:  # not installed: the demo builder still works from a checkout
        return "demo"


def _design(index: int) -> tuple[_Design, str]:
    """Design for source `index`; beyond the four designs, transposed variations of them."""
    base = _DESIGNS[index % len(_DESIGNS)]
    cycle = index // len(_DESIGNS)
    if cycle == 0:
        return base, base.piece
    shift = (5 * cycle) % 12 - 6 if cycle % 2 else (7 * cycle) % 12 - 6
    varied = replace(
        base, tonic_midi=base.tonic_midi + shift, tempo_bpm=base.tempo_bpm * (1 + 0.05 * cycle)
    )
    return varied, f"{base.piece} (variation {cycle})"


def _melody(design: _Design, duration: float, rng: np.random.Generator) -> list[_Note]:
    """A random walk on the mode's scale, with the design's rhythm and dynamics.

    At least `_MIN_NOTES` notes even when fewer fit into `duration` (the rest are cut off), so
    that a shuffled order always has other notes to bring in.
    """
    scale = _MODES[design.mode]
    beat = 60.0 / design.tempo_bpm
    notes: list[_Note] = []
    degree, t, count = 0, 0.0, 0
    while t < duration or count < _MIN_NOTES:
        length = float(rng.choice(design.beats)) * beat
        octave, step = divmod(degree, len(scale))
        midi = design.tonic_midi + 12 * octave + scale[step]
        accent = 1.0 if count % 4 == 0 else 0.8
        velocity = design.velocity * accent * float(rng.uniform(0.9, 1.0))
        notes.append(_Note(t, length, midi, velocity))
        degree = int(np.clip(degree + rng.choice([-2, -1, -1, 1, 1, 2, 3]), -2, 9))
        t += length
        count += 1
    return notes


def _pitch_track(notes: list[_Note], times: np.ndarray) -> np.ndarray:
    onsets = np.array([n.onset for n in notes])
    pitches = np.array([n.midi for n in notes])
    return pitches[np.searchsorted(onsets, times, side="right") - 1]


def _laid_out(notes: list[_Note], order: np.ndarray) -> list[_Note]:
    out, t = [], 0.0
    for i in order:
        n = notes[int(i)]
        out.append(_Note(t, n.length, n.midi, n.velocity))
        t += n.length
    return out


def _shuffled(notes: list[_Note], duration: float, rng: np.random.Generator) -> list[_Note]:
    """The same notes (pitch, length, velocity) in a random order, laid end to end.

    Of 64 seeded random orders, the one that least often sounds the original's pitch at the same
    moment: a random walk repeats pitches, and an order that happens to keep much of the melody in
    place would make a weak control.
    """
    times = np.arange(0.0, duration, 0.01)
    original = _pitch_track(notes, times)
    best, best_overlap = notes, 2.0
    for _ in range(64):
        candidate = _laid_out(notes, rng.permutation(len(notes)))
        overlap = float(np.mean(_pitch_track(candidate, times) == original))
        if overlap < best_overlap:
            best, best_overlap = candidate, overlap
        if overlap == 0.0:
            break
    return best


def _hz(midi: int) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _render(notes: list[_Note], frames: int, design: _Design, timbre: str) -> np.ndarray:
    """Additive synthesis of `notes` into `frames` samples (unnormalized).

    Sine tones start in cosine phase (90 degrees from the pluck's sine partials): a resynthesis
    from pitches does not know the original phase, and a phase-locked copy would share much of
    the reference's waveform, which hides how different the two sound.
    """
    out = np.zeros(frames)
    for note in notes:
        start = int(round(note.onset * SAMPLE_RATE))
        if start >= frames:
            break
        f0 = _hz(note.midi)
        # A plucked string rings a little past the next onset; a sine tone stops at it.
        ring = note.length + 0.08 if timbre == "pluck" else note.length
        n = min(int(round(ring * SAMPLE_RATE)), frames - start)
        t = np.arange(n) / SAMPLE_RATE
        tone = np.zeros(n)
        if timbre == "pluck":
            harmonics = min(16, int(0.45 * SAMPLE_RATE / f0))
            for k in range(1, harmonics + 1):
                amp = abs(np.sin(np.pi * k * design.brightness)) / k
                decay = design.decay_s / (1 + 0.5 * (k - 1))
                tone += amp * np.exp(-t / decay) * np.sin(2 * np.pi * k * f0 * t)
            attack = 0.003
        else:  # sine: a steady tone, no harmonics, no pluck decay
            tone = np.cos(2 * np.pi * f0 * t)
            attack = 0.015
        env = np.minimum(1.0, t / attack)
        release = min(0.03, ring / 3)
        env *= np.clip((ring - t) / release, 0.0, 1.0)
        out[start : start + n] += note.velocity * env * tone
    return out


def _finish(signal: np.ndarray) -> np.ndarray:
    """10 ms half-cosine fades, then a gain to -23 LUFS integrated loudness."""
    fade = int(round(FADE_S * SAMPLE_RATE))
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    signal = signal.copy()
    signal[:fade] *= ramp
    signal[-fade:] *= ramp[::-1]
    loudness = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(signal)
    signal *= 10.0 ** ((LOUDNESS_TARGET_LUFS - loudness) / 20.0)
    peak = float(np.max(np.abs(signal)))
    if peak > 0.99:
        raise RuntimeError(f"demo clip would clip at -23 LUFS (peak {peak:.3f})")
    return signal


def _write_clip(path: Path, signal: np.ndarray) -> tuple[str, float]:
    """Write a clip; its sha256 and the loudness measured on the written (16-bit) samples."""
    write_wav(path, signal, SAMPLE_RATE)
    samples, _ = read_wav_samples(path)
    loudness = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(samples[:, 0].astype(np.float64))
    return hashlib.sha256(path.read_bytes()).hexdigest(), round(float(loudness), 3)


def _video_codec() -> tuple[str, str, str]:
    """(codec, container format, extension): H.264/MP4 if PyAV can encode it, else VP9/VP8 WebM."""
    for codec, fmt, ext in (
        ("libx264", "mp4", ".mp4"),
        ("libopenh264", "mp4", ".mp4"),
        ("libvpx-vp9", "webm", ".webm"),
        ("libvpx", "webm", ".webm"),
    ):
        try:
            av.codec.Codec(codec, "w")
        except Exception:  # the codec is not compiled into this PyAV build
            continue
        return codec, fmt, ext
    raise RuntimeError("PyAV has none of libx264, libopenh264, libvpx-vp9, libvpx")


VIDEO_CODEC = _video_codec()


def _visual_features(notes: list[_Note], frames: int) -> tuple[list[float], list[float]]:
    """Per video frame: onset pulse (decays after each onset) and the sounding note's velocity."""
    pulse, intensity = [], []
    for j in range(frames):
        t = j / VIDEO_FPS
        current = next((n for n in reversed(notes) if n.onset <= t + 1e-9), notes[0])
        pulse.append(round(float(np.exp(-(t - current.onset) / 0.12)), 4))
        intensity.append(round(current.velocity, 4))
    return pulse, intensity


def _write_video(path: Path, notes: list[_Note], frames: int, design: _Design) -> None:
    """A muted video (no audio stream): a disc that swells and flashes at every note onset.

    Its height follows the pitch and its hue the pitch class, so the picture carries the melody's
    tempo, register and dynamics, as a performer's movements would.
    """
    codec, fmt, _ = VIDEO_CODEC
    width, height = VIDEO_SIZE
    yy, xx = np.mgrid[0:height, 0:width]
    pulse, _ = _visual_features(notes, frames)
    options = {"movflags": "+faststart"} if fmt == "mp4" else {}
    with av.open(str(path), mode="w", format=fmt, options=options) as container:
        stream = container.add_stream(codec, rate=VIDEO_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, VIDEO_FPS)
        # One thread and fixed settings, so the same input gives the same bytes.
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.codec_context.options = {
                "preset": "veryfast",
                "crf": "23",
                # x264 with a rate-control lookahead gives different bytes from run to run
                # (seen with PyAV 18's bundled x264), even on one thread: turn the lookahead off.
                "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:rc-lookahead=0",
            }
        for j in range(frames):
            t = j / VIDEO_FPS
            note = next((n for n in reversed(notes) if n.onset <= t + 1e-9), notes[0])
            p = pulse[j]
            radius = 22 + 28 * p * note.velocity
            cy = height * (0.85 - 0.7 * np.clip((note.midi - 45) / 40, 0, 1))
            cx = width / 2 + 40 * np.sin(2 * np.pi * note.onset / 2.0)
            hue = (note.midi % 12) / 12
            rgb = np.array(colorsys.hsv_to_rgb(hue, 0.8, 0.45 + 0.55 * p)) * 255
            image = np.full((height, width, 3), 24, dtype=np.uint8)
            image[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = rgb.astype(np.uint8)
            image[height - 12 :, : int(width * (j + 1) / frames)] = 90  # progress bar
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            frame.pts = j
            frame.time_base = Fraction(1, VIDEO_FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def build_demo_set(
    out_dir: Path, *, n_sources: int = 4, duration: float = 3.0, seed: int = 0
) -> Path:
    """Write the demo set into `out_dir` and return the path of its manifest.

    Deterministic: the same arguments give byte-identical audio and video and the same manifest
    apart from `created`.
    """
    if n_sources < 2:
        raise ValueError("n_sources must be at least 2 (the mismatched condition needs another)")
    if not 0.5 <= duration <= 60:
        raise ValueError("duration must be between 0.5 and 60 s (loudness needs 0.4 s blocks)")
    out_dir = Path(out_dir)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    (out_dir / "video").mkdir(parents=True, exist_ok=True)
    frames = int(round(duration * SAMPLE_RATE))
    clip_duration = frames / SAMPLE_RATE
    video_frames = max(1, int(round(duration * VIDEO_FPS)))
    code_version = _code_version()
    _, _, video_ext = VIDEO_CODEC

    plans = []
    for i in range(n_sources):
        design, piece = _design(i)
        melody_seed = [seed, i]
        notes = _melody(design, clip_duration, np.random.default_rng(melody_seed))
        shuffle_seed = seed * 1000 + i + 1
        shuffled = _shuffled(notes, clip_duration, np.random.default_rng(shuffle_seed))
        plans.append((f"src{i + 1:02d}", design, piece, notes, shuffled, shuffle_seed))
    references = [_finish(_render(p[3], frames, p[1], "pluck")) for p in plans]

    sources, segments, clips = [], [], []
    for i, (source_id, design, piece, notes, shuffled, shuffle_seed) in enumerate(plans):
        video = f"video/{source_id}{video_ext}"
        _write_video(out_dir / video, notes, video_frames, design)
        sources.append(
            {
                "id": source_id,
                "video": video,
                "video_sha256": hashlib.sha256((out_dir / video).read_bytes()).hexdigest(),
                "metadata": {
                    "instrument": "synthetic plucked string",
                    "piece": piece,
                    "performer": "generated",
                    "emotion": {
                        "label": design.label,
                        "valence": design.valence,
                        "arousal": design.arousal,
                    },
                    "tempo_bpm": design.tempo_bpm,
                    "mode": design.mode,
                    "tonic_midi": design.tonic_midi,
                },
            }
        )
        segment_id = f"{source_id}_seg01"
        pulse, intensity = _visual_features(notes, video_frames)
        segments.append(
            {
                "id": segment_id,
                "source": source_id,
                "start": 0.0,
                "duration": duration,
                "features": {
                    "tempo_bpm": design.tempo_bpm,
                    "feature_rate_hz": VIDEO_FPS,
                    "onset_envelope": pulse,
                    "intensity": intensity,
                },
            }
        )
        other = (i + 1) % n_sources
        signals = {
            "reference": (references[i], None),
            "sine_resynthesis": (
                _finish(_render(notes, frames, design, "sine")),
                {"seed": seed},
            ),
            "shuffled_notes": (
                _finish(_render(shuffled, frames, design, "pluck")),
                {"seed": shuffle_seed},
            ),
            "mismatched": (
                references[other],
                {"seed": seed, "mismatched_source": plans[other][0]},
            ),
        }
        for condition in CONDITIONS:
            signal, extra = signals[condition]
            clip_id = f"{segment_id}_{condition}"
            path = f"audio/{clip_id}.wav"
            sha, loudness = _write_clip(out_dir / path, signal)
            clip: dict[str, Any] = {
                "id": clip_id,
                "segment": segment_id,
                "condition": condition,
                "path": path,
                "sha256": sha,
                "sample_rate": SAMPLE_RATE,
                "channels": 1,
                "duration": clip_duration,
                "loudness_lufs": loudness,
            }
            if extra is not None:
                clip["provenance"] = {
                    "model": f"demo_set.{condition}",
                    "encoder": None,
                    "weights_sha256": None,
                    "seed": extra["seed"],
                    "guidance": None,
                    "prompt": None,
                    "adapter": None,
                    "code_version": code_version,
                    **{k: v for k, v in extra.items() if k != "seed"},
                }
            clips.append(clip)

    manifest = {
        "schema_version": "1.0",
        "name": "demo",
        "description": (
            "Synthetic demo material generated by demo_set: short melodies with a "
            "plucked-string timbre and muted videos of a pulsing shape. For smoke tests and "
            "demonstrations only, not for studies."
        ),
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "loudness_target_lufs": LOUDNESS_TARGET_LUFS,
        "fit_for_studies": False,
        "generator": {
            "tool": "demo_set",
            "code_version": code_version,
            "video_codec": VIDEO_CODEC[0],
            "config": {"n_sources": n_sources, "duration": duration, "seed": seed},
        },
        "sources": sources,
        "segments": segments,
        "clips": clips,
    }
    manifest_path = out_dir / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest_path


def main(argv: list[str] | None = None) -> int:
    """Command line: build the demo set and print the manifest's path."""
    parser = argparse.ArgumentParser(
        prog="python -m demo_set", description="Build the synthetic demo stimulus set."
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n-sources", type=int, default=4)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_demo_set(
        args.out_dir, n_sources=args.n_sources, duration=args.duration, seed=args.seed
    )
    print(path)
    return 0

