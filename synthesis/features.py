"""Motion features from the frames: onset envelope, tempo estimate and intensity per segment.

Motion energy is the mean absolute difference between consecutive grayscale frames. Its positive
changes form an onset envelope (bow strokes, strums and breaths show up as bursts of motion); the
tempo is the autocorrelation peak of that envelope between 40 and 240 BPM, weighted towards
moderate tempi as beat trackers do; intensity is the motion energy scaled by the source's 95th
percentile. These are cues about the performance, not ground truth about the music.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter1d

MIN_BPM, MAX_BPM = 40.0, 240.0


def motion_energy(gray_frames: np.ndarray) -> np.ndarray:
    """(M, h, w) grayscale in [0, 1] -> (M,) motion energy; the first value repeats the second."""
    if len(gray_frames) < 2:
        return np.zeros(len(gray_frames), dtype=np.float32)
    differences = np.abs(np.diff(gray_frames, axis=0)).mean(axis=(1, 2))
    return np.concatenate([differences[:1], differences]).astype(np.float32)


def onset_envelope(energy: np.ndarray, rate: float) -> np.ndarray:
    """Half-wave rectified change of the lightly smoothed motion energy, scaled to max 1."""
    smoothed = uniform_filter1d(energy.astype(np.float64), size=max(1, int(round(rate * 0.08))))
    onsets = np.maximum(np.diff(smoothed, prepend=smoothed[:1]), 0.0)
    peak = onsets.max() if len(onsets) else 0.0
    return onsets / peak if peak > 0 else onsets


def estimate_tempo(onsets: np.ndarray, rate: float) -> float | None:
    """BPM from the onset envelope's autocorrelation, or None without a clear periodicity."""
    centred = onsets - onsets.mean()
    energy = float(np.dot(centred, centred))
    if energy <= 1e-12:
        return None
    shortest = max(1, int(np.floor(60.0 * rate / MAX_BPM)))
    longest = min(len(onsets) // 2, int(np.ceil(60.0 * rate / MIN_BPM)))
    if longest <= shortest:
        return None
    lags = np.arange(shortest, longest + 1)
    correlation = np.array([np.dot(centred[:-lag], centred[lag:]) for lag in lags]) / energy
    bpm = 60.0 * rate / lags
    # log-normal prior around 120 BPM (one octave wide), so half/double tempo lose close calls
    weighted = correlation * np.exp(-0.5 * (np.log2(bpm / 120.0)) ** 2)
    best = int(np.argmax(weighted))
    if correlation[best] < 0.1:
        return None
    return float(round(bpm[best], 1))


def segment_features(
    energy: np.ndarray, rate: float, start: float, duration: float, intensity_scale: float
) -> dict[str, object]:
    """The manifest's segments[].features for the motion energy of one segment."""
    first = int(round(start * rate))
    count = int(round(duration * rate))
    window = energy[first : first + count]
    onsets = onset_envelope(window, rate)
    scale = intensity_scale if intensity_scale > 0 else 1.0
    intensity = np.clip(window / scale, 0.0, 1.0)
    return {
        "tempo_bpm": estimate_tempo(onsets, rate),
        "feature_rate_hz": float(rate),
        "onset_envelope": [round(float(value), 4) for value in onsets],
        "intensity": [round(float(value), 4) for value in intensity],
    }


def intensity_scale(energy: np.ndarray) -> float:
    """The source-wide normaliser for intensity: the 95th percentile of its motion energy."""
    return float(np.percentile(energy, 95)) if len(energy) else 0.0
