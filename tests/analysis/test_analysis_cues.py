"""Emotion cues and spectral metrics on synthetic signals with known answers (issue 17)."""

import numpy as np
import pytest

from analysis import cues, objective

NAMES = cues.PITCH_CLASSES


def midi_hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def tone(midi: float, rate: int, seconds: float, harmonics: int = 1) -> np.ndarray:
    """A steady tone; harmonics at 0.5**k amplitudes (below Nyquist) when ``harmonics`` > 1."""
    t = np.arange(int(seconds * rate)) / rate
    f = midi_hz(midi)
    return sum(0.5**k * np.sin(2 * np.pi * f * (k + 1) * t)
               for k in range(harmonics) if f * (k + 1) < rate / 2)


@pytest.mark.parametrize("rate", [16000, 32000, 44100])
def test_chroma_names_every_tone_from_c2_to_c7(rate):
    """The STFT-rounding chroma this replaces got 0.25 on C2-B2 at 44.1 kHz."""
    wrong = [midi for midi in range(36, 97)
             if int(np.argmax(cues.chroma_cqt(tone(midi, rate, 1.0), rate))) != midi % 12]
    assert wrong == []


@pytest.mark.parametrize("rate", [16000, 32000, 44100])
def test_chroma_of_white_noise_is_flat(rate):
    """The STFT chroma gave white noise a max/min ratio of 1.7-5.0 (uneven bins per class)."""
    noise = np.random.default_rng(rate).normal(size=4 * rate)
    profile = cues.chroma_cqt(noise, rate)
    assert profile.max() / profile.min() < 1.4  # measured 1.1-1.25; the STFT chroma: >= 1.7


def chord(midis, rate=22050, seconds=2.0, harmonics=4):
    return sum(tone(m, rate, seconds, harmonics) for m in midis)


def melody(midis, rate=22050, step=0.3, harmonics=4):
    return np.concatenate([tone(m, rate, step, harmonics) for m in midis])


MAJOR_SCALE = [0, 2, 4, 5, 7, 9, 11, 12]
HARMONIC_MINOR = [0, 2, 3, 5, 7, 8, 11, 12]


@pytest.mark.parametrize("profile", ["krumhansl", "temperley"])
@pytest.mark.parametrize("root", [0, 2, 7, 9])  # C, D, G, A
def test_mode_and_key_of_triads(root, profile):
    rate = 22050
    major = cues.chroma_cqt(chord([48 + root, 52 + root, 55 + root], rate), rate)
    minor = cues.chroma_cqt(chord([48 + root, 51 + root, 55 + root], rate), rate)
    assert cues.mode(major, profile) == "major"
    assert cues.mode(minor, profile) == "minor"
    assert cues.estimate_key(major, profile) == f"{NAMES[root]} major"
    assert cues.estimate_key(minor, profile) == f"{NAMES[root]} minor"


@pytest.mark.parametrize("profile", ["krumhansl", "temperley"])
@pytest.mark.parametrize("root", [0, 5, 9])  # C, F, A
def test_mode_and_key_of_scales(root, profile):
    """Ascending scales from tonic to tonic (the tonic sounds twice), harmonic minor."""
    rate = 22050
    major = cues.chroma_cqt(melody([60 + root + s for s in MAJOR_SCALE], rate), rate)
    minor = cues.chroma_cqt(melody([60 + root + s for s in HARMONIC_MINOR], rate), rate)
    assert cues.estimate_key(major, profile) == f"{NAMES[root]} major"
    assert cues.estimate_key(minor, profile) == f"{NAMES[root]} minor"
    assert cues.mode_strength(major, profile) > 0 > cues.mode_strength(minor, profile)


def test_key_agreement_is_the_mirex_score():
    assert cues.key_agreement("C major", "C major") == 1.0
    assert cues.key_agreement("G major", "C major") == 0.5
    assert cues.key_agreement("A minor", "C major") == 0.3
    assert cues.key_agreement("C minor", "C major") == 0.2
    assert cues.key_agreement("F# major", "C major") == 0.0


def clicks(bpm: float, rate: int, seconds: float = 8.0) -> np.ndarray:
    audio = np.zeros(int(seconds * rate))
    for start in np.arange(0, len(audio) - 64, 60 * rate / bpm):
        audio[int(round(start)): int(round(start)) + 32] += np.hanning(64)[32:]
    return audio


