"""basic-pitch's pretrained model (ONNX, onnxruntime) on a rendered melody of known notes."""

import numpy as np
import pandas as pd
import pytest

from analysis import cues, transcription

RATE = 22050
# (MIDI pitch, start s, duration s): steps, a leap of a fourth and one below the first note
MELODY = [(60, 0.0, 0.4), (62, 0.5, 0.4), (64, 1.0, 0.4), (65, 1.5, 0.4), (67, 2.0, 0.8),
          (72, 3.0, 0.4), (69, 3.5, 0.4), (57, 4.0, 0.8)]


def render(notes, rate: int = RATE, seconds: float = 5.2) -> np.ndarray:
    """Harmonic tones (six partials at 0.5**k), 10 ms attack, exponential decay, 20 ms release."""
    audio = np.zeros(int(seconds * rate))
    for pitch, start, duration in notes:
        t = np.arange(int(duration * rate)) / rate
        envelope = np.minimum(1, t / 0.01) * np.exp(-2 * t) * np.minimum(1, (duration - t) / 0.02)
        f = 440.0 * 2 ** ((pitch - 69) / 12)
        partials = sum(0.5**k * np.sin(2 * np.pi * f * (k + 1) * t) for k in range(6))
        first = int(start * rate)
        audio[first: first + len(t)] += 0.3 * envelope * partials
    return audio


def truth() -> pd.DataFrame:
    return pd.DataFrame({"start": [n[1] for n in MELODY], "end": [n[1] + n[2] for n in MELODY],
                         "pitch": [n[0] for n in MELODY], "amplitude": 1.0})


@pytest.fixture(scope="module")
def basic_pitch():
    # Installed with --no-deps, cached, or fetched from PyPI by pip (pinned wheel, SHA-256).
    return transcription.BasicPitch()


@pytest.mark.slow
def test_basic_pitch_transcribes_a_rendered_melody(basic_pitch):
    notes = basic_pitch(render(MELODY), RATE)
    expected = truth()
    import mir_eval

    ref_int = expected[["start", "end"]].to_numpy()
    est_int = notes[["start", "end"]].to_numpy()
    matching = mir_eval.transcription.match_notes(
        ref_int, mir_eval.util.midi_to_hz(expected["pitch"].to_numpy(float)),
        est_int, mir_eval.util.midi_to_hz(notes["pitch"].to_numpy(float)), offset_ratio=None)
    assert len(matching) == len(MELODY)  # every note found: onset within 50 ms, right pitch
    assert transcription.note_f1(notes, expected) >= 0.9  # at most one spurious note
    found = notes.iloc[[est for _, est in matching]]
    assert sorted(found["pitch"]) == sorted(n[0] for n in MELODY)
    assert np.abs(found["start"].to_numpy() - expected["start"].to_numpy()[
        [ref for ref, _ in matching]]).max() < 0.03
    # the descriptors of the transcription are those of the score
    assert transcription.pitch_range(found) == 15.0  # A3 (57) to C5 (72)
    assert transcription.note_density(notes) == pytest.approx(len(notes) / 5.2)
    histogram = transcription.pitch_class_histogram(notes)
    assert cues.pitch_class_distance(histogram,
                                     transcription.pitch_class_histogram(expected)) < 0.15


@pytest.mark.slow
def test_basic_pitch_hears_a_transposition_and_the_tempo(basic_pitch):
    """A melody a fifth up and twice as dense against the original: the note columns of
    objective.csv move the known way."""
    original = basic_pitch(render(MELODY), RATE)
    fast = [(p + 7, s / 2, d / 2) for p, s, d in MELODY] + [
        (p + 7, 2.6 + s / 2, d / 2) for p, s, d in MELODY]
    changed = basic_pitch(render(fast), RATE)
    score = pd.DataFrame({"start": [n[1] for n in fast], "end": [n[1] + n[2] for n in fast],
                          "pitch": [n[0] for n in fast]})
    assert transcription.note_f1(changed, score) >= 0.85  # measured 0.89: all 16, 4 partials
    difference = transcription.note_differences(changed, original)
    # the score adds 8 notes in 5.2 s (1.5/s); the model's extra partials only add to that
    assert 1.2 < difference["note_density_diff"] < 2.5
    assert difference["note_pitch_class_distance"] > 0.3
    assert difference["note_f1"] < 0.3


@pytest.mark.slow
def test_basic_pitch_resamples_other_rates(basic_pitch):
    rate = 16000
    notes = basic_pitch(render(MELODY, rate), rate)
    assert transcription.note_f1(notes, truth()) >= 0.9


def test_note_descriptors_without_notes():
    empty = pd.DataFrame(columns=transcription.NOTE_COLUMNS)
    empty.attrs["duration"] = 3.0
    assert transcription.note_density(empty) == 0.0
    assert np.isnan(transcription.pitch_range(empty))
    assert transcription.note_f1(empty, empty) == 1.0
    assert transcription.note_f1(empty, truth()) == 0.0


def test_unavailable_without_fetching(monkeypatch, tmp_path):
    monkeypatch.setenv("SIGHTSOUND_CACHE", str(tmp_path))
    monkeypatch.setattr(transcription.importlib.util, "find_spec", lambda name: (
        None if name == "basic_pitch" else object()))
    monkeypatch.delitem(transcription.sys.modules, "basic_pitch", raising=False)
    with pytest.raises(transcription.TranscriptionUnavailable, match="neither installed"):
        transcription.basic_pitch_package(fetch=False)


@pytest.mark.slow
def test_objective_with_notes_on_a_set(basic_pitch, tmp_path):
    import hashlib
    import json

    from scipy.io import wavfile

    from analysis import objective

    (tmp_path / "audio").mkdir()
    audio = {"reference": render(MELODY), "same": render(MELODY),
             "fifth_up": render([(p + 7, s, d) for p, s, d in MELODY])}
    clips = []
    for condition, signal in audio.items():
        path = f"audio/s0_{condition}.wav"
        wavfile.write(tmp_path / path, RATE, (signal / 2 * 32767).astype(np.int16))
        clips.append({"id": f"s0_{condition}", "segment": "s0", "condition": condition,
                      "path": path,
                      "sha256": hashlib.sha256((tmp_path / path).read_bytes()).hexdigest()})
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"segments": [{"id": "s0", "source": "v0"}], "clips": clips}))
    table = objective.run_objective(tmp_path, transcriber=basic_pitch, n_boot=0)
    rows = table.set_index("condition")
    assert rows.loc["same", "note_f1"] == 1.0 and rows.loc["same", "note_density_diff"] == 0.0
    assert rows.loc["fifth_up", "note_f1"] == 0.0
    assert rows.loc["fifth_up", "note_pitch_class_distance"] > 0.3
    # the melody sits between C major and A minor (it ends on A); a fifth up is a fifth up
    assert rows.loc["same", "key_agreement"] == 1.0
    assert rows.loc["fifth_up", "key_agreement"] == 0.5
