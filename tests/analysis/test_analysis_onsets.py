"""Onsets counted on rendered scores with known notes, at every sample rate (issue 26, item 2).

Piano, flute, cello and drums play two melodies (``scripts/onset_accuracy.py``; the ``tuning``
one chose the detector's settings, the ``heldout`` one did not), rendered by FluidSynth at 16,
32, 44.1 and 48 kHz. Before issue 26 ``onset_rate`` analysed each clip at its own rate with a
2,048-point window: piano at 16 kHz read x1.56 (F 0.61), drums x1.50 (F 0.60), flute F <= 0.71
and cello F <= 0.57 everywhere (table in docs/analysis.md, Onsets).
"""

from __future__ import annotations

import functools
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis import cues

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))
import onset_accuracy  # noqa: E402  (a script, not a package)

sys.path.remove(str(SCRIPTS))

needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not onset_accuracy.SOUNDFONT.is_file(),
    reason="needs Debian's fluidsynth and fluid-soundfont-gm (make fluidsynth)",
)

# The F-measure (mir_eval, 50 ms) each instrument reaches on both melodies at every rate, a few
# points under the lowest measured (docs/analysis.md); cello must also not invent onsets.
MIN_F = {"piano": 0.95, "drums": 0.85, "flute": 0.72, "cello": 0.55}
MIN_CELLO_PRECISION = 0.8


@functools.cache
def rendered(instrument: str, melody: str, rate: int) -> tuple[np.ndarray, np.ndarray]:
    notes = onset_accuracy.score(instrument, melody)
    return onset_accuracy.render(instrument, notes, rate), onset_accuracy.onsets_of(notes)


@needs_fluidsynth
@pytest.mark.parametrize("rate", onset_accuracy.RATES)
@pytest.mark.parametrize("melody", ["tuning", "heldout"])
@pytest.mark.parametrize("instrument", ["piano", "drums", "flute", "cello"])
def test_onsets_of_rendered_scores_are_found_at_every_rate(instrument, melody, rate):
    audio, truth = rendered(instrument, melody, rate)
    result = onset_accuracy.evaluate(cues.onset_times, audio, rate, truth)
    assert result["f"] >= MIN_F[instrument], result
    if instrument == "cello":  # undercounted (legato), but what it counts is there
        assert result["p"] >= MIN_CELLO_PRECISION, result


@needs_fluidsynth
@pytest.mark.parametrize("melody", ["tuning", "heldout"])
@pytest.mark.parametrize("instrument", ["piano", "drums"])
def test_onset_rate_does_not_depend_on_the_sample_rate(instrument, melody):
    """Before: piano x1.56-1.76 of its notes at 16 kHz and x1.00 at 32-48 kHz."""
    truth_rate = None
    rates = []
    for rate in onset_accuracy.RATES:
        audio, truth = rendered(instrument, melody, rate)
        truth_rate = len(truth) / (len(audio) / rate)
        rates.append(cues.onset_rate(audio, rate))
    assert max(rates) / min(rates) <= 1.1, rates
    assert all(abs(np.log2(value / truth_rate)) <= np.log2(1.15) for value in rates), rates


def test_onset_times_is_rate_independent_on_a_synthetic_melody():
    """Decaying harmonic notes, some tied (no silence between): the same onsets at 16-48 kHz."""
    starts = np.array([0.0, 0.4, 0.6, 0.8, 1.4, 1.55, 1.7, 2.3])
    found = {}
    for rate in onset_accuracy.RATES:
        t = np.arange(int(3.0 * rate)) / rate
        audio = np.zeros_like(t)
        for index, start in enumerate(starts):
            local = np.clip(t - start, 0.0, None)
            f0 = 220.0 * 2 ** (index % 5 / 12)
            voice = sum(0.5**k * np.sin(2 * np.pi * f0 * (k + 1) * local) for k in range(6))
            audio += (t >= start) * np.exp(-local * 6.0) * voice
        found[rate] = cues.onset_times(audio, rate)
    for rate, onsets in found.items():
        assert len(onsets) == len(starts), (rate, onsets)
        assert np.abs(onsets - starts).max() <= 0.03, (rate, onsets)


def test_onset_times_of_silence_and_empty_audio():
    assert cues.onset_times(np.zeros(16000), 16000).size == 0
    assert cues.onset_times(np.zeros(0), 16000).size == 0
    assert np.isnan(cues.onset_rate(np.zeros(0), 16000))
