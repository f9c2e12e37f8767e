"""Objective metrics over a small synthetic stimulus set with known tempo, pitch and level."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from analysis import objective

RATE = 22050
ROOT = Path(__file__).resolve().parents[2]


def tone_pulses(bpm: float, frequency: float, gain: float, seed: int, seconds: float = 6.0):
    """Decaying tone bursts on every beat: a clear tempo and a clear pitch class."""
    t = np.arange(int(seconds * RATE)) / RATE
    phase = (t * bpm / 60) % 1.0
    envelope = np.exp(-phase * 12)
    noise = np.random.default_rng(seed).normal(0, 0.003, t.size)
    return gain * envelope * np.sin(2 * np.pi * frequency * t) + noise


@pytest.fixture(scope="module")
def stimulus_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("set")
    (root / "audio").mkdir()
    plan = {  # condition -> (tempo factor, frequency factor, gain factor)
        "reference": (1.0, 1.0, 1.0),
        "faithful": (1.0, 1.0, 1.0),
        "unfaithful": (0.7, 2 ** (6 / 12), 0.5),  # slower, a tritone away, 6 dB quieter
    }
    sources, segments, clips = [], [], []
    for index, (bpm, frequency) in enumerate([(96, 220.0), (120, 261.63), (140, 329.63)]):
        source, segment = f"src{index}", f"src{index}_seg0"
        sources.append({"id": source, "video": f"video/{source}.mp4"})
        segments.append({"id": segment, "source": source, "start": 0, "duration": 6})
        for condition, (tempo_factor, pitch_factor, gain) in plan.items():
            audio = tone_pulses(bpm * tempo_factor, frequency * pitch_factor, 0.5 * gain,
                                seed=hash(condition) % 1000 + index)
            path = f"audio/{segment}_{condition}.wav"
            wavfile.write(root / path, RATE, (audio * 32767).astype(np.int16))
            clip = {"id": f"{segment}_{condition}", "segment": segment, "condition": condition,
                    "path": path, "sha256": hashlib.sha256((root / path).read_bytes()).hexdigest(),
                    "sample_rate": RATE, "channels": 1, "duration": 6.0, "loudness_lufs": -23}
            if condition != "reference":
                clip["provenance"] = {"model": "synthetic", "code_version": "test"}
            clips.append(clip)
    manifest = {"schema_version": "1.0", "name": "synthetic", "sources": sources,
                "segments": segments, "clips": clips}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_tempo_estimator_finds_known_tempi():
    for bpm in (72, 96, 128, 150):
        estimate = objective.estimate_tempo(tone_pulses(bpm, 440, 0.5, seed=bpm), RATE)
        assert estimate == pytest.approx(bpm, rel=0.03)


def test_metrics_separate_faithful_from_unfaithful_clips(stimulus_set, tmp_path):
    table = objective.run_objective(stimulus_set, tmp_path)
    by = table.groupby("condition")
    assert (by.get_group("faithful")["tempo_error"] < 0.03).all()
    assert (by.get_group("unfaithful")["tempo_error"] > 0.2).all()
    assert (by.get_group("faithful")["chroma_similarity"] > 0.95).all()
    assert (by.get_group("unfaithful")["chroma_similarity"] < 0.5).all()
    assert by.get_group("faithful")["loudness_diff"].abs().max() < 0.5
    # Half the amplitude, but also another pitch (K-weighting) and fewer bursts: quieter, not
    # exactly -6 LU; the pure gain case is tested below.
    assert (by.get_group("unfaithful")["loudness_diff"] < -3).all()
    assert (by.get_group("unfaithful")["logmel_distance"].min()
            > by.get_group("faithful")["logmel_distance"].max())
    frechet = table.attrs["frechet_distance"]
    assert frechet["unfaithful"] > frechet["faithful"]
    assert (tmp_path / "objective.csv").exists()
    summary = json.loads((tmp_path / "objective.json").read_text())
    assert summary["embedding"] == "mel_statistics"


def test_pluggable_embedding_and_tagger(stimulus_set):
    def loudness_only(audio, rate):
        return np.array([np.sqrt(np.mean(audio**2))])

    def fake_tagger(audio, rate):
        # "Tags" the dominant pitch class, a stand-in for a real classifier's labels.
        return {f"pc{int(np.argmax(objective.chroma(audio, rate)))}": 1.0}

    table = objective.run_objective(stimulus_set, embedding=loudness_only, tagger=fake_tagger)
    by = table.set_index("condition")["tag_jaccard"].groupby(level=0)
    assert (by.get_group("faithful") == 1.0).all()
    assert (by.get_group("unfaithful") == 0.0).all()
    assert table.attrs["frechet_distance"]["unfaithful"] > 0


def test_loudness_of_a_pure_gain_change_is_exact():
    audio = tone_pulses(100, 440, 0.5, seed=0)
    difference = objective.loudness(audio * 0.5, RATE) - objective.loudness(audio, RATE)
    assert difference == pytest.approx(20 * np.log10(0.5), abs=0.01)  # -6.02 LU


def test_tagger_gives_a_clear_error_for_a_missing_model(tmp_path):
    with pytest.raises(RuntimeError, match="does not exist"):
        objective.HuggingFaceTagger(tmp_path / "no-such-model")


def test_frechet_distance_of_identical_sets_is_zero():
    sample = np.random.default_rng(0).normal(size=(50, 3))
    assert objective.frechet_distance(sample, sample) == pytest.approx(0.0, abs=1e-8)


def test_cli_objective(stimulus_set, tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "analysis", "objective", str(stimulus_set), "--out",
         str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "6 clips" in completed.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "analysis", "objective", str(tmp_path / "nothing"), "--out",
         str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "manifest.json not found" in missing.stderr
