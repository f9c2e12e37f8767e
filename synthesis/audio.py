"""Clip audio: one length, fades, loudness matching (ITU-R BS.1770 via pyloudnorm), 16-bit WAV.

Every clip of a segment passes through `finish_clip` with the same settings, so clips differ in
content only. The WAV writer is the standard library's `wave`, which writes exactly a RIFF header,
a `fmt ` chunk and a `data` chunk: no metadata chunks.
"""

from __future__ import annotations

import math
import pathlib
import wave
from dataclasses import dataclass

import numpy as np
import pyloudnorm
from scipy.signal import butter, resample_poly, sosfiltfilt

PEAK_CEILING = 0.98  # leaves headroom so 16-bit rounding never clips


class LoudnessError(RuntimeError):
    """Audio that cannot be brought to the target loudness (silent, or too short to measure)."""


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return audio
    divisor = math.gcd(from_rate, to_rate)
    return resample_poly(audio, to_rate // divisor, from_rate // divisor, axis=-1).astype(
        np.float32
    )


def match_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    if audio.shape[0] == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=0, keepdims=True)
    return np.repeat(audio[:1], channels, axis=0)


def remove_dc(audio: np.ndarray, sample_rate: int, cutoff_hz: float = 20.0) -> np.ndarray:
    """Zero-phase 20 Hz high-pass. A DC offset is inaudible but uses up headroom (random-weight
    codecs emit a large one), so every clip gets the same filter before loudness matching."""
    if audio.shape[1] < 32:
        return audio - audio.mean(axis=1, keepdims=True)
    sections = butter(2, cutoff_hz, btype="highpass", fs=sample_rate, output="sos")
    centred = audio - audio.mean(axis=1, keepdims=True)
    return sosfiltfilt(sections, centred, axis=1).astype(np.float32)


def fit_length(audio: np.ndarray, samples: int) -> np.ndarray:
    """Trims or zero-pads (channels, n) audio to exactly `samples`."""
    if audio.shape[1] >= samples:
        return audio[:, :samples]
    return np.pad(audio, ((0, 0), (0, samples - audio.shape[1])))


def apply_fades(audio: np.ndarray, sample_rate: int, fade_ms: float) -> np.ndarray:
    """Raised-cosine fade in and out, so no clip starts or stops with a click."""
    length = min(int(round(sample_rate * fade_ms / 1000)), audio.shape[1] // 2)
    if length <= 0:
        return audio
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, length, dtype=np.float64))
    faded = audio.astype(np.float64).copy()
    faded[:, :length] *= ramp
    faded[:, -length:] *= ramp[::-1]
    return faded.astype(np.float32)


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """BS.1770 integrated loudness of (channels, n) audio in LUFS (-inf for silence)."""
    meter = pyloudnorm.Meter(sample_rate)
    return float(meter.integrated_loudness(audio.T.astype(np.float64)))


def normalize_loudness(audio: np.ndarray, sample_rate: int, target_lufs: float) -> np.ndarray:
    """Scales audio to `target_lufs`; soft-limits peaks above the ceiling and re-measures.

    Loud targets can push peaks past full scale; a tanh limiter then shaves the peaks and the gain
    is measured again, a few rounds, so the result stays on target without hard clipping.
    """
    if audio.shape[1] < int(0.4 * sample_rate):
        raise LoudnessError("a clip shorter than 0.4 s has no BS.1770 integrated loudness")
    current = audio.astype(np.float64)
    for _ in range(6):
        loudness = integrated_loudness(current, sample_rate)
        if not math.isfinite(loudness):
            raise LoudnessError("the clip is silent (below the -70 LUFS gate)")
        current = current * 10 ** ((target_lufs - loudness) / 20)
        peak = float(np.abs(current).max())
        if peak <= PEAK_CEILING:
            if abs(integrated_loudness(current, sample_rate) - target_lufs) < 0.05:
                break
            continue
        knee = 0.5 * PEAK_CEILING
        magnitude = np.abs(current)
        limited = knee + (PEAK_CEILING - knee) * np.tanh((magnitude - knee) / (PEAK_CEILING - knee))
        current = np.where(magnitude > knee, np.sign(current) * limited, current)
    return current.astype(np.float32)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def write_wav(path: pathlib.Path, audio: np.ndarray, sample_rate: int) -> None:
    """(channels, n) float audio -> 16-bit PCM WAV holding only fmt and data chunks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with wave.open(str(temporary), "wb") as handle:
        handle.setnchannels(audio.shape[0])
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(to_pcm16(audio).T.tobytes())
    temporary.replace(path)  # a finished clip is either complete or absent


def read_wav(path: pathlib.Path) -> tuple[np.ndarray, int]:
    """16-bit WAV -> ((channels, n) float32, sample rate)."""
    with wave.open(str(path), "rb") as handle:
        channels, rate = handle.getnchannels(), handle.getframerate()
        data = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16)
    return (data.reshape(-1, channels).T.astype(np.float32) / 32767.0), rate


@dataclass
class ClipFormat:
    sample_rate: int
    channels: int
    duration: float
    loudness_lufs: float
    fade_ms: float

    @property
    def samples(self) -> int:
        return int(round(self.duration * self.sample_rate))


def finish_clip(audio: np.ndarray, source_rate: int, clip_format: ClipFormat) -> np.ndarray:
    """Any (channels, n) audio -> the segment's common format, faded and loudness-matched.

    Resample, match channels, trim/pad, remove DC, fade, normalise loudness: the same chain for
    every clip, in this order, so that fades scale with the clip and loudness is measured last.
    """
    audio = resample(np.asarray(audio, dtype=np.float32), source_rate, clip_format.sample_rate)
    audio = match_channels(audio, clip_format.channels)
    audio = fit_length(audio, clip_format.samples)
    audio = remove_dc(audio, clip_format.sample_rate)
    audio = apply_fades(audio, clip_format.sample_rate, clip_format.fade_ms)
    return normalize_loudness(audio, clip_format.sample_rate, clip_format.loudness_lufs)
