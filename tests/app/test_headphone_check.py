"""The antiphase headphone check renders what Woods et al. (2017) describe, and schedules fairly."""

from __future__ import annotations

import io
import random
from collections import Counter

import numpy as np
import pytest

from study_app.audio import read_wav_info, read_wav_samples
from study_app.headphone_check import (
    ARRANGEMENTS,
    HeadphoneTrial,
    calibration_noise_wav_bytes,
    headphone_trial_wav_bytes,
    passes,
    render_calibration_noise,
    render_headphone_trial,
    schedule_headphone_trials,
)

SR = 44100
TONE = SR  # 1000 ms
GAP = SR // 2  # 500 ms
RAMP = SR // 10  # 100 ms


def tone_slices() -> list[slice]:
    return [slice(i * (TONE + GAP), i * (TONE + GAP) + TONE) for i in range(3)]


def steady(s: slice) -> slice:
    """The part of a tone between its ramps."""
    return slice(s.start + RAMP, s.stop - RAMP)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.mark.parametrize(
    "trial", ARRANGEMENTS, ids=lambda t: f"q{t.quiet_position}a{t.antiphase_position}"
)
def test_trial_levels_and_phases(trial: HeadphoneTrial) -> None:
    audio = render_headphone_trial(trial, SR, level_dbfs=-20.0)
    assert audio.shape == (3 * TONE + 2 * GAP, 2)
    slices = tone_slices()
    levels = [20 * np.log10(rms(audio[steady(s), 0])) for s in slices]
    for position, level in zip((1, 2, 3), levels, strict=True):
        expected = -26.0 if position == trial.quiet_position else -20.0
        assert level == pytest.approx(expected, abs=0.05)
    for position, s in zip((1, 2, 3), slices, strict=True):
        left, right = audio[s, 0], audio[s, 1]
        if position == trial.antiphase_position:
            assert np.array_equal(right, -left)
            # Loudspeakers mix the channels: the antiphase tone cancels.
            assert np.max(np.abs(left + right)) == 0.0
        else:
            assert np.array_equal(right, left)
            assert rms(left + right) == pytest.approx(2 * rms(left))
    # The gaps are silent.
    assert not audio[TONE : TONE + GAP].any()
    assert not audio[2 * TONE + GAP : 2 * TONE + 2 * GAP].any()


def test_tone_is_200_hz_with_ramps() -> None:
    audio = render_headphone_trial(HeadphoneTrial(1, 2), SR)[:TONE, 0]
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.fft.rfftfreq(TONE, 1 / SR)[np.argmax(spectrum)] == pytest.approx(200.0)
    assert abs(audio[0]) < 1e-6 and abs(audio[-1]) < 1e-3
    # Rising over the first 100 ms, full amplitude after it.
    assert np.max(np.abs(audio[: RAMP // 4])) < 0.5 * np.max(np.abs(audio[RAMP : 2 * RAMP]))


def test_wav_bytes_same_length_and_exact_antiphase() -> None:
    sizes = set()
    for trial in ARRANGEMENTS:
        data = headphone_trial_wav_bytes(trial)
        sizes.add(len(data))
        info = read_wav_info(_bytes_file(data))
        assert (info.channels, info.sample_rate, info.sample_width) == (2, SR, 2)
        assert info.duration == pytest.approx(4.0)
        samples, _ = read_wav_samples(_bytes_file(data))
        s = tone_slices()[trial.antiphase_position - 1]
        assert np.array_equal(samples[s, 1], -samples[s, 0])
        q = tone_slices()[trial.quiet_position - 1]
        assert np.array_equal(samples[q, 1], samples[q, 0])
    assert len(sizes) == 1


def test_calibration_noise_level() -> None:
    noise = render_calibration_noise(duration=3.0, level_dbfs=-20.0)
    assert noise.shape == (3 * SR, 2)
    assert np.array_equal(noise[:, 0], noise[:, 1])
    assert 20 * np.log10(rms(noise[RAMP:-RAMP, 0])) == pytest.approx(-20.0, abs=0.3)
    data = calibration_noise_wav_bytes()
    info = read_wav_info(_bytes_file(data))
    assert info.channels == 2 and info.duration >= 2.0
    assert data == calibration_noise_wav_bytes()  # the same for every participant


@pytest.mark.parametrize("n", [1, 5, 6, 7, 12, 13])
def test_schedule_is_even(n: int) -> None:
    trials = schedule_headphone_trials(n, random.Random(n))
    assert len(trials) == n
    counts = Counter(trials)
    assert set(counts) <= set(ARRANGEMENTS)
    assert max(counts.values()) - min(counts.get(a, 0) for a in ARRANGEMENTS) <= 1
    quiet = Counter(t.quiet_position for t in trials)
    assert max(quiet.values()) - min(quiet.get(p, 0) for p in (1, 2, 3)) <= 2


def test_schedule_is_pure_and_shuffled() -> None:
    a = schedule_headphone_trials(6, random.Random(42))
    assert a == schedule_headphone_trials(6, random.Random(42))
    orders = {tuple(schedule_headphone_trials(6, random.Random(seed))) for seed in range(20)}
    assert len(orders) > 10
    assert all(set(order) == set(ARRANGEMENTS) for order in orders)


def test_trial_validation() -> None:
    with pytest.raises(ValueError):
        HeadphoneTrial(2, 2)
    with pytest.raises(ValueError):
        HeadphoneTrial(0, 1)
    with pytest.raises(ValueError):
        HeadphoneTrial(1, 4)


def test_passes() -> None:
    assert passes(5) and passes(6)
    assert not passes(4)
    assert passes(3, n_trials=4, threshold=3)
    with pytest.raises(ValueError):
        passes(7)


def _bytes_file(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)
