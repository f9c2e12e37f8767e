"""Antiphase headphone screening (Woods, Siegel, Traer & McDermott, 2017).

Reference: K. J. P. Woods, M. H. Siegel, J. Traer & J. H. McDermott (2017). Headphone screening to
facilitate web-based auditory experiments. Attention, Perception, & Psychophysics 79(7),
2064-2072. doi:10.3758/s13414-017-1361-2

Why: online participants are told to wear headphones, and some do not. An ABX judgement of subtle
timbre differences over laptop speakers is noise, so a study needs to know who listened how.

The test as published: each trial plays three 200 Hz pure tones, 1000 ms each with 100 ms on/off
ramps and 500 ms of silence between them. One tone is 6 dB quieter than the other two; the task
is "which tone is quietest?". One of the two louder tones is played in antiphase between the
stereo channels (R = -L). Over headphones each ear hears an ordinary tone, so the antiphase tone
sounds as loud as the in-phase one and the 6 dB step is easy to hear. Over loudspeakers the two
channels' pressure waves largely cancel at a low frequency like 200 Hz (the paper's measurements
show attenuation well beyond the 6 dB step), so the antiphase tone sounds quietest and
loudspeaker listeners tend to choose it. Six trials; a participant passes with at least 5
correct. By chance (p = 1/3 per trial) 5 or 6 of 6 happens with probability 13/729, about 1.8 %.

Choices of this module, not of the paper: ramps are raised-cosine; the louder tones have an RMS
of `level_dbfs` (-20 dBFS by default, the quiet tone 6 dB below); the calibration sound is a
noise band around 200 Hz at the same RMS as the louder tones, so that a listener who sets a
comfortable volume on it hears the tones at a comparable loudness.
"""

from __future__ import annotations

import io
import itertools
import random
from dataclasses import dataclass

import numpy as np

from .audio import write_wav

__all__ = [
    "ARRANGEMENTS",
    "HeadphoneTrial",
    "calibration_noise_wav_bytes",
    "headphone_trial_wav_bytes",
    "passes",
    "render_calibration_noise",
    "render_headphone_trial",
    "schedule_headphone_trials",
]

TONE_HZ = 200.0
TONE_S = 1.0
RAMP_S = 0.1
GAP_S = 0.5
QUIET_DB = -6.0
DEFAULT_LEVEL_DBFS = -20.0
DEFAULT_SAMPLE_RATE = 44100


@dataclass(frozen=True)
class HeadphoneTrial:
    """Where (1..3) the quiet tone and the antiphase tone are; they are never the same tone."""

    quiet_position: int
    antiphase_position: int

    def __post_init__(self) -> None:
        for name in ("quiet_position", "antiphase_position"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 3:
                raise ValueError(f"{name} must be 1, 2 or 3, not {value!r}")
        if self.quiet_position == self.antiphase_position:
            raise ValueError("the quiet tone and the antiphase tone must be different tones")

    @property
    def correct_answer(self) -> int:
        return self.quiet_position


ARRANGEMENTS: tuple[HeadphoneTrial, ...] = tuple(
    HeadphoneTrial(q, a) for q, a in itertools.permutations((1, 2, 3), 2)
)


def schedule_headphone_trials(n_trials: int, rng: random.Random) -> list[HeadphoneTrial]:
    """`n_trials` trials using the 6 arrangements as evenly as possible, in random order.

    Even use matters: if the quiet tone sat in one position more often, a participant could pass
    by guessing that position. A pure function of `n_trials` and the state of `rng`.
    """
    if n_trials < 0:
        raise ValueError("n_trials must not be negative")
    full, rest = divmod(n_trials, len(ARRANGEMENTS))
    trials = list(ARRANGEMENTS) * full + rng.sample(list(ARRANGEMENTS), rest)
    rng.shuffle(trials)
    return trials


def _ramped_tone(sample_rate: int, amplitude: float) -> np.ndarray:
    n = int(round(TONE_S * sample_rate))
    ramp = int(round(RAMP_S * sample_rate))
    t = np.arange(n) / sample_rate
    tone = amplitude * np.sin(2 * np.pi * TONE_HZ * t)
    window = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    tone[:ramp] *= window
    tone[n - ramp :] *= window[::-1]
    return tone


def render_headphone_trial(
    trial: HeadphoneTrial,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    level_dbfs: float = DEFAULT_LEVEL_DBFS,
) -> np.ndarray:
    """The trial's three tones as a float array of shape (n, 2), left and right channels.

    `level_dbfs` is the RMS of the louder tones' steady part, per channel.
    """
    if level_dbfs > -3.0:
        raise ValueError("level_dbfs must be at most -3 dBFS (a sine's peak is 3 dB above RMS)")
    amplitude = np.sqrt(2.0) * 10.0 ** (level_dbfs / 20.0)
    loud = _ramped_tone(sample_rate, amplitude)
    quiet = _ramped_tone(sample_rate, amplitude * 10.0 ** (QUIET_DB / 20.0))
    gap = np.zeros((int(round(GAP_S * sample_rate)), 2))
    parts = []
    for position in (1, 2, 3):
        tone = quiet if position == trial.quiet_position else loud
        sign = -1.0 if position == trial.antiphase_position else 1.0
        parts.append(np.column_stack([tone, sign * tone]))
        if position < 3:
            parts.append(gap)
    return np.concatenate(parts)


def headphone_trial_wav_bytes(
    trial: HeadphoneTrial, sample_rate: int = DEFAULT_SAMPLE_RATE
) -> bytes:
    """The trial as a 16-bit stereo WAV. Every trial has the same byte length, so the size of a
    response does not give the arrangement away."""
    out = io.BytesIO()
    write_wav(out, render_headphone_trial(trial, sample_rate), sample_rate)
    return out.getvalue()


def render_calibration_noise(
    duration: float = 4.0,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    level_dbfs: float = DEFAULT_LEVEL_DBFS,
    seed: int = 0,
) -> np.ndarray:
    """Noise in the octave band around 200 Hz (141-283 Hz), shape (n, 2), identical in both
    channels, RMS = `level_dbfs`, 100 ms ramps. Seeded, so every participant hears the same."""
    n = int(round(duration * sample_rate))
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spectrum[(freqs < TONE_HZ / np.sqrt(2)) | (freqs > TONE_HZ * np.sqrt(2))] = 0.0
    noise = np.fft.irfft(spectrum, n)
    noise *= 10.0 ** (level_dbfs / 20.0) / np.sqrt(np.mean(noise**2))
    ramp = int(round(RAMP_S * sample_rate))
    window = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    noise[:ramp] *= window
    noise[n - ramp :] *= window[::-1]
    return np.column_stack([noise, noise])


def calibration_noise_wav_bytes(
    duration: float = 4.0,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    level_dbfs: float = DEFAULT_LEVEL_DBFS,
    seed: int = 0,
) -> bytes:
    """The calibration noise as a 16-bit stereo WAV, for setting a comfortable volume first."""
    out = io.BytesIO()
    write_wav(out, render_calibration_noise(duration, sample_rate, level_dbfs, seed), sample_rate)
    return out.getvalue()


def passes(correct_count: int, n_trials: int = 6, threshold: int = 5) -> bool:
    """Whether a participant passed: at least `threshold` of `n_trials` correct (paper: 5 of 6)."""
    if not 0 <= threshold <= n_trials:
        raise ValueError("threshold must be between 0 and n_trials")
    if not 0 <= correct_count <= n_trials:
        raise ValueError(f"correct_count must be between 0 and {n_trials}, not {correct_count}")
    return correct_count >= threshold
