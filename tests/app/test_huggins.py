"""The Huggins-pitch headphone screen (Milne et al., 2021, Behav Res Methods 53:1551-1562): the
stimuli have the binaural properties the test relies on (measured on the generated audio), the
trials are scheduled fairly for each `method`, and each test is scored by its own pass rule."""

from __future__ import annotations

import csv
import io
import random
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from flow import read_page, start
from sqlalchemy import select

from study_app.audio import read_wav_info, read_wav_samples
from study_app.design import DesignError, normalize_design, with_defaults
from study_app.export import responses_csv
from study_app.extensions import db
from study_app.headphone_check import (
    HUGGINS_NOISE_SEEDS,
    HugginsTrial,
    failed_methods,
    huggins_calibration_wav_bytes,
    huggins_trial_wav_bytes,
    render_huggins_calibration,
    render_huggins_trial,
    schedule_headphone_trials,
    schedule_huggins_trials,
)
from study_app.models import Study, Trial
from study_app.quality import block_screening_failed
from study_app.scheduling import block_rng
from study_app.trial_types import get_trial_type
from study_app.trial_types.headphone import screening_passed

SR = 44100
N = SR  # a 1000 ms interval
GAP = SR // 2  # 500 ms of silence between intervals
RAMP = int(0.02 * SR)
FREQS = np.fft.rfftfreq(N, 1 / SR)
# The published band: 600 Hz +- 6 % (written out here, not taken from the module under test).
BAND = (FREQS >= 564.0) & (FREQS <= 636.0)
CORE = (FREQS >= 570.0) & (FREQS <= 630.0)  # the band less the edges a ramp can blur
OUTSIDE = (FREQS < 540.0) | (FREQS > 660.0)
ALL_TRIALS = [HugginsTrial(t, s) for t in (1, 2, 3) for s in range(HUGGINS_NOISE_SEEDS)]


def interval(audio: np.ndarray, position: int) -> np.ndarray:
    start_at = (position - 1) * (N + GAP)
    return audio[start_at : start_at + N]


def power(x: np.ndarray, window: bool = False) -> np.ndarray:
    """Power spectrum of one interval; with `window`, Hann-windowed so that the ramps' spectral
    leakage does not fill the notch (rectangular analysis of a ramped interval would)."""
    return np.abs(np.fft.rfft(x * np.hanning(len(x)) if window else x)) ** 2


def decibels(ratio: float) -> float:
    return float(10 * np.log10(ratio))


def rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(x)))))


# --- the stimuli ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", [1, 2, 3])
def test_construction_is_exact_without_ramps(target: int) -> None:
    """Unramped, the construction is exact: diotic outside the band, L = -R inside it, in the
    DFT of the target interval; the other intervals are identical in both ears."""
    audio = render_huggins_trial(HugginsTrial(target, 3), SR, ramp_s=0.0)
    assert audio.shape == (3 * N + 2 * GAP, 2)
    for position in (1, 2, 3):
        x = interval(audio, position)
        if position != target:
            assert np.array_equal(x[:, 0], x[:, 1])
            continue
        left, right = np.fft.rfft(x[:, 0]), np.fft.rfft(x[:, 1])
        scale = np.max(np.abs(left))
        assert np.max(np.abs(left[~BAND] - right[~BAND])) < 1e-9 * scale
        assert np.max(np.abs(left[BAND] + right[BAND])) < 1e-9 * scale
        assert BAND.sum() == 73  # 564 ... 636 Hz at 1 Hz resolution
        # Each ear alone: the same magnitude spectrum, so no monaural cue in either channel.
        assert np.allclose(np.abs(left), np.abs(right), rtol=1e-9, atol=1e-9 * scale)
    assert not audio[N : N + GAP].any() and not audio[2 * N + GAP : 2 * N + 2 * GAP].any()


