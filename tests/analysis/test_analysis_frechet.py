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


@pytest.mark.model  # a tiny EnCodec
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


@pytest.mark.model  # a tiny EnCodec
def test_cli_with_a_learned_embedding(encodec_folder, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "analysis", "objective", str(write_set(tmp_path / "set")),
         "--out", str(tmp_path / "out"), "--embedding", f"encodec:{encodec_folder}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Frechet" in done.stdout


# --- distances between small sets: FAD-inf and the unbiased MMD (issue 26, item 3) ---------
# Simulated embedding sets with a known truth: two sets of N clips from N(0, I), equal or with
# the generated set's mean shifted along one axis. docs/analysis.md has the full tables
# (scripts/simulate_set_distances.py); these tests check the claims at the sizes of listening
# studies, seeded, so they are deterministic.


def gaussian_sets(rng, size, dim, shift=0.0):
    generated = rng.normal(size=(size, dim))
    generated[:, 0] += shift
    return list(generated), list(rng.normal(size=(size, dim)))


def test_fast_trace_root_matches_scipy_sqrtm():
    """The Gram-matrix route (fewer samples than dimensions) and the Cholesky route agree with
    the textbook formula through scipy's matrix square root."""
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(10)
    for rows_a, rows_b, dim in [(12, 20, 40), (200, 150, 16), (300, 9, 24)]:
        a = rng.normal(size=(rows_a, dim))
        b = 1.5 * rng.normal(size=(rows_b, dim)) + 0.3
        cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        textbook = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                    - 2 * np.real(np.trace(sqrtm(cov_a @ cov_b))))
        assert objective.frechet_distance(a, b) == pytest.approx(textbook, rel=1e-6)


def test_mmd_u_statistic_matches_its_definition():
    """Gretton et al. (2012), eq. 3, written out with loops, at the reported bandwidth."""
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(9, 3)) + 0.5
    summary = objective.mmd_summary(list(x), list(y), n_permutations=99)
    h = summary["mmd_bandwidth"]
    pooled = np.vstack([x, y])
    distances = [np.linalg.norm(p - q) for i, p in enumerate(pooled) for q in pooled[i + 1:]]
    assert h == pytest.approx(np.median(distances))

    def k(p, q):
        return np.exp(-np.sum((p - q) ** 2) / (2 * h**2))

    xx = sum(k(p, q) for i, p in enumerate(x) for j, q in enumerate(x) if i != j) / (7 * 6)
    yy = sum(k(p, q) for i, p in enumerate(y) for j, q in enumerate(y) if i != j) / (9 * 8)
    xy = sum(k(p, q) for p in x for q in y) / (7 * 9)
    assert summary["mmd2"] == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_mmd_is_unbiased_and_its_interval_covers_zero_for_equal_distributions():
    """Equal distributions, 128 and 8 dimensions, N = 10 and 32 clips per set, 200 runs each:
    the interval covers the true 0 in 90-99 % of runs, the permutation test rejects at the
    5 % level in about 5 %, and the mean MMD^2 is 0 within its standard error (the Frechet
    distance of the same sets is far from 0: see test_small_sets_are_biased_upwards)."""
    rng = np.random.default_rng(12)
    rejections = []
    for dim in (128, 8):
        for size in (10, 32):
            runs = [objective.mmd_summary(*gaussian_sets(rng, size, dim), n_permutations=200,
                                          seed=run) for run in range(200)]
            values = np.array([r["mmd2"] for r in runs])
            covered = np.mean([r["mmd2_ci_low"] <= 0 <= r["mmd2_ci_high"] for r in runs])
            assert 0.90 <= covered <= 0.99, (dim, size, covered)
            assert abs(values.mean()) < 3 * values.std() / np.sqrt(len(values)), (dim, size)
            rejections += [r["mmd_pval"] < 0.05 for r in runs]
    assert 0.03 <= np.mean(rejections) <= 0.075, np.mean(rejections)


def test_mmd_detects_a_moderate_shift_at_32_clips():
    """A mean shift of 2 SD along one axis (Cohen's d = 2 on one of 128 dimensions, 1 on one
    of 8 for the smaller space): found (p < 0.05) in most of 50 runs; the interval covers the
    population MMD^2 at the chosen bandwidth (closed form for Gaussians) in most runs."""
    rng = np.random.default_rng(13)
    for dim, shift in ((128, 2.0), (8, 1.0)):
        runs = [objective.mmd_summary(*gaussian_sets(rng, 32, dim, shift), n_permutations=200,
                                      seed=run) for run in range(50)]
        assert np.mean([r["mmd_pval"] < 0.05 for r in runs]) >= 0.75, dim
        h2 = np.array([r["mmd_bandwidth"] for r in runs]) ** 2
        truth = 2 * (h2 / (h2 + 2)) ** (dim / 2) * (1 - np.exp(-shift**2 / (2 * (h2 + 2))))
        covered = np.mean([r["mmd2_ci_low"] <= t <= r["mmd2_ci_high"]
                           for r, t in zip(runs, truth, strict=True)])
        assert covered >= 0.8, (dim, covered)


