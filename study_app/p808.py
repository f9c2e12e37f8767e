"""ITU-T P.808 quality control for absolute category rating (ACR): the audio of gold-standard
questions, trapping clips and the qualification's tone-counting test, and the rules that score
them. Pure functions of samples and answers: no Flask, no database.

* Gold-standard questions (P.808 clause 6.3.8) are clips whose answer is known: the reference
  itself ("Excellent", 5) and a heavily degraded copy of it ("Bad", 1). A listener passes one when
  the rating is within one category of the known answer.
* Trapping questions (P.808 clause 6.3.8, "trapping stimuli"): a voice interrupts a clip and says
  which answer to select; only exactly that answer passes. The sentences were synthesized once
  (`scripts/make_trap_voices.py`) and live in `p808_voices/`.
* Qualification (P.808 clause 6.3.2): self-reported hearing and listening conditions, and a
  short listening test; here the listener counts quiet beeps, a language-free stand-in for the
  toolkit's spoken-digit test.

Every clip made here keeps the duration, sample rate and channel count of the clip it is made
from and is matched to its integrated loudness (BS.1770), so nothing but listening tells a gold
or trapping clip from a rated one.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
from scipy.signal import resample_poly

from .audio import read_wav_samples, wav_bytes

ACR_LABELS = {5: "Excellent", 4: "Good", 3: "Fair", 2: "Poor", 1: "Bad"}
GOLD_EXPECTED = {"p808_gold_high": 5, "p808_gold_low": 1}
GOLD_TOLERANCE = 1  # categories: P.808 accepts a gold answer one category off
VOICES_DIR = Path(__file__).parent / "p808_voices"
INSTRUCTION_RATE = 16_000
# The music under the instruction is lowered by this much so that the voice is clear.
DUCK_DB = -18.0
MARGIN_SECONDS = 0.25  # silence-free margin of music before and after the instruction
TONE_COUNT_RANGE = (2, 6)
TONE_CLIP_SECONDS = 5.0


def instruction_text(rating: int) -> str:
    """The spoken sentence of a trapping clip (P.808's wording, shortened to fit short clips).

    >>> instruction_text(4)
    'Please select the answer Good to confirm your attention.'
    """
    return f"Please select the answer {ACR_LABELS[rating]} to confirm your attention."


@functools.lru_cache(maxsize=8)
def _instruction_samples(rating: int) -> np.ndarray:
    path = VOICES_DIR / f"answer_{rating}.wav"
    samples, rate = read_wav_samples(path)
    if rate != INSTRUCTION_RATE:
        raise ValueError(f"{path}: expected {INSTRUCTION_RATE} Hz, found {rate}")
    return samples.mean(axis=1).astype(np.float64)


def instruction_seconds(rating: int | None = None) -> float:
    """Length of one recorded instruction, or of the longest when `rating` is None."""
    ratings = ACR_LABELS if rating is None else [rating]
    return max(len(_instruction_samples(r)) / INSTRUCTION_RATE for r in ratings)


def shortest_trap_clip_seconds() -> float:
    """A trapping clip needs room for the longest instruction plus a margin either side."""
    return instruction_seconds() + 2 * MARGIN_SECONDS


def _loudness(samples: np.ndarray, rate: int) -> float:
    return float(pyloudnorm.Meter(rate).integrated_loudness(samples))


def _match_loudness(samples: np.ndarray, rate: int, target_lufs: float) -> np.ndarray:
    measured = _loudness(samples, rate)
    if not np.isfinite(measured) or not np.isfinite(target_lufs):
        return samples
    matched = samples * 10 ** ((target_lufs - measured) / 20)
    peak = float(np.max(np.abs(matched))) if matched.size else 0.0
    return matched * (0.999 / peak) if peak > 0.999 else matched


def trap_samples(clip: np.ndarray, rate: int, rating: int) -> np.ndarray:
    """`clip` (n, channels) with the spoken instruction for `rating` in its middle.

    The music is ducked by `DUCK_DB` (20 ms ramps) while the voice speaks; the result has the
    clip's length and integrated loudness. Raises ValueError when the clip is too short.
    """
    music = np.asarray(clip, dtype=np.float64)
    if music.ndim == 1:
        music = music[:, None]
    speech = resample_poly(_instruction_samples(rating), rate, INSTRUCTION_RATE)
    n, margin = music.shape[0], int(MARGIN_SECONDS * rate)
    if len(speech) + 2 * margin > n:
        raise ValueError(
            f"a trapping clip needs at least {shortest_trap_clip_seconds():.1f} s; "
            f"this clip lasts {n / rate:.1f} s"
        )
    start = (n - len(speech)) // 2
    gain = np.ones(n)
    duck = 10 ** (DUCK_DB / 20)
    ramp = max(1, int(0.02 * rate))
    low_from, low_to = start - margin // 2, start + len(speech) + margin // 2
    gain[low_from:low_to] = duck
    gain[low_from - ramp : low_from] = np.linspace(1, duck, ramp)
    gain[low_to : low_to + ramp] = np.linspace(duck, 1, ramp)
    voice = np.zeros(n)
    # The voice at the music's own loudness, so it is clearly audible over the ducked music.
    voice[start : start + len(speech)] = _match_loudness(speech, rate, _loudness(music, rate))
    mixed = music * gain[:, None] + voice[:, None]
    return _match_loudness(mixed, rate, _loudness(music, rate))


def trap_wav_bytes(clip_path: Path, rating: int) -> bytes:
    samples, rate = read_wav_samples(clip_path)
    return wav_bytes(trap_samples(samples, rate, rating), rate)


def gold_low_samples(clip: np.ndarray, rate: int) -> np.ndarray:
    """An unmistakably bad copy of `clip` for the low gold question: band-limited to 300-2500 Hz
    (telephone-like), coarsely quantized (5 bits), with white noise at 0 dB SNR, then matched to
    the clip's loudness. Deterministic."""
    music = np.asarray(clip, dtype=np.float64)
    if music.ndim == 1:
        music = music[:, None]
    spectrum = np.fft.rfft(music, axis=0)
    freqs = np.fft.rfftfreq(music.shape[0], 1.0 / rate)
    spectrum[(freqs < 300) | (freqs > 2500)] = 0
    band = np.fft.irfft(spectrum, n=music.shape[0], axis=0)
    peak = float(np.max(np.abs(band))) or 1.0
    crushed = np.round(band / peak * 15) / 15 * peak
    noise = np.random.default_rng(808).standard_normal(music.shape)
    noise *= np.sqrt(np.mean(crushed**2) / max(np.mean(noise**2), 1e-20))
    return _match_loudness(crushed + noise, rate, _loudness(music, rate))


def gold_low_wav_bytes(clip_path: Path) -> bytes:
    samples, rate = read_wav_samples(clip_path)
    return wav_bytes(gold_low_samples(samples, rate), rate)


def tone_count_samples(count: int, seed: int, rate: int = 48_000) -> np.ndarray:
    """`count` quiet 1 kHz beeps (120 ms, -40 dBFS RMS) at random times in a 5 s clip.

    Every count gives the same length, so nothing but listening reveals the answer.
    """
    low, high = TONE_COUNT_RANGE
    if not low <= count <= high:
        raise ValueError(f"count must be between {low} and {high}")
    rng = random.Random(seed)
    beep_seconds, gap = 0.12, 0.45
    while True:  # rejection sampling: onsets at least `gap` apart, inside the clip
        onsets = sorted(rng.uniform(0.3, TONE_CLIP_SECONDS - 0.5) for _ in range(count))
        if all(b - a >= gap for a, b in zip(onsets, onsets[1:], strict=False)):
            break
    n_beep = int(beep_seconds * rate)
    t = np.arange(n_beep) / rate
    ramp = np.minimum(1, np.minimum(t, beep_seconds - t) / 0.01)
    amplitude = 10 ** (-40 / 20) * np.sqrt(2)
    beep = amplitude * np.sin(2 * np.pi * 1000 * t) * ramp
    out = np.zeros((int(TONE_CLIP_SECONDS * rate), 2))
    for onset in onsets:
        i = int(onset * rate)
        out[i : i + n_beep] += beep[:, None]
    return out


def tone_count_wav_bytes(count: int, seed: int) -> bytes:
    return wav_bytes(tone_count_samples(count, seed), 48_000)


# Rules ------------------------------------------------------------------------------------------


def gold_passed(rating: int, expected: int, tolerance: int = GOLD_TOLERANCE) -> bool:
    """P.808 gold question: passed within `tolerance` categories of the known answer.

    >>> gold_passed(4, 5), gold_passed(3, 5), gold_passed(2, 1)
    (True, False, True)
    """
    return abs(int(rating) - int(expected)) <= tolerance


def trap_passed(rating: int, instructed: int) -> bool:
    """P.808 trapping question: only exactly the instructed answer passes.

    >>> trap_passed(2, 2), trap_passed(3, 2)
    (True, False)
    """
    return int(rating) == int(instructed)


def qualification_failures(answer: Mapping[str, Any], block: Mapping[str, Any]) -> list[str]:
    """Why a qualification answer fails the block's rules ([] when it passes)."""
    reasons = []
    if block.get("require_normal_hearing", True) and answer.get("hearing") != "normal":
        reasons.append("reported a hearing problem")
    if block.get("require_headphones") and answer.get("device") not in ("headphones", "earbuds"):
        reasons.append("not listening through headphones")
    if block.get("require_quiet") and answer.get("environment") != "quiet":
        reasons.append("not in a quiet place")
    if answer.get("tone_count_errors", 0) > block.get("max_tone_errors", 0):
        reasons.append("miscounted the beeps")
    return reasons
