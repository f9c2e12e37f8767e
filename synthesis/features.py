"""Motion features from the frames: onset envelope, tempo estimate and intensity per segment.

Motion energy is the mean absolute difference between consecutive grayscale frames. Its positive
changes form an onset envelope (bow strokes, strums and breaths show up as bursts of motion); the
tempo is the autocorrelation peak of that envelope between 40 and 240 BPM, weighted towards
moderate tempi as beat trackers do, refined between frames and checked for octave errors by pulse
salience (see `tempo_reading`, which also gives the metrical alternative and whether the motion
leaves the choice between the two ambiguous); intensity is the motion energy scaled by the
source's 95th percentile. These are cues about the performance, not ground truth about the music.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d

MIN_BPM, MAX_BPM = 40.0, 240.0
# An octave faster wins when its pulse grid lands on onsets at least this well (see estimate_tempo).
OCTAVE_SALIENCE_RATIO = 0.8
# Onsets between the beats of the slower of two metrical levels at this share of the on-beat
# onsets' strength leave the tempo ambiguous (see tempo_reading; calibrated in docs/synthesis.md).
AMBIGUOUS_WEAKER_RATIO = (0.15, 0.85)


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


def _autocorrelation(centred: np.ndarray) -> np.ndarray:
    """Autocorrelation at lags 0..n-1, normalised by the energy (lag 0 = 1)."""
    full = np.correlate(centred, centred, mode="full")[len(centred) - 1 :]
    return full / full[0]


def _refine_lag(correlation: np.ndarray, lag: int) -> float:
    """The peak lag between frames by parabolic interpolation, as analysis.objective does.

    At 25 Hz a 120 BPM pulse is 12.5 frames: whole lags (12, 13) split its peak, and only a
    fractional lag gives the tempo to better than 4 %.
    """
    if 1 <= lag < len(correlation) - 1:
        a, b, c = correlation[lag - 1], correlation[lag], correlation[lag + 1]
        denominator = a - 2 * b + c
        if denominator < 0:
            return lag + float(np.clip(0.5 * (a - c) / denominator, -0.5, 0.5))
    return float(lag)


def _peak_near(correlation: np.ndarray, lag: float) -> float:
    """The refined autocorrelation peak within a frame of a (fractional) lag."""
    low = max(1, int(np.floor(lag)) - 1)
    high = min(len(correlation) - 1, int(np.ceil(lag)) + 1)
    best = low + int(np.argmax(correlation[low : high + 1]))
    return _refine_lag(correlation, best)


def pulse_salience(onsets: np.ndarray, period: float) -> float:
    """Mean onset strength on the best-aligned pulse grid of `period` frames.

    The grid's phase is searched in half frames and its period within +-3 % (a lag estimate's
    error would otherwise drift the grid off the onsets over a long segment); each grid point
    takes the strongest onset within a frame of it. A pulse twice as slow as the true one lands
    on onsets just as well; one twice as fast lands on onsets only every other time, so its
    salience is about half.
    """
    count = len(onsets)
    if count == 0 or period <= 0:
        return 0.0
    pooled = maximum_filter1d(onsets.astype(np.float64), size=3, mode="nearest")
    axis = np.arange(count)
    best = 0.0
    for trial in period * (1.0 + np.linspace(-0.03, 0.03, 7)):
        phases = np.arange(0.0, trial, 0.5)[:, None]
        beats = np.arange(int(np.ceil(count / trial)) + 1)[None, :]
        positions = phases + beats * trial
        inside = positions <= count - 1
        values = np.interp(np.where(inside, positions, 0.0), axis, pooled) * inside
        means = values.sum(axis=1) / np.maximum(inside.sum(axis=1), 1)
        best = max(best, float(means.max()))
    return best


@dataclass(frozen=True)
class TempoReading:
    """The motion tempo with its metrical alternative.

    `bpm` is `estimate_tempo`'s answer; `alternative_bpm` the best other metrical level (twice,
    half, three times or a third of it); `salience` and `alternative_salience` their pulse
    saliences (`pulse_salience`, 0..1). `weaker_ratio` is how strong the onsets between the
    slower level's beats are relative to those on them (1: even strokes, 0: none), read from
    the two saliences; `ambiguous` says the evidence cannot choose between the two levels
    (`AMBIGUOUS_WEAKER_RATIO`), as when a performer's up-bows or up-strums move less.
    """

    bpm: float
    salience: float
    alternative_bpm: float | None
    alternative_salience: float | None
    weaker_ratio: float | None
    ambiguous: bool

    def candidates(self) -> list[dict[str, float]]:
        """[{"bpm", "salience"}] for the manifest: the tempo first, then its alternative."""
        rows = [{"bpm": self.bpm, "salience": round(self.salience, 3)}]
        if self.alternative_bpm is not None and self.alternative_salience is not None:
            rows.append({"bpm": self.alternative_bpm,
                         "salience": round(self.alternative_salience, 3)})
        return rows


def weaker_ratio(fast_salience: float, slow_salience: float, ratio: int) -> float:
    """Strength of the onsets between a slower pulse's beats relative to those on them.

    A pulse of period P and one of period `ratio` x P on the same onsets: the slow grid takes
    the strong onsets only, the fast grid all of them, so with on-beat strength 1 and the
    `ratio` - 1 others w, fast / slow salience = (1 + (ratio - 1) w) / ratio. Solved for w and
    clipped to 0..1.

    >>> weaker_ratio(0.85, 1.0, 2), weaker_ratio(0.5, 1.0, 2), weaker_ratio(1.0, 1.0, 3)
    (0.7, 0.0, 1.0)
    """
    if slow_salience <= 0:
        return 0.0
    share = fast_salience / slow_salience
    return float(np.clip(round((ratio * share - 1.0) / (ratio - 1.0), 6), 0.0, 1.0))


def tempo_reading(onsets: np.ndarray, rate: float) -> TempoReading | None:
    """The motion tempo and its metrical alternative, or None without a clear periodicity.

    1. The autocorrelation peak between 40 and 240 BPM, weighted by a log-normal prior around
       120 BPM, refined between frames by parabolic interpolation.
    2. Octave: of that lag, half of it and twice it (those inside 40-240 BPM), the fastest whose
       pulse salience (`pulse_salience`) is at least OCTAVE_SALIENCE_RATIO of the best one's.
       The autocorrelation alone cannot tell a tempo from half of it (every second beat lines up
       too, and at a whole lag the half tempo's peak is often the sharper), which at 25 Hz gave
       88 BPM for 180 BPM bowing; salience can: half the tempo leaves every other onset off its
       grid only when those onsets are weak (accents on alternate beats), then it wins.
    3. The alternative: of the chosen tempo's metrical neighbours (x2, /2, x3, /3 inside the
       range), the most plausible beat: a slower level the more the onsets between its beats
       are weak, a faster one the more they are strong (`weaker_ratio`); twofold before
       threefold on ties. Strokes of alternating strength sit between the two readings: when
       the weaker ones have AMBIGUOUS_WEAKER_RATIO of the others' strength, the reading is
       ambiguous, and either level may be the one a listener (or the audio) counts.
    """
    centred = onsets - onsets.mean()
    energy = float(np.dot(centred, centred))
    if energy <= 1e-12:
        return None
    # whole lags inside 40-240 BPM (floor/ceil here once let 10 Hz report 300 BPM)
    shortest = max(1, int(np.ceil(60.0 * rate / MAX_BPM)))
    longest = min(len(onsets) // 2, int(np.floor(60.0 * rate / MIN_BPM)))
    if longest <= shortest:
        return None
    correlation = _autocorrelation(centred)
    lags = np.arange(shortest, longest + 1)
    bpm = 60.0 * rate / lags
    # log-normal prior around 120 BPM (one octave wide), so half/double tempo lose close calls
    weighted = correlation[lags] * np.exp(-0.5 * (np.log2(bpm / 120.0)) ** 2)
    best = int(lags[int(np.argmax(weighted))])
    if correlation[best] < 0.1:
        return None
    lag = _refine_lag(correlation, best)
    fastest, slowest = 60.0 * rate / MAX_BPM, min(len(onsets) / 2, 60.0 * rate / MIN_BPM)

    def inside(other: float) -> bool:
        return fastest <= other <= slowest and other + 1 < len(correlation)

    candidates = [lag] + [_peak_near(correlation, other) for other in (lag / 2, lag * 2)
                          if inside(other)]
    saliences = [pulse_salience(onsets, candidate) for candidate in candidates]
    top = max(saliences)
    chosen, salience = min(
        (candidate, value)
        for candidate, value in zip(candidates, saliences, strict=True)
        if value >= OCTAVE_SALIENCE_RATIO * top
    )
    chosen = float(np.clip(chosen, fastest, slowest))
    # the alternative: (plausibility, -ratio, period, salience, weaker ratio) per neighbour
    options = []
    for ratio in (2, 3):
        for other in (chosen * ratio, chosen / ratio):
            if not inside(other):
                continue
            # the exact multiple: the chosen lag is refined, and the weak level may have no
            # autocorrelation peak of its own to snap to (`pulse_salience` searches +-3 %)
            period = other
            value = pulse_salience(onsets, period)
            slower = period > chosen
            weak = (weaker_ratio(salience, value, ratio) if slower
                    else weaker_ratio(value, salience, ratio))
            options.append((1.0 - weak if slower else weak, -ratio, period, value, weak))
    if not options:
        return TempoReading(round(60.0 * rate / chosen, 1), salience, None, None, None, False)
    _, _, period, value, weak = max(options)
    low, high = AMBIGUOUS_WEAKER_RATIO
    return TempoReading(
        bpm=round(60.0 * rate / chosen, 1),
        salience=salience,
        alternative_bpm=round(60.0 * rate / float(np.clip(period, fastest, slowest)), 1),
        alternative_salience=value,
        weaker_ratio=weak,
        ambiguous=low <= weak <= high,
    )


def estimate_tempo(onsets: np.ndarray, rate: float) -> float | None:
    """BPM from the onset envelope's autocorrelation, or None without a clear periodicity.

    The first reading of `tempo_reading` (which also gives the metrical alternative).
    """
    reading = tempo_reading(onsets, rate)
    return None if reading is None else reading.bpm


def measurable_tempo_range(segment_seconds: float, rate: float) -> tuple[float, float] | None:
    """The tempi (BPM) `estimate_tempo` can report for segments of this length, if any.

    Lags run up to half the segment (a period must repeat once within it) and down to a frame.
    """
    longest = min(segment_seconds * rate / 2, 60.0 * rate / MIN_BPM)
    shortest = max(1.0, 60.0 * rate / MAX_BPM)
    if longest <= shortest:
        return None
    return max(MIN_BPM, 60.0 * rate / longest), min(MAX_BPM, 60.0 * rate / shortest)


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
    reading = tempo_reading(onsets, rate)
    return {
        "tempo_bpm": None if reading is None else reading.bpm,
        "tempo_candidates": [] if reading is None else reading.candidates(),
        "tempo_ambiguous": False if reading is None else reading.ambiguous,
        "feature_rate_hz": float(rate),
        "onset_envelope": [round(float(value), 4) for value in onsets],
        "intensity": [round(float(value), 4) for value in intensity],
    }


def intensity_scale(energy: np.ndarray) -> float:
    """The source-wide normaliser for intensity: the 95th percentile of its motion energy."""
    return float(np.percentile(energy, 95)) if len(energy) else 0.0