def test_fad_inf_removes_most_of_the_small_set_bias():
    """Equal distributions in 8 dimensions, 32 clips per set (extrapolable: subsets of 16 > 8
    samples): the plain distance averages ~1.7, FAD-inf ~0, at least 10 times closer to the
    truth; its jackknife interval covers 0 in most runs."""
    rng = np.random.default_rng(14)
    plain, extrapolated, covered = [], [], []
    for run in range(20):
        generated, reference = gaussian_sets(rng, 32, 8)
        plain.append(objective.frechet_distance(np.array(generated), np.array(reference)))
        inf = objective.fad_infinity(generated, reference, draws=4, groups=8, seed=run)
        assert inf["fad_inf_extrapolable"]
        extrapolated.append(inf["fad_inf"])
        covered.append(inf["fad_inf_ci_low"] <= 0 <= inf["fad_inf_ci_high"])
    assert abs(np.mean(extrapolated)) * 10 < np.mean(plain)
    assert np.mean(covered) >= 0.85


def test_fad_inf_says_when_a_set_is_too_small_to_extrapolate():
    """The rule: the smallest subsets (half of each set) need more samples than dimensions.
    32 clips of mel statistics (128 values) cannot be extrapolated; 64 clips in 16 can."""
    rng = np.random.default_rng(15)
    small = objective.fad_infinity(*gaussian_sets(rng, 32, 128), draws=2, groups=4)
    assert not small["fad_inf_extrapolable"]
    assert small["fad_inf_subset_clips"][0] == [16, 16]
    large = objective.fad_infinity(*gaussian_sets(rng, 64, 16), draws=2, groups=4)
    assert large["fad_inf_extrapolable"]
    with pytest.raises(ValueError, match="at least 4 clips"):
        objective.fad_infinity(*gaussian_sets(rng, 3, 2))


def test_bias_flag_is_on_while_most_of_the_distance_is_bias():
    """64 clips in 16 dimensions: more samples than dimensions, so the old flag was off,
    though for equal distributions all of the distance is small-set bias. The flag follows
    FAD-inf's estimate of the bias share; a real difference (shift 6 SD) keeps it off."""
    rng = np.random.default_rng(16)
    same = objective.frechet_summary(*gaussian_sets(rng, 64, 16), n_boot=20)
    assert same["samples"] > same["dimensions"] and same["fad_inf_extrapolable"]
    assert same["frechet_bias_share"] > 0.5 and same["frechet_bias_warning"]
    shifted = objective.frechet_summary(*gaussian_sets(rng, 64, 16, shift=6.0), n_boot=20)
    assert shifted["frechet_bias_share"] < 0.2 and not shifted["frechet_bias_warning"]
    assert shifted["fad_inf_ci_low"] < 36.0 < shifted["fad_inf_ci_high"]


def test_frame_level_mmd_excludes_pairs_within_a_clip():
    """Frames of one clip are alike (a clip offset plus frame noise): counting pairs of frames
    of the same clip within a set would bias MMD^2 upwards; the clip-level U-statistic
    leaves them out, so for equal distributions the mean stays at 0."""
    rng = np.random.default_rng(17)

    def clips(count):
        return [rng.normal(size=(1, 4)) * 2 + 0.3 * rng.normal(size=(20, 4))
                for _ in range(count)]

    values = [objective.mmd_summary(clips(12), clips(12), n_permutations=50)["mmd2"]
              for _ in range(100)]
    assert abs(np.mean(values)) < 3 * np.std(values) / 10


@pytest.mark.slow
def test_report_shows_the_set_distances_with_mmd_first(tmp_path):
    """`--objective objective.csv` with its objective.json beside it: the study report gets a
    set_distances table (MMD^2 test, Holm across conditions, FD with its flag, FAD-inf) whose
    title names MMD as the between-set test. Runs the report's R models, hence slow."""
    from analysis.report import ReportConfig, report_from_files
    from analysis.simulate import Truth, simulate_export

    truth = Truth(abx_accuracy={"same": 0.5, "shifted": 0.85}, keeps_emotion=("same",),
                  loses_emotion=("shifted",))
    responses, study = simulate_export(tmp_path / "export", participants=20, abx_trials=8,
                                       rating_trials=8, sources=4, truth=truth, seed=1)
    rng = np.random.default_rng(18)
    reference = list(rng.normal(size=(20, 8)))
    frechet, mmd = {}, {}
    for condition, shift in (("same", 0.0), ("shifted", 6.0)):
        generated = rng.normal(size=(20, 8))
        generated[:, 0] += shift
        frechet[condition] = objective.frechet_summary(list(generated), reference, n_boot=20)
        mmd[condition] = objective.mmd_summary(list(generated), reference, n_permutations=200)
    objective_csv = tmp_path / "objective.csv"
    objective_csv.write_text("clip,segment,condition,tempo_error\nc1,s1,same,0.1\n")
    (tmp_path / "objective.json").write_text(json.dumps({"frechet": frechet, "mmd": mmd}))
    report_from_files(responses, study, tmp_path / "report",
                      ReportConfig(n_boot=100, n_permutations=100), objective_csv)
    import pandas as pd

    table = pd.read_csv(tmp_path / "report" / "tables" / "set_distances.csv")
    assert table["condition"].tolist() == ["same", "shifted"]
    assert table["mmd_pval_holm"].iloc[1] < 0.05 < table["mmd_pval_holm"].iloc[0]
    assert table["frechet_bias_warning"].iloc[0] and not table["frechet_bias_warning"].iloc[1]
    assert (table["fad_inf_ci_low"] < table["fad_inf_ci_high"]).all()
    page = (tmp_path / "report" / "report.html").read_text()
    assert "MMD^2 permutation test is the between-set test" in page