def tone_beats(bpm: float, rate: int, seconds: float = 8.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    envelope = np.exp(-((t * bpm / 60) % 1.0) * 12)
    noise = np.random.default_rng(int(bpm)).normal(0, 0.003, t.size)
    return 0.5 * envelope * np.sin(2 * np.pi * 440 * t) + noise


@pytest.mark.parametrize("rate", [16000, 44100])
def test_project_tempo_beats_librosa(rate):
    """Why the project keeps its own tempo estimator: on click and tone tracks at 60-180 BPM
    its median error is several times smaller than librosa's (whole-lag tempogram bins), and it
    makes no octave error (the 120 BPM prior alone turned 180 BPM into 90 until the pulse-
    salience check). Measured: median 0.3-0.5 % against 0.6-1.9 %."""
    import librosa

    bpms = np.arange(60, 181, 10)
    ours, theirs = [], []
    for make in (clicks, tone_beats):
        for bpm in bpms:
            audio = make(bpm, rate)
            ours.append(abs(objective.estimate_tempo(audio, rate) - bpm) / bpm)
            theirs.append(abs(float(librosa.feature.tempo(y=audio, sr=rate)[0]) - bpm) / bpm)
    ours, theirs = np.array(ours), np.array(theirs)
    assert ours.max() < 0.02  # no octave errors, within 2 % everywhere
    assert np.median(ours) < 0.006
    assert np.median(ours) < 0.6 * np.median(theirs)


@pytest.mark.parametrize("per_second", [1, 2, 4, 6])
def test_onset_rate_of_tone_bursts(per_second):
    rate = 22050
    t = np.arange(6 * rate) / rate
    bursts = np.exp(-((t * per_second) % 1.0) * 20) * np.sin(2 * np.pi * 330 * t)
    assert cues.onset_rate(bursts, rate) == pytest.approx(per_second, rel=0.1)


def test_dynamic_range_and_level_steps():
    rate = 16000
    t = np.arange(6 * rate) / rate
    steady = 0.3 * np.sin(2 * np.pi * 440 * t)
    assert cues.dynamic_range(steady, rate) == pytest.approx(0.0, abs=0.1)
    for step_db in (6.0, 12.0):
        gain = np.where((t % 2.0) < 1.0, 0.5, 0.5 * 10 ** (-step_db / 20))
        assert cues.dynamic_range(gain * np.sin(2 * np.pi * 440 * t), rate) == pytest.approx(
            step_db, abs=0.3)


@pytest.mark.parametrize("frequency", [250.0, 1000.0, 3000.0])
def test_spectral_centroid_of_a_sine(frequency):
    rate = 16000
    sine = np.sin(2 * np.pi * frequency * np.arange(rate) / rate)
    assert cues.spectral_centroid(sine, rate) == pytest.approx(frequency, rel=0.02)


def test_pitch_class_distance_bounds():
    c_major = np.eye(12)[[0, 4, 7]].sum(axis=0)
    assert cues.pitch_class_distance(c_major, 2 * c_major) == pytest.approx(0.0, abs=1e-9)
    assert cues.pitch_class_distance(np.eye(12)[0], np.eye(12)[6]) == pytest.approx(1.0)


def test_cue_differences_of_a_transformed_clip():
    """A clip a fourth up, twice as fast and in minor: every cue moves the known way."""
    rate = 22050
    scale = [60 + s for s in MAJOR_SCALE]
    reference = melody(scale, rate, step=0.4)
    generated = 0.5 * melody([65 + s for s in HARMONIC_MINOR] * 2, rate, step=0.2)
    ref, gen = objective.emotion_cues(reference, rate), objective.emotion_cues(generated, rate)
    diff = objective.cue_differences(gen, ref)
    assert (ref["key"], gen["key"]) == ("C major", "F minor")
    assert diff["mode_agreement"] == 0.0 and diff["mode_strength_diff"] < 0
    assert diff["key_agreement"] == 0.0
    assert diff["onset_rate_log2_ratio"] == pytest.approx(1.0, abs=0.2)
    assert diff["pitch_class_distance"] > 0.3
    assert gen["loudness"] - ref["loudness"] == pytest.approx(-6.0, abs=1.0)
