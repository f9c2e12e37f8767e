"""Issue 13: every number a participant posts (response time, play counts, ratings, counts) is
a finite whole number in its range, or the answer is refused with a 400 naming the field and
nothing is stored. Run on SQLite and PostgreSQL, through every answerable trial type except
MUSHRA (its own scores are checked in test_mushra_similarity_fit.py)."""

from __future__ import annotations

import html
import re

import pytest
from flow import current, read_page, start
from sqlalchemy import func, select

from study_app.extensions import db
from study_app.models import Response, Trial
from study_app.trial_types import (
    MAX_PLAYS,
    MAX_RT_MS,
    AnswerError,
    client_rt_ms,
    int_in_range,
    play_counts,
)

EVERY_TYPE_DESIGN = """
format: sightsound-design/1
slug: numbers
title: Every answerable type once
stimulus_set: demo
blocks:
  - {id: consent, type: consent, text: Hello.}
  - {id: headphones, type: headphone_check, trials: 1, pass_threshold: 0}
  - {id: qualification, type: p808_qualification, tone_trials: 1, exclude_on_fail: false}
  - {id: abx, type: abx, conditions: [sine_resynthesis], trials_per_participant: 1}
  - id: emotion
    type: emotion_rating
    conditions: [reference]
    trials_per_participant: 1
    scales: [valence, arousal, gems, fit, tempo]
    show_video: true
  - {id: similarity, type: similarity, conditions: [sine_resynthesis], trials_per_participant: 1}
  - {id: fit, type: fit_rating, conditions: [reference], trials_per_participant: 1}
  - id: preference
    type: fit_preference
    conditions: [reference, mismatched]
    trials_per_participant: 1
  - id: quality
    type: acr
    conditions: [reference]
    trials_per_participant: 1
    gold_questions: 0
    trapping_questions: 0
  - {id: debrief, type: debrief, text: Thanks.}
"""

# What a forged form might carry in a numeric field: infinities, overflowing exponents, NaN,
# negatives, words, Unicode and underscore digits (which Python's int() would accept), and
# integers far beyond any range (5,000 digits is past int()'s own 4,300-digit limit).
HOSTILE_NUMBERS = (
    "inf",
    "-inf",
    "Infinity",
    "1e400",
    "1e3",
    "nan",
    "NaN",
    "-1",
    "abc",
    "0x10",
    "1_0",
    "\N{FULLWIDTH DIGIT ONE}\N{FULLWIDTH DIGIT TWO}",
    "9" * 30,
    "9" * 5000,
)

# (form field, words that name it in the problem shown) of each type's own numeric answers.
RATING_FIELDS = {
    "headphone_check": [],
    "p808_qualification": [("count_t1", "beeps in sound 1")],
    "abx": [("confidence", "confidence")],
    "emotion_rating": [
        ("valence", "valence"),
        ("arousal", "arousal"),
        ("fit", "fit to the video"),
        ("tempo", "tempo"),
    ],
    "similarity": [("similarity", "similarity")],
    "fit_rating": [("fit", "fit to the performance")],
    "fit_preference": [("strength", "how strongly")],
    "acr": [("rating", "overall quality")],
}
PROBLEMS = re.compile(r'<div class="problems" role="alert">(.*?)</div>', re.S)


@pytest.fixture
def every_type_study(make_study, tmp_path):
    design = tmp_path / "numbers.yaml"
    design.write_text(EVERY_TYPE_DESIGN)
    return make_study(design)


def _trial(app, action: str) -> Trial:
    with app.app_context():
        trial = db.session.scalar(select(Trial).where(Trial.token == action.rsplit("/", 1)[1]))
        db.session.expunge(trial)
        return trial


def _valid_answer(trial_type: str, spec: dict) -> dict:
    answers = {
        "headphone_check": {"answer": "1"},
        "p808_qualification": {
            "hearing": "normal",
            "device": "headphones",
            "environment": "quiet",
            **{f"count_t{i}": str(n) for i, n in enumerate(spec.get("tone_counts", ()), 1)},
        },
        "abx": {"answer": "A", "confidence": "3"},
        "emotion_rating": {
            "valence": "5",
            "arousal": "5",
            "gems": "wonder",
            "fit": "4",
            "tempo": "4",
        },
        "similarity": {"similarity": "4"},
        "fit_rating": {"fit": "4"},
        "fit_preference": {"answer": "A", "strength": "2"},
        "acr": {"rating": "4"},
    }
    return answers[trial_type]


def _stored(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(Response.id)))


def _refused(client, app, action: str, data: dict, names: str) -> None:
    before = _stored(app)
    response = client.post(action, data=data)
    assert response.status_code == 400, (data, response.status_code)
    problems = html.unescape(" ".join(PROBLEMS.findall(response.get_data(as_text=True))))
    assert names in problems, (names, problems)
    assert _stored(app) == before


