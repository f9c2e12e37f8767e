"""Issue 7, second part: the 2AFC audio-video fit preference, ACR in the manner of ITU-T P.808
(gold-standard and trapping questions, rest periods) and the P.808 qualification.

The P.808 rules and the audio they use are tested directly; the whole flow (pages, blind media,
answers, screening, export rows and the MOS tables) through Flask's test client on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import random
import re
import zipfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
from flow import read_page, start
from scipy import stats
from scipy.signal import resample_poly
from sqlalchemy import select

from study_app import p808
from study_app.audio import read_wav_samples
from study_app.catalog import Catalog
from study_app.design import with_defaults
from study_app.export import export_files
from study_app.extensions import db
from study_app.models import Participant, Study, Trial
from study_app.stimulus_set import load_stimulus_set
from study_app.trial_types import AnswerError, get_trial_type

DESIGN = Path(__file__).parents[1] / "data" / "p808_2afc_study.yaml"


# P.808 rules --------------------------------------------------------------------------------------


def test_gold_passes_within_one_category_and_trap_only_exactly():
    acr = get_trial_type("acr")
    high = {"item": "gold", "correct_answer": 5}
    low = {"item": "gold", "correct_answer": 1}
    trap = {"item": "trap", "correct_answer": 3}
    rated = {"item": "rating"}
    assert [acr.catch_failed(high, {"rating": r}) for r in (5, 4, 3, 1)] == [
        False,
        False,
        True,
        True,
    ]
    assert [acr.catch_failed(low, {"rating": r}) for r in (1, 2, 3, 5)] == [
        False,
        False,
        True,
        True,
    ]
    assert [acr.catch_failed(trap, {"rating": r}) for r in (3, 2, 4, 5)] == [
        False,
        True,
        True,
        True,
    ]
    assert not acr.catch_failed(rated, {"rating": 1})


def test_qualification_rules():
    block = with_defaults({"id": "q", "type": "p808_qualification"})
    good = {
        "hearing": "normal",
        "device": "computer_speakers",
        "environment": "noisy",
        "tone_count_errors": 0,
    }
    assert p808.qualification_failures(good, block) == []
    assert p808.qualification_failures(good | {"hearing": "impaired"}, block) == [
        "reported a hearing problem"
    ]
    assert p808.qualification_failures(good | {"tone_count_errors": 1}, block) == [
        "miscounted the beeps"
    ]
    strict = block | {"require_headphones": True, "require_quiet": True, "max_tone_errors": 1}
    assert p808.qualification_failures(good | {"tone_count_errors": 1}, strict) == [
        "not listening through headphones",
        "not in a quiet place",
    ]
    qualification = get_trial_type("p808_qualification")
    spec = qualification.schedule(block, Catalog(()), 0, random.Random(3))[0]
    form = {"hearing": "normal", "device": "earbuds", "environment": "quiet"}
    counts = {f"count_t{i}": str(n) for i, n in enumerate(spec["tone_counts"], 1)}
    assert qualification.parse_answer(spec, block, form | counts)["passed"]
    wrong = counts | {"count_t1": str(spec["tone_counts"][0] + 1)}
    answer = qualification.parse_answer(spec, block, form | wrong)
    assert not answer["passed"] and answer["tone_count_errors"] == 1
    assert qualification.screening_failed(block, [(spec, answer)], 1)
    with pytest.raises(AnswerError) as excinfo:
        qualification.parse_answer(spec, block, {"hearing": "maybe", "count_t1": "x"})
    assert len(excinfo.value.problems) >= 4


# P.808 audio ----------------------------------------------------------------------------------


def _loudness(samples: np.ndarray, rate: int) -> float:
    return pyloudnorm.Meter(rate).integrated_loudness(samples.astype(np.float64))


def _reference_clip(set_dir: Path) -> Path:
    stimuli = load_stimulus_set(set_dir)
    clip = next(c for c in stimuli.clips if c.condition == "reference")
    return clip.path if clip.path.is_absolute() else set_dir / clip.path


@pytest.mark.parametrize("rating", sorted(p808.ACR_LABELS))
def test_trapping_clip_speaks_over_the_ducked_music(long_demo_set_dir, rating):
    path = _reference_clip(long_demo_set_dir)
    music, rate = read_wav_samples(path)
    trap, trap_rate = read_wav_samples(io.BytesIO(p808.trap_wav_bytes(path, rating)))
    assert trap_rate == rate and trap.shape == music.shape  # same format and duration
    assert abs(_loudness(trap, rate) - _loudness(music, rate)) < 0.5  # same loudness
    # The recorded instruction is what one hears in the middle: it correlates with the clip
    # there far more than the music does.
    speech = resample_poly(p808._instruction_samples(rating), rate, p808.INSTRUCTION_RATE)
    start = (len(music) - len(speech)) // 2
    window = trap[start : start + len(speech)].mean(axis=1)
    assert np.corrcoef(window, speech)[0, 1] > 0.9
    music_window = music[start : start + len(speech)].mean(axis=1)
    assert abs(np.corrcoef(music_window, speech)[0, 1]) < 0.2
    # Outside the instruction the music is untouched (up to the loudness gain).
    head = slice(0, int(0.1 * rate))
    gain = np.dot(trap[head, 0], music[head, 0]) / np.dot(music[head, 0], music[head, 0])
    assert np.allclose(trap[head], gain * music[head], atol=2e-4)


def test_trapping_clip_refuses_a_clip_too_short(demo_set_dir):
    with pytest.raises(ValueError, match="trapping clip needs at least"):
        p808.trap_wav_bytes(_reference_clip(demo_set_dir), 3)  # 3 s demo clips


def test_low_gold_is_degraded_but_equally_loud(long_demo_set_dir):
    path = _reference_clip(long_demo_set_dir)
    music, rate = read_wav_samples(path)
    bad, bad_rate = read_wav_samples(io.BytesIO(p808.gold_low_wav_bytes(path)))
    assert bad_rate == rate and bad.shape == music.shape
    assert abs(_loudness(bad, rate) - _loudness(music, rate)) < 0.5
    # signal-to-error ratio against the original: heavily degraded (white noise at 0 dB SNR)
    scale = np.dot(bad[:, 0], music[:, 0]) / np.dot(music[:, 0], music[:, 0])
    error = bad[:, 0] - scale * music[:, 0]
    assert 10 * np.log10(np.sum((scale * music[:, 0]) ** 2) / np.sum(error**2)) < 3


@pytest.mark.parametrize("count", range(p808.TONE_COUNT_RANGE[0], p808.TONE_COUNT_RANGE[1] + 1))
def test_tone_count_clips_hold_count_beeps_and_all_last_as_long(count):
    samples, rate = read_wav_samples(io.BytesIO(p808.tone_count_wav_bytes(count, seed=count)))
    assert samples.shape == (int(p808.TONE_CLIP_SECONDS * 48_000), 2)
    envelope = np.abs(samples[:, 0]) > 0.005
    onsets = np.flatnonzero(envelope[1:] & ~envelope[:-1])
    beeps = 1 + np.count_nonzero(np.diff(onsets) > 0.2 * rate) if len(onsets) else 0
    assert beeps == count


# Scheduling ---------------------------------------------------------------------------------------


def _catalog(duration: float = 5.0) -> Catalog:
    rows = [
        (f"seg{i}", f"src{i}", cond, f"seg{i}_{cond}", duration)
        for i in range(4)
        for cond in ("reference", "sys_a", "sys_b", "mismatched")
    ]
    return Catalog.from_clips(rows)


def _block(kind: str, **options):
    return with_defaults({"id": kind, "type": kind, **options})


def test_fit_preference_balances_pairs_and_orders_over_participants():
    preference = get_trial_type("fit_preference")
    block = _block(
        "fit_preference",
        conditions=["sys_a", "sys_b", "mismatched"],
        pairs=[["sys_a", "mismatched"], ["sys_b", "mismatched"]],
    )
    assert preference.validate_block(block, _catalog()) == []
    cells = {}
    for index in range(4):  # 2 pairs x 2 orders = 4 lists
        for spec in preference.schedule(block, _catalog(), index, random.Random(index)):
            key = (spec["segment"], spec["condition_a"], spec["condition_b"])
            cells[key] = cells.get(key, 0) + 1
            assert spec["clip_a"] == f"{spec['segment']}_{spec['condition_a']}"
            assert {"sys_a", "sys_b"} & {spec["condition_a"], spec["condition_b"]}
    # every segment met every ordered pair exactly once over the four lists
    assert len(cells) == 4 * 4 and set(cells.values()) == {1}
    spec = preference.schedule(block, _catalog(), 0, random.Random(0))[0]
    assert set(preference.media(spec)) == {"video", "a", "b"}
    answer = preference.parse_answer(spec, block, {"answer": "b", "strength": "3"})
    fields = preference.export_fields(spec, answer)
    assert fields["preferred_condition"] == spec["condition_b"]
    assert fields["preference_strength"] == 3
    for bad in ({"answer": "C", "strength": "1"}, {"answer": "A", "strength": "4"}, {}):
        with pytest.raises(AnswerError):
            preference.parse_answer(spec, block, bad)


def test_fit_preference_validation():
    preference = get_trial_type("fit_preference")
    catalog = _catalog()
    assert preference.validate_block(_block("fit_preference", conditions=["sys_a"]), catalog)
    assert preference.validate_block(
        _block("fit_preference", conditions=["sys_a", "nope"]), catalog
    )
    assert preference.validate_block(
        _block("fit_preference", conditions=["sys_a", "sys_b"], pairs=[["sys_a", "mismatched"]]),
        catalog,
    )
    assert preference.validate_block(
        _block("fit_preference", conditions=["sys_a", "sys_b"], trials_per_participant=99),
        catalog,
    )


def test_acr_schedule_places_checks_and_rests():
    acr = get_trial_type("acr")
    block = _block(
        "acr",
        conditions=["reference", "sys_a", "sys_b"],
        trials_per_participant=6,
        gold_questions=2,
        trapping_questions=2,
        rest_every=4,
        rest_seconds=5,
    )
    assert acr.validate_block(block, _catalog()) == []
    for seed in range(20):
        specs = acr.schedule(block, _catalog(), seed, random.Random(seed))
        items = [s["item"] for s in specs]
        assert items.count("rating") == 6 and items.count("trap") == 2
        assert items[0] == "rating"  # a check never opens the block
        assert [i for i, item in enumerate(items) if item == "rest"] == [4, 9]  # after 4 and 8
        golds = sorted(s["condition"] for s in specs if s["item"] == "gold")
        assert golds == ["p808_gold_high", "p808_gold_low"]
        for spec in specs:
            media = acr.media(spec)
            if spec["item"] == "rest":
                assert media == {} and spec["rest_seconds"] == 5
                continue
            assert set(media) == {"clip"}  # one slot name for every kind of item
            assert acr.page_context(spec, block) == acr.page_context(specs[0], block)
            if spec["item"] == "trap":
                assert 1 <= spec["correct_answer"] <= 5 and spec["is_catch"]
                assert media["clip"].kind == "p808_trap"


def test_acr_validation_needs_long_clips_for_traps():
    acr = get_trial_type("acr")
    block = _block("acr", conditions=["sys_a"], trapping_questions=1)
    problems = acr.validate_block(block, _catalog(duration=3.0))
    assert problems and "4.2 s" in problems[0]
    assert acr.validate_block(block | {"trapping_questions": 0}, _catalog(duration=3.0)) == []
    assert acr.validate_block(block | {"rest_every": -1}, _catalog())
    assert acr.validate_block(block | {"gold_questions": "2"}, _catalog())


def test_acr_mos_tables_use_student_t():
    acr = get_trial_type("acr")
    rows = [
        {
            "participant": p,
            "condition": "sys_a",
            "clip": "c1",
            "acr_item": "rating",
            "acr_rating": r,
            "excluded": 0,
        }
        for p, r in (("P1", 3), ("P2", 4), ("P3", 5))
    ] + [
        {
            "participant": "P4",
            "condition": "sys_a",
            "clip": "c1",
            "acr_item": "rating",
            "acr_rating": 1,
            "excluded": 1,
        },  # an excluded listener does not count
        {
            "participant": "P1",
            "condition": "p808_trap",
            "clip": "c1",
            "acr_item": "trap",
            "acr_rating": 2,
            "excluded": 0,
        },  # nor does a catch item
    ]
    tables = acr.study_tables(rows)
    (clip,) = tables["acr_mos_per_clip"]
    # mean 4, s = 1, t(0.975, 2) = 4.3027: 4 +- 4.3027 / sqrt(3) = 4 +- 2.4841 (P.800.2)
    assert clip["n"] == 3 and clip["mos"] == 4.0 and clip["sd"] == 1.0
    assert clip["ci_low"] == pytest.approx(1.5159, abs=1e-4)
    assert clip["ci_high"] == pytest.approx(6.4841, abs=1e-4)
    assert [r["participant"] for r in tables["acr_mos_per_listener"]] == ["P1", "P2", "P3"]


# The whole flow -----------------------------------------------------------------------------------


@pytest.fixture
def p808_study(make_study, long_demo_set_dir):
    return make_study(DESIGN, long_demo_set_dir)


def _spec(app, page):
    trial_token = page.action.rsplit("/", 1)[1]
    with app.app_context():
        trial = db.session.scalar(select(Trial).where(Trial.token == trial_token))
        # as if the participant had listened: answers are not "too fast"
        trial.presented_at = trial.presented_at - timedelta(seconds=60)
        db.session.commit()
        return trial.spec


def _take(app, client, token, *, fail_trap=False, fail_qualification=False, rating_base=3):
    step = start(client, token)
    answered = []
    for _ in range(60):
        page = read_page(client.get(step))
        if page.trial_type is None:
            return page, answered
        for url in page.media:
            assert client.get(url).status_code == 200, url
        spec = _spec(app, page)
        kind = page.trial_type
        if kind == "consent":
            data = {"consent": "yes"}
        elif kind == "p808_qualification":
            data = {
                "hearing": "impaired" if fail_qualification else "normal",
                "device": "headphones",
                "environment": "quiet",
            }
            data |= {f"count_t{i}": str(n) for i, n in enumerate(spec["tone_counts"], 1)}
        elif kind == "fit_preference":
            # this listener always prefers the clip that is not the mismatched control
            choice = "B" if spec["condition_a"] == "mismatched" else "A"
            data = {"answer": choice, "strength": str(1 + len(answered) % 3)}
        elif spec["item"] == "rest":
            data = {}
        elif spec["item"] in ("gold", "trap"):
            right = spec["correct_answer"]
            data = {"rating": str(right % 5 + 1 if fail_trap and spec["item"] == "trap" else right)}
        else:
            data = {"rating": str(rating_base + (spec["condition"] == "reference"))}
        answered.append((kind, spec, data))
        response = client.post(page.action, data=data)
        assert response.status_code == 303, (kind, response.status_code)
    raise AssertionError("study did not end")


def test_p808_and_2afc_flow_and_export(app, client, p808_study):
    slug, token = p808_study
    final, answered = _take(app, client, token)
    assert "P808-2AFC" in final.html
    kinds = [(k, s.get("item")) for k, s, _ in answered]
    assert kinds[:4] == [
        ("consent", None),
        ("p808_qualification", None),
        ("fit_preference", None),
        ("fit_preference", None),
    ]
    acr_items = [item for kind, item in kinds if kind == "acr"]
    # 3 ratings, 2 gold, 1 trap; a pause after every 3 items but not at the very end
    assert sorted(acr_items) == ["gold", "gold", "rating", "rating", "rating", "rest", "trap"]
    assert acr_items[0] == "rating" and acr_items[3] == "rest"

    _take(app, app.test_client(), token, fail_trap=True, rating_base=1)
    final3, answered3 = _take(app, app.test_client(), token, fail_qualification=True)
    assert "P808-2AFC" not in final3.html  # screened out: no completion code
    assert [k for k, _, _ in answered3] == ["consent", "p808_qualification"]

    with app.app_context():
        study = db.session.scalar(select(Study).where(Study.slug == slug))
        files = export_files(study)
        people = db.session.scalars(select(Participant).order_by(Participant.assignment_index))
        ids = [p.public_id for p in people]
    rows = list(csv.DictReader(io.StringIO(files["responses.csv"])))
    mine = [r for r in rows if r["participant"] == ids[0]]

    qualification = [r for r in mine if r["trial_type"] == "p808_qualification"]
    assert [
        (
            r["qualification_passed"],
            r["hearing_reported_normal"],
            r["listening_device"],
            r["tone_count_errors"],
        )
        for r in qualification
    ] == [("1", "1", "headphones", "0")]

    preference = [r for r in mine if r["trial_type"] == "fit_preference"]
    clicked = [(s, d) for k, s, d in answered if k == "fit_preference"]
    assert len(preference) == len(clicked) == 2
    for row, (spec, data) in zip(preference, clicked, strict=True):
        assert (row["condition_a"], row["condition_b"]) == (
            spec["condition_a"],
            spec["condition_b"],
        )
        assert row["answer"] == data["answer"] and row["preference_strength"] == data["strength"]
        assert row["preferred_condition"] != "mismatched"
        assert row["video_shown"] == "1" and row["conditions"].count("|") == 1

    acr = [r for r in mine if r["trial_type"] == "acr"]
    clicked = [(s, d) for k, s, d in answered if k == "acr" and s["item"] != "rest"]
    assert len(acr) == len(clicked) == 6  # pauses are not responses
    for row, (spec, data) in zip(acr, clicked, strict=True):
        assert row["acr_item"] == spec["item"] and row["acr_rating"] == data["rating"]
        assert row["condition"] == spec["condition"] and row["clip"] == spec["clip"]
        if spec["item"] == "rating":
            assert row["is_catch"] == "0" and row["correct"] == ""
        else:
            assert row["is_catch"] == "1" and row["correct"] == "1"
            assert row["correct_answer"] == str(spec["correct_answer"])
    assert {r["excluded"] for r in mine} == {"0"}

    careless = [r for r in rows if r["participant"] == ids[1]]
    assert {r["flag_failed_catch"] for r in careless} == {"1"}
    assert {r["excluded"] for r in careless} == {"1"}
    trap_row = next(r for r in careless if r["acr_item"] == "trap")
    assert trap_row["correct"] == "0"
    unqualified = [r for r in rows if r["participant"] == ids[2]]
    assert {r["flag_failed_screening"] for r in unqualified} == {"1"}
    assert [r["qualification_passed"] for r in unqualified] == ["0"]

    # MOS tables: only the first listener's rated clips count (the others are excluded)
    per_clip = list(csv.DictReader(io.StringIO(files["acr_mos_per_clip.csv"])))
    rated = {
        (s["condition"], s["clip"]): int(d["rating"]) for s, d in clicked if s["item"] == "rating"
    }
    assert {(r["condition"], r["clip"]): float(r["mos"]) for r in per_clip} == rated
    assert all(r["n"] == "1" and r["ci_low"] == "" for r in per_clip)
    (listener,) = list(csv.DictReader(io.StringIO(files["acr_mos_per_listener.csv"])))
    values = list(rated.values())
    half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values))
    assert listener["participant"] == ids[0]
    assert float(listener["ci_high"]) == pytest.approx(np.mean(values) + half, abs=1e-3)


def test_export_zip_and_cli_carry_the_mos_tables(app, client, p808_study, tmp_path):
    slug, token = p808_study
    _take(app, client, token)
    researcher = app.test_client()
    login = {"email": "owner@example.org", "password": "owner-password"}
    researcher.post("/researcher/login", data=login)
    response = researcher.get(f"/researcher/studies/{slug}/export.zip")
    assert response.status_code == 200
    names = set(zipfile.ZipFile(io.BytesIO(response.get_data())).namelist())
    assert names == {
        "responses.csv",
        "study.json",
        "acr_mos_per_clip.csv",
        "acr_mos_per_listener.csv",
    }
    result = app.test_cli_runner().invoke(args=["export", slug, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "out").iterdir()} == names


def test_gold_and_trap_pages_and_audio_look_like_rated_ones(app, client, p808_study):
    """Blindness inside the ACR block: a cheater cannot find the checks without listening."""
    _, token = p808_study
    step = start(client, token)
    seen = {}
    for _ in range(60):
        page = read_page(client.get(step))
        if page.trial_type is None:
            break
        spec = _spec(app, page)
        if page.trial_type == "acr" and spec["item"] != "rest":
            (url,) = page.media
            audio = client.get(url)
            html = page.html.replace(page.action, "ACTION").replace(url, "URL")
            html = re.sub(r'name="csrf_token" value="[^"]*"', "CSRF", html)  # time-stamped
            headers = {k: v for k, v in audio.headers.items() if k != "Date"}
            seen.setdefault(spec["item"], []).append((html, headers, len(audio.get_data())))
        data = {"consent": {"consent": "yes"}}.get(page.trial_type)
        if page.trial_type == "p808_qualification":
            data = {"hearing": "normal", "device": "headphones", "environment": "quiet"}
            data |= {f"count_t{i}": str(n) for i, n in enumerate(spec["tone_counts"], 1)}
        elif page.trial_type == "fit_preference":
            data = {"answer": "A", "strength": "1"}
        elif page.trial_type == "acr":
            data = {} if spec["item"] == "rest" else {"rating": str(spec.get("correct_answer", 3))}
        client.post(page.action, data=data)
    pages = {html for entries in seen.values() for html, _, _ in entries}
    progress_free = {
        p.split('<div class="progress">')[0] + p.split("</progress>")[1].split("</div>", 1)[1]
        for p in pages
    }
    assert len(progress_free) == 1, _diff(progress_free)  # identical but for the progress bar
    wire = {(tuple(sorted(h.items())), size) for entries in seen.values() for _, h, size in entries}
    assert len(wire) == 1  # identical headers and sizes for rated, gold and trapping clips
    assert set(seen) == {"rating", "gold", "trap"}


def _diff(pages: set[str]) -> str:
    import difflib

    first, second, *_ = sorted(pages)
    return "\n".join(difflib.unified_diff(first.splitlines(), second.splitlines(), lineterm=""))


def test_designer_offers_the_p808_and_2afc_types_and_round_trips_them(
    app, make_study, long_demo_set_dir
):
    import yaml

    from study_app.design import read_design_file

    make_study(DESIGN, long_demo_set_dir)  # imports the set and creates the owner
    owner = app.test_client()
    login = {"email": "owner@example.org", "password": "owner-password"}
    assert owner.post("/researcher/login", data=login).status_code == 302
    new = {"stimulus_set": "demo", "title": "Designed", "slug": "designed"}
    assert owner.post("/researcher/studies/new", data=new).status_code == 302
    state = owner.get("/researcher/studies/designed/design.json").get_json()
    for name in ("fit_preference", "acr", "p808_qualification"):
        assert name in state["types"]
    fields = {f["key"]: f for f in state["types"]["fit_preference"]["fields"]}
    assert fields["pairs"]["kind"] == "pairs"
    assert ["reference", "mismatched"] in fields["pairs"]["choices"]
    acr_fields = {f["key"]: f["kind"] for f in state["types"]["acr"]["fields"]}
    assert acr_fields["gold_questions"] == "number" and acr_fields["question"] == "text"
    design = read_design_file(DESIGN) | {"slug": "designed", "title": "Designed"}
    saved = owner.post("/researcher/studies/designed/design.json", json={"design": design})
    assert saved.status_code == 200, saved.get_json()
    exported = yaml.safe_load(owner.get("/researcher/studies/designed/design.yaml").get_data())
    assert [b["type"] for b in exported["blocks"]] == [b["type"] for b in design["blocks"]]
    blocks = [*design["blocks"][:2], design["blocks"][2] | {"pairs": [["x", "y"]]}]
    result = owner.post(
        "/researcher/studies/designed/design.json", json={"design": design | {"blocks": blocks}}
    )
    assert result.status_code == 422
    assert any("'pairs'" in problem for problem in result.get_json()["problems"])
