"""The clip tempo against the video's motion tempo, either candidate where the motion is
metrically ambiguous (issue 26, item 4)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from analysis import objective

RATE = 22050


def pulses(bpm: float, seconds: float = 8.0) -> np.ndarray:
    """Decaying 440 Hz bursts on every beat."""
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(int(bpm)).normal(0, 0.003, t.size)
    return 0.5 * np.exp(-((t * bpm / 60) % 1.0) * 12) * np.sin(2 * np.pi * 440 * t) + noise


def write_set(root: Path, features: dict) -> Path:
    """One segment whose real music is at 120 BPM; generated clips at 120, 60 and 90 BPM."""
    (root / "audio").mkdir(parents=True)
    clips = []
    for condition, bpm in {"reference": 120, "same": 120, "half": 60, "other": 90}.items():
        path = f"audio/{condition}.wav"
        wavfile.write(root / path, RATE, (pulses(bpm) * 32767).astype(np.int16))
        clips.append({"id": condition, "segment": "s0", "condition": condition, "path": path,
                      "sha256": hashlib.sha256((root / path).read_bytes()).hexdigest(),
                      "sample_rate": RATE, "channels": 1, "duration": 8.0,
                      "loudness_lufs": -23})
    manifest = {"schema_version": "1.0", "name": "motion", "clips": clips,
                "sources": [{"id": "src", "video": "video/src.mp4"}],
                "segments": [{"id": "s0", "source": "src", "start": 0, "duration": 8,
                              "features": features}]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


# what accented bowing at 120 BPM (up-bows half as strong) gives: 60 first, 120 second
AMBIGUOUS = {"tempo_bpm": 60.0, "tempo_ambiguous": True,
             "tempo_candidates": [{"bpm": 60.0, "salience": 0.93}, {"bpm": 120.0, "salience": 0.7}]}


@pytest.mark.parametrize("ambiguous", [True, False])
def test_motion_tempo_agreement_counts_either_candidate_only_when_ambiguous(ambiguous, tmp_path):
    features = dict(AMBIGUOUS, tempo_ambiguous=ambiguous)
    table = objective.run_objective(write_set(tmp_path / "set", features), tmp_path / "out")
    rows = table.set_index("condition")
    assert rows["motion_tempo"].tolist() == [60.0] * 3
    assert rows["motion_tempo_alternative"].tolist() == [120.0] * 3
    assert rows["motion_tempo_ambiguous"].tolist() == [ambiguous] * 3
    # the music at the performer's 120 BPM matches only when the motion may mean 120
    assert rows.loc["same", "motion_tempo_match"] == float(ambiguous)
    assert rows.loc["same", "motion_tempo_match_reference"] == float(ambiguous)
    assert rows.loc["half", "motion_tempo_match"] == 1.0
    assert rows.loc["other", "motion_tempo_match"] == 0.0
    # the ratio is to the nearer candidate when ambiguous: 120 vs 120, else 120 vs 60
    expected = 0.0 if ambiguous else 1.0
    assert rows.loc["same", "motion_tempo_log2_ratio"] == pytest.approx(expected, abs=0.03)
    summary = {row["condition"]: row for row in table.attrs["motion_tempo_agreement"]}
    assert summary["same"]["matched_by_alternative"] == int(ambiguous)
    assert summary["half"]["matched_by_alternative"] == 0
    assert summary["same"]["ambiguous"] == int(ambiguous)
    written = json.loads((tmp_path / "out" / "objective.json").read_text())
    assert {row["condition"] for row in written["motion_tempo_agreement"]} == {
        "same", "half", "other"}


def test_segments_without_motion_tempo_have_no_agreement(tmp_path):
    table = objective.run_objective(write_set(tmp_path / "set", {"tempo_bpm": None}))
    assert table["motion_tempo_match"].isna().all()
    assert not table["motion_tempo_ambiguous"].any()
    summary = objective.motion_tempo_summary(table)
    assert summary["clips"].tolist() == [0, 0, 0]


def test_older_sets_with_the_tempo_alone_compare_with_it_alone():
    candidates, ambiguous = objective.motion_tempo_candidates({"tempo_bpm": 60.0})
    assert (candidates, ambiguous) == ([60.0], False)
    assert objective.motion_tempo_agreement(120.0, candidates, ambiguous)[1] == 0.0
    assert objective.motion_tempo_agreement(62.0, candidates, ambiguous)[1] == 1.0