def test_hostile_numbers_are_refused_in_every_trial_type(app, client, every_type_study):
    step = start(client, every_type_study[1])
    assert client.post(current(client, step).action, data={"consent": "yes"}).status_code == 303
    seen = []
    for _ in range(20):
        page = current(client, step)
        if page.trial_type is None:
            break
        trial = _trial(app, page.action)
        valid = _valid_answer(page.trial_type, trial.spec)
        slots = re.findall(r'name="plays_([a-z0-9_]+)"', page.html)
        assert slots, page.trial_type  # every answerable type reports its play counts
        for bad in HOSTILE_NUMBERS:
            _refused(client, app, page.action, valid | {"rt_ms": bad}, "rt_ms")
            for slot in slots:
                data = valid | {f"plays_{slot}": bad}
                _refused(client, app, page.action, data, f"plays_{slot}")
            for field, label in RATING_FIELDS[page.trial_type]:
                _refused(client, app, page.action, valid | {field: bad}, label)
        # the edges of the ranges are accepted, and stored as whole numbers
        good = valid | {"rt_ms": str(MAX_RT_MS)} | {f"plays_{s}": str(MAX_PLAYS) for s in slots}
        assert client.post(page.action, data=good).status_code == 303, page.trial_type
        with app.app_context():
            answer = db.session.get(Trial, trial.id).response.answer
        assert answer["client_rt_ms"] == MAX_RT_MS
        assert answer["plays"] == dict.fromkeys(slots, MAX_PLAYS)
        seen.append(page.trial_type)
    assert seen == list(RATING_FIELDS)


def test_rt_just_beyond_a_day_is_refused_and_fractions_round(app, client, every_type_study):
    step = start(client, every_type_study[1])
    assert client.post(current(client, step).action, data={"consent": "yes"}).status_code == 303
    page = read_page(client.get(step))
    assert page.trial_type == "headphone_check"
    _refused(client, app, page.action, {"answer": "1", "rt_ms": str(MAX_RT_MS + 1)}, "rt_ms")
    assert client.post(page.action, data={"answer": "1", "rt_ms": "1234.6"}).status_code == 303
    with app.app_context():
        stored = db.session.scalar(select(Response).order_by(Response.id.desc()).limit(1))
    assert stored.answer["client_rt_ms"] == 1235


# The helpers themselves (no database) ---------------------------------------------------


@pytest.mark.parametrize("raw", HOSTILE_NUMBERS + ("-0.5", " 1e2", "86400001", "1.5e3"))
def test_client_rt_ms_refuses_what_is_not_a_finite_time(raw):
    with pytest.raises(AnswerError) as caught:
        client_rt_ms({"rt_ms": raw})
    assert caught.value.problems == [
        f"rt_ms: must be a number of milliseconds between 0 and {MAX_RT_MS}."
    ]


def test_client_rt_ms_accepts_a_missing_or_measured_time():
    # A browser without JavaScript sends the template's empty value: no time, not a refusal.
    assert client_rt_ms({}) is None
    assert client_rt_ms({"rt_ms": ""}) is None
    assert client_rt_ms({"rt_ms": "0"}) == 0
    assert client_rt_ms({"rt_ms": " 2500 "}) == 2500
    assert client_rt_ms({"rt_ms": "2500.4"}) == 2500


@pytest.mark.parametrize("raw", HOSTILE_NUMBERS + ("1.0", str(MAX_PLAYS + 1)))
def test_play_counts_refuse_what_is_not_a_count(raw):
    with pytest.raises(AnswerError) as caught:
        play_counts({"plays_a": "1", "plays_b": raw}, ("a", "b"))
    assert caught.value.problems == [f"plays_b: must be a whole number between 0 and {MAX_PLAYS}."]


def test_play_counts_default_to_zero_and_keep_real_counts():
    assert play_counts({"plays_a": "3", "plays_b": ""}, ("a", "b", "x")) == {"a": 3, "b": 0, "x": 0}


@pytest.mark.parametrize("raw", HOSTILE_NUMBERS + ("3.0", "+"))
def test_int_in_range_names_the_field_for_every_hostile_value(raw):
    problems: list[str] = []
    assert int_in_range({"confidence": raw}, "confidence", 1, 5, problems, label="conf") is None
    assert len(problems) == 1 and problems[0].startswith("conf: ")


def test_int_in_range_accepts_plain_ascii_digits():
    problems: list[str] = []
    assert int_in_range({"c": " 4 "}, "c", 1, 5, problems, label="c") == 4
    assert int_in_range({"c": "+5"}, "c", 1, 5, problems, label="c") == 5
    assert problems == []


def test_huge_whole_numbers_are_out_of_range_not_parsed():
    for raw in ("9" * 13, "9" * 5000, "-" + "9" * 30):
        problems: list[str] = []
        assert int_in_range({"c": raw}, "c", 1, 5, problems, label="c") is None
        assert problems == ["c: must be between 1 and 5."]