@pytest.mark.parametrize("trial", ALL_TRIALS[::5], ids=repr)
def test_as_rendered_sum_has_a_notch_only_in_the_target(trial: HugginsTrial) -> None:
    """With the ramps: in the target interval L + R has (almost) nothing in the band while L
    alone has its share there; the other intervals' sum is just 2 L (no notch); L - R is
    confined to the band."""
    audio = render_huggins_trial(trial, SR)
    for position in (1, 2, 3):
        x = interval(audio, position)
        left = power(x[:, 0], window=True)
        total = power(x[:, 0] + x[:, 1], window=True)
        notch = decibels(total[CORE].sum() / (4 * left[CORE].sum()))
        if position == trial.target_position:
            assert notch < -60.0, notch  # measured about -82 dB
            side = power(x[:, 0] - x[:, 1], window=True)
            assert decibels(side[OUTSIDE].sum() / left[OUTSIDE].sum()) < -50.0
            # inside the band the two ears are in antiphase: correlation -1
            hann = np.hanning(N)
            lc, rc = np.fft.rfft(x[:, 0] * hann)[CORE], np.fft.rfft(x[:, 1] * hann)[CORE]
            corr = np.real(np.vdot(lc, rc)) / (np.linalg.norm(lc) * np.linalg.norm(rc))
            assert corr < -0.999
        else:
            assert np.array_equal(x[:, 0], x[:, 1])
            assert notch == pytest.approx(0.0, abs=1e-9)


def test_each_channel_is_flat_through_the_band() -> None:
    """Either ear alone hears white noise: the band holds the same power per Hz as its
    neighbours (averaged over the whole noise pool; each bin is a chi-square draw)."""
    ratios = []
    for channel in (0, 1):
        in_band, beside = 0.0, 0.0
        for trial in ALL_TRIALS:
            x = interval(render_huggins_trial(trial, SR, ramp_s=0.0), trial.target_position)
            p = power(x[:, channel])
            in_band += p[BAND].mean()
            beside += p[((FREQS >= 400) & (FREQS < 560)) | ((FREQS > 640) & (FREQS <= 800))].mean()
        ratios.append(decibels(in_band / beside))
    assert all(abs(r) < 0.5 for r in ratios), ratios


def test_levels_equal_across_intervals_and_no_clipping() -> None:
    peaks = []
    for trial in ALL_TRIALS:
        audio = render_huggins_trial(trial, SR, level_dbfs=-20.0)
        levels = [rms_db(interval(audio, p)[:, c]) for p in (1, 2, 3) for c in (0, 1)]
        assert max(levels) - min(levels) < 0.05, levels
        steady = [rms_db(interval(audio, p)[RAMP:-RAMP, c]) for p in (1, 2, 3) for c in (0, 1)]
        assert all(abs(level + 20.0) < 0.3 for level in steady), steady
        peaks.append(np.max(np.abs(audio)))
    assert max(peaks) < 10 ** (-3 / 20), max(peaks)  # at least 3 dB of headroom (measured ~5.8)
    with pytest.raises(ValueError):
        render_huggins_trial(HugginsTrial(1, 0), SR, level_dbfs=-6.0)


def test_deterministic_per_seed() -> None:
    a = render_huggins_trial(HugginsTrial(2, 5), SR)
    assert np.array_equal(a, render_huggins_trial(HugginsTrial(2, 5), SR))
    assert not np.array_equal(a[:N, 0], render_huggins_trial(HugginsTrial(2, 4), SR)[:N, 0])
    # The seed fixes the noise, the target only where the flip goes: the left ear is the same.
    assert np.array_equal(a[:, 0], render_huggins_trial(HugginsTrial(3, 5), SR)[:, 0])
    assert huggins_trial_wav_bytes(HugginsTrial(2, 5)) == huggins_trial_wav_bytes(
        HugginsTrial(2, 5)
    )


def test_wav_bytes_same_length_and_keep_the_notch() -> None:
    sizes = set()
    for trial in ALL_TRIALS[::4]:
        data = huggins_trial_wav_bytes(trial)
        sizes.add(len(data))
        info = read_wav_info(io.BytesIO(data))
        assert (info.channels, info.sample_rate, info.sample_width) == (2, SR, 2)
        assert info.duration == pytest.approx(4.0)
        samples, _ = read_wav_samples(io.BytesIO(data))
        x = interval(samples, trial.target_position)
        notch = power(x[:, 0] + x[:, 1], window=True)[CORE].sum()
        assert decibels(notch / (4 * power(x[:, 0], window=True)[CORE].sum())) < -60.0
    assert len(sizes) == 1


