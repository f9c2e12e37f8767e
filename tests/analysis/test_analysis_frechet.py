"""Frechet distance on embeddings: known answers, the small-sample bias, the bootstrap, and a
learned embedding (EnCodec, a tiny random config saved to and loaded from a local folder)."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from analysis import objective

ROOT = Path(__file__).resolve().parents[2]
RATE = 16000


def test_frechet_of_gaussians_with_known_covariances():
    """N(0, I) against N(0, 4I) in d dimensions: d (1 + 4 - 2 * 2) = d."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20000, 3)), 2 * rng.normal(size=(20000, 3))
    assert objective.frechet_distance(a, b) == pytest.approx(3.0, rel=0.03)


def test_frechet_of_singular_sets():
    """Fewer samples than dimensions: singular covariances, still exact for identical sets."""
    sample = np.random.default_rng(1).normal(size=(5, 40))
    assert objective.frechet_distance(sample, sample) == pytest.approx(0.0, abs=1e-8)


def test_small_sets_are_biased_upwards_and_flagged():
    """Two samples of the same distribution: the expected distance is not 0 and falls with N."""
    rng = np.random.default_rng(2)
    dim = 8

    def mean_distance(n):
        return np.mean([objective.frechet_distance(rng.normal(size=(n, dim)),
                                                   rng.normal(size=(n, dim)))
                        for _ in range(30)])

    small, large = mean_distance(10), mean_distance(200)
    assert small > 5 * large > 0
    summary = objective.frechet_summary(list(rng.normal(size=(6, dim))),
                                        list(rng.normal(size=(6, dim))), n_boot=50)
    assert summary["frechet_bias_warning"] and summary["samples"] == 6


def test_bootstrap_interval_is_seeded_and_brackets_a_clear_shift():
    rng = np.random.default_rng(3)
    reference = list(rng.normal(size=(60, 2)))
    shifted = list(rng.normal(size=(60, 2)) + [3.0, 4.0])
    first = objective.frechet_summary(shifted, reference, n_boot=200, seed=7)
    again = objective.frechet_summary(shifted, reference, n_boot=200, seed=7)
    assert first == again
    assert first["frechet_ci_low"] < 25.0 < first["frechet_ci_high"]
    assert first["frechet_ci_low"] < first["frechet_distance"] < first["frechet_ci_high"]
    assert not first["frechet_bias_warning"]


def test_frame_level_embeddings_count_frames_as_samples():
    rng = np.random.default_rng(4)
    clips = [rng.normal(size=(50, 4)) for _ in range(3)]
    summary = objective.frechet_summary(clips, clips, n_boot=20)
    assert summary["clips"] == 3 and summary["samples"] == 150 and summary["dimensions"] == 4
    assert summary["frechet_distance"] == pytest.approx(0.0, abs=1e-8)


@pytest.fixture(scope="module")
def encodec_folder(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.EncodecConfig(
        sampling_rate=RATE, upsampling_ratios=[8, 5, 4, 2], num_filters=4, hidden_size=16,
        codebook_size=32, codebook_dim=16, num_residual_layers=1, num_lstm_layers=1,
        target_bandwidths=[2.0], chunk_length_s=None, overlap=None)
    folder = tmp_path_factory.mktemp("encodec")
    transformers.EncodecModel(config).save_pretrained(folder)
    return folder


def write_set(root: Path) -> Path:
    """Two segments; `close` is the reference with a little noise, `far` is noise."""
    (root / "audio").mkdir(parents=True)
    rng = np.random.default_rng(5)
    segments, clips = [], []
    for index, frequency in enumerate([220.0, 330.0]):
        segment = f"s{index}"
        segments.append({"id": segment, "source": f"src{index}", "start": 0, "duration": 2})
        t = np.arange(2 * RATE) / RATE
        tone = 0.3 * np.sin(2 * np.pi * frequency * t) * np.exp(-((t * 2) % 1.0) * 6)
        audio = {"reference": tone, "close": tone + rng.normal(0, 0.003, t.size),
                 "far": rng.normal(0, 0.1, t.size)}
        for condition, signal in audio.items():
            path = f"audio/{segment}_{condition}.wav"
            wavfile.write(root / path, RATE, (signal * 32767).astype(np.int16))
            clips.append({"id": f"{segment}_{condition}", "segment": segment,
                          "condition": condition, "path": path,
                          "sha256": hashlib.sha256((root / path).read_bytes()).hexdigest()})
    (root / "manifest.json").write_text(json.dumps({"name": "fad", "segments": segments,
                                                    "clips": clips}))
    return root


def test_encodec_embedding_from_a_local_folder(encodec_folder, tmp_path):
    embedding = objective.load_embedding(f"encodec:{encodec_folder}")
    frames = embedding(np.zeros(RATE), RATE)
    assert frames.shape == (50, 16)  # 50 frames per second at hop 320
    table = objective.run_objective(write_set(tmp_path / "set"), tmp_path / "out",
                                    embedding=embedding, n_boot=30)
    frechet = table.attrs["frechet"]
    assert frechet["far"]["frechet_distance"] > frechet["close"]["frechet_distance"]
    assert frechet["close"]["samples"] == 2 * 100 and frechet["close"]["clips"] == 2
    summary = json.loads((tmp_path / "out" / "objective.json").read_text())
    assert summary["embedding"] == "encodec" and "biased" in summary["frechet_caveat"]
    assert set(summary["frechet"]["far"]) >= {"frechet_ci_low", "frechet_ci_high"}


def test_learned_embeddings_never_download(tmp_path):
    with pytest.raises(RuntimeError, match="not a local model folder"):
        objective.load_embedding(f"encodec:{tmp_path / 'facebook' / 'encodec_24khz'}")


def test_cli_with_a_learned_embedding(encodec_folder, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "analysis", "objective", str(write_set(tmp_path / "set")),
         "--out", str(tmp_path / "out"), "--embedding", f"encodec:{encodec_folder}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Frechet" in done.stdout