def test_calibration_noise() -> None:
    noise = render_huggins_calibration(duration=3.0, level_dbfs=-20.0)
    assert np.array_equal(noise[:, 0], noise[:, 1])
    assert rms_db(noise[SR // 10 : -SR // 10, 0]) == pytest.approx(-20.0, abs=0.3)
    p = power(noise[:, 0])
    f = np.fft.rfftfreq(len(noise), 1 / SR)
    # white: as much power per Hz at 1-2 kHz as at 10-11 kHz
    low, high = p[(f >= 1000) & (f < 2000)].mean(), p[(f >= 10000) & (f < 11000)].mean()
    assert abs(decibels(low / high)) < 0.5
    assert huggins_calibration_wav_bytes() == huggins_calibration_wav_bytes()


def test_trial_validation() -> None:
    for bad in ((0, 1), (4, 1), (1, -1), (1, HUGGINS_NOISE_SEEDS), (True, 1)):
        with pytest.raises(ValueError):
            HugginsTrial(*bad)


# --- scheduling ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 7, 12, 24])
def test_huggins_schedule_is_even(n: int) -> None:
    trials = schedule_huggins_trials(n, random.Random(n))
    assert len(trials) == n
    targets = Counter(t.target_position for t in trials)
    assert max(targets.values()) - min(targets.get(p, 0) for p in (1, 2, 3)) <= 1
    seeds = Counter(t.noise_seed for t in trials)
    assert max(seeds.values()) - min(seeds.get(s, 0) for s in range(8)) <= 1 or n < 8
    if n <= HUGGINS_NOISE_SEEDS:
        assert len(seeds) == n  # no noise heard twice


def test_huggins_schedule_is_pure_and_shuffled() -> None:
    assert schedule_huggins_trials(6, random.Random(1)) == schedule_huggins_trials(
        6, random.Random(1)
    )
    orders = {
        tuple(t.target_position for t in schedule_huggins_trials(6, random.Random(s)))
        for s in range(30)
    }
    assert len(orders) > 10


def _block(**options) -> dict:
    return with_defaults({"id": "hp", "type": "headphone_check", **options})


def test_antiphase_schedule_is_what_it_was() -> None:
    """Default method: the same trials in the same order as before `method` existed (the type
    drew its arrangements, then the scheduler shuffled the block with the same stream)."""
    hp = get_trial_type("headphone_check")
    for seed in range(20):
        specs = hp.schedule(_block(), None, 0, block_rng(seed, 1))
        rng = block_rng(seed, 1)
        old = [
            {"quiet_position": t.quiet_position, "antiphase_position": t.antiphase_position}
            for t in schedule_headphone_trials(6, rng)
        ]
        rng.shuffle(old)
        assert [{k: s[k] for k in old[0]} for s in specs] == old
        assert all(s["method"] == "antiphase" for s in specs)


def test_schedule_per_method() -> None:
    hp = get_trial_type("headphone_check")
    huggins = hp.schedule(_block(method="huggins"), None, 0, random.Random(3))
    assert [s["method"] for s in huggins] == ["huggins"] * 6
    assert Counter(s["correct_answer"] for s in huggins) == {"1": 2, "2": 2, "3": 2}
    assert all(s["correct_answer"] == str(s["target_position"]) for s in huggins)
    both = hp.schedule(_block(method="both", trials=4), None, 0, random.Random(3))
    # antiphase first, then Huggins: one task at a time
    assert [s["method"] for s in both] == ["antiphase"] * 4 + ["huggins"] * 4
    for spec in both:
        media = hp.media(spec)
        assert set(media) == {"tones", "calibration"}  # same slots for either test
        data = hp.render_media(media["tones"], lambda key: Path(key))
        assert read_wav_info(io.BytesIO(data)).duration == pytest.approx(4.0)
        context = hp.page_context(spec, _block(method="both"))
        assert context["huggins"] == (spec["method"] == "huggins")
        assert not set(map(str, context.values())) & {spec["correct_answer"]}


# --- scoring -------------------------------------------------------------------------------


def test_failed_methods_rule() -> None:
    right, wrong = True, False
    assert failed_methods("huggins", [("huggins", wrong)], 6, 5) == ()
    assert failed_methods("huggins", [("huggins", wrong)] * 2, 6, 5) == ("huggins",)
    both = [("antiphase", wrong), ("huggins", wrong)] + [("antiphase", right)] * 5
    assert failed_methods("both", both, 6, 5) == ()  # 5 of 6 in each test passes
    both.append(("huggins", wrong))
    assert failed_methods("both", both, 6, 5) == ("huggins",)
    assert failed_methods("both", [("antiphase", wrong)] * 2, 6, 5) == ("antiphase",)
    with pytest.raises(ValueError):
        failed_methods("loudness", [], 6, 5)


def _trials(specs: list[dict], answers: list[str | None]) -> list[SimpleNamespace]:
    """Stand-ins for stored Trial rows: what block_screening_failed reads."""
    return [
        SimpleNamespace(
            spec=spec, response=None if a is None else SimpleNamespace(answer={"answer": a})
        )
        for spec, a in zip(specs, answers, strict=True)
    ]


def _answers(specs: list[dict], wrong_at: set[int], upto: int | None = None) -> list[str | None]:
    out: list[str | None] = []
    for i, spec in enumerate(specs):
        right = spec["correct_answer"]
        out.append(
            None
            if upto is not None and i >= upto
            else (right if i not in wrong_at else str(int(right) % 3 + 1))
        )
    return out


@pytest.mark.parametrize("method", ["antiphase", "huggins"])
def test_block_screening_single_method(method: str) -> None:
    hp = get_trial_type("headphone_check")
    block = {"id": "hp", "type": "headphone_check", "method": method}
    specs = hp.schedule(with_defaults(block), None, 0, random.Random(7))
    assert not block_screening_failed(block, _trials(specs, _answers(specs, {0})))
    assert block_screening_failed(block, _trials(specs, _answers(specs, {0, 5})))
    # certain after two wrong answers, before the block is done
    assert block_screening_failed(block, _trials(specs, _answers(specs, {0, 1}, upto=2)))
    assert not block_screening_failed(block, _trials(specs, _answers(specs, {0}, upto=2)))


def test_block_screening_both_must_pass() -> None:
    hp = get_trial_type("headphone_check")
    block = {"id": "hp", "type": "headphone_check", "method": "both"}
    specs = hp.schedule(with_defaults(block), None, 0, random.Random(7))
    assert len(specs) == 12
    # one wrong in each test: 5 of 6 in each, passed (the 12 trials are not pooled)
    assert not block_screening_failed(block, _trials(specs, _answers(specs, {0, 6})))
    # both wrong answers in the Huggins part: failed, though 10 of 12 are right overall
    assert block_screening_failed(block, _trials(specs, _answers(specs, {6, 7})))
    assert block_screening_failed(block, _trials(specs, _answers(specs, {1, 2})))
    passed = [(s["method"], i not in {0, 6}) for i, s in enumerate(specs)]
    assert screening_passed(with_defaults(block), passed)
    failed = [(s["method"], i not in {6, 7}) for i, s in enumerate(specs)]
    assert not screening_passed(with_defaults(block), failed)


def test_old_specs_without_method_score_as_antiphase() -> None:
    block = {"id": "hp", "type": "headphone_check"}
    specs = [{"quiet_position": 1, "antiphase_position": 2, "correct_answer": "1"}] * 6
    assert block_screening_failed(block, _trials(specs, ["2", "2"] + ["1"] * 4))
    assert (
        get_trial_type("headphone_check").export_fields(specs[0], {"answer": "1"})[
            "headphone_method"
        ]
        == "antiphase"
    )


# --- design validation ---------------------------------------------------------------------


def _design(**options) -> dict:
    return {
        "slug": "hp-test",
        "title": "t",
        "stimulus_set": "demo",
        "blocks": [{"id": "hp", "type": "headphone_check", **options}],
    }


def test_design_validation_of_method() -> None:
    hp = get_trial_type("headphone_check")
    for method in ("antiphase", "huggins", "both"):
        design = normalize_design(_design(method=method))
        assert hp.validate_block(design["blocks"][0], None) == []
    assert normalize_design(_design())["blocks"][0]["method"] == "antiphase"  # the default
    for bad in ("Huggins", "loudspeaker", 1, None):
        problems = hp.validate_block(normalize_design(_design(method=bad))["blocks"][0], None)
        assert problems and "'method' must be one of antiphase, huggins, both" in problems[0]
    with pytest.raises(DesignError):
        normalize_design(_design(methods="huggins"))  # a typo is refused, not ignored


# --- through the app -----------------------------------------------------------------------

BOTH_STUDY = {
    "format": "sightsound-design/1",
    "slug": "huggins-both",
    "title": "Headphone screens",
    "stimulus_set": "demo",
    "blocks": [
        {
            "id": "screen",
            "type": "headphone_check",
            "method": "both",
            "trials": 3,
            "pass_threshold": 3,
        },
        {"id": "debrief", "type": "debrief", "text": "Thanks."},
    ],
}


def test_both_through_the_app_export_and_blindness(app, client, make_study, tmp_path):
    """A participant takes a `both` block; the export says which test each row belongs to and
    applies each test's rule; a Huggins page and its audio look alike whatever the target."""
    path = tmp_path / "design.yaml"
    path.write_text(yaml.safe_dump(BOTH_STUDY))
    _, entry = make_study(path)
    step = start(client, entry)
    pages: list[tuple[str, str]] = []  # (method, page html without tokens)
    tones: dict[str, bytes] = {}
    for _ in range(10):
        page = read_page(client.get(step))
        if page.trial_type != "headphone_check":
            break
        with app.app_context():
            trial = db.session.scalar(
                select(Trial).where(Trial.token == page.action.rsplit("/", 1)[1])
            )
            spec = trial.spec
        html = re.sub(r'(/t/|/p/)[^/"]+', r"\1<token>", page.html)
        html = re.sub(r'name="csrf_token" value="[^"]+"', "csrf", html)
        # the progress bar counts answers: the one part of a page that must change
        html = re.sub(r'value="\d+" aria-label="Progress"|\d+ of \d+ answered', "#", html)
        pages.append((spec["method"], html))
        url = next(u for u in page.media if u.endswith("/m/tones"))
        response = client.get(url)
        assert response.status_code == 200 and response.mimetype == "audio/wav"
        if spec["method"] == "huggins":
            tones[spec["correct_answer"] + str(len(tones))] = response.get_data()
            samples, _ = read_wav_samples(io.BytesIO(response.get_data()))
            # As served (16-bit, dithered per slot): the two ears differ in the target only.
            side = [
                rms_db(interval(samples, p)[:, 0] - interval(samples, p)[:, 1]) for p in (1, 2, 3)
            ]
            target = int(spec["correct_answer"])
            assert side[target - 1] > -45 and all(
                s < -80 for p, s in enumerate(side, 1) if p != target
            ), side
        # antiphase answered right, Huggins: one wrong (threshold 3 of 3 fails it)
        answer = spec["correct_answer"]
        if spec["method"] == "huggins" and sum(m == "huggins" for m, _ in pages) == 2:
            answer = str(int(answer) % 3 + 1)
        assert client.post(page.action, data={"answer": answer}).status_code == 303
    assert [m for m, _ in pages] == ["antiphase"] * 3 + ["huggins"] * 3
    huggins_pages = {html for m, html in pages if m == "huggins"}
    assert len(huggins_pages) == 1  # identical pages, whichever interval holds the target
    assert "faint tone" in huggins_pages.pop()
    assert len({len(b) for b in tones.values()}) == 1
    with app.app_context():
        study = db.session.scalar(select(Study))
        rows = list(csv.DictReader(io.StringIO(responses_csv(study))))
    assert [r["headphone_method"] for r in rows] == ["antiphase"] * 3 + ["huggins"] * 3
    assert [r["correct"] for r in rows] == ["1"] * 4 + ["0", "1"]
    assert {r["flag_failed_screening"] for r in rows} == {"1"}
