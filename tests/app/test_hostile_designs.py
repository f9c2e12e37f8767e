"""Issue 23, item 5: a design as large as the server accepts costs memory and time in proportion
to its size, never more. Every trial type checks its names and sizes (a set lookup each) before
anything that grows faster than the input: pairs of conditions, Latin squares, schedules.

Each test sends the largest body a way in accepts (64 KiB through the web: the app's
MAX_CONTENT_LENGTH; 256 KiB for `flask create-study`) filled with thousands of names, and
measures the request in-process: the peak of Python's allocations (tracemalloc) and the CPU time
of the request (process time, which a busy machine does not inflate as it does wall time; taken
from a second, untraced run). Before
the fix, fit_preference built every pair of the names first: 2,400 names cost 600 MB.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Callable

import pytest
from sqlalchemy import select

from study_app.design import MAX_DESIGN_BYTES, DesignError, validated_design
from study_app.extensions import db
from study_app.models import StimulusSet
from study_app.services import catalog_for
from study_app.trial_types import all_trial_types

WEB_BODY_CAP = 64 * 1024  # create_app's MAX_CONTENT_LENGTH
# A few MB: the body's own parse (thousands of short strings) and Flask's request, nothing that
# grows with the square of the input (measured: 1.7 MB for the web's largest body, every type).
# The quadratic version needed 207 MB for 1,500 names, a fifth of this body.
PEAK_BYTES = 10 * 1024 * 1024
CPU_SECONDS = 1.0
KNOWN = ("sine_resynthesis", "shuffled_notes", "mismatched")  # demo conditions, not reference
CONDITION_TYPES = sorted(name for name, t in all_trial_types().items() if "conditions" in t.options)


def design_with(block: dict) -> dict:
    return {
        "slug": "hostile",
        "title": "Hostile",
        "stimulus_set": "demo",
        "blocks": [{"id": "consent", "type": "consent", "text": "Please agree."}, block],
    }


def largest(make_block: Callable[[list[str]], dict], names: Callable[[int], str], cap: int):
    """The design whose body, {"design": ...} as JSON, is as long as `cap` allows, with as many
    names as fit (the names given to `make_block`, `names(i)` the i-th)."""
    low, high = 1, cap
    while low < high:  # the most names that still fit, by bisection on the count
        middle = (low + high + 1) // 2
        body = json.dumps({"design": design_with(make_block([names(i) for i in range(middle)]))})
        if len(body.encode()) <= cap:
            low = middle
        else:
            high = middle - 1
    body = json.dumps({"design": design_with(make_block([names(i) for i in range(low)]))})
    assert cap - 64 < len(body.encode()) <= cap
    return body, low


def unknown_name(i: int) -> str:
    return f"u{i:x}"


def measured(call: Callable[[], object]):
    """(result, peak traced bytes, CPU seconds) of `call`, which must be repeatable (every call
    here is refused and changes nothing). Run twice: tracing allocations slows Python several
    times over, so the CPU time comes from the untraced run."""
    tracemalloc.start()
    try:
        call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    cpu = time.process_time()
    result = call()
    return result, peak, time.process_time() - cpu


@pytest.fixture
def owner(app, demo_study):
    client = app.test_client()
    login = {"email": "owner@example.org", "password": "owner-password"}
    assert client.post("/researcher/login", data=login).status_code == 302
    # Warm up: the first request imports and compiles what every later one reuses.
    client.post(f"/researcher/studies/{demo_study}/check", json={"design": design_with({})})
    return client


def post_check(client, slug: str, body: str):
    return client.post(
        f"/researcher/studies/{slug}/check", data=body, content_type="application/json"
    )


@pytest.mark.parametrize("trial_type", sorted(all_trial_types()))
def test_a_body_full_of_unknown_condition_names_costs_little(owner, demo_study, trial_type):
    """Every type, the web's largest body: a `conditions` list of thousands of unknown names
    (an unknown option for the types that take no conditions)."""
    body, count = largest(
        lambda names: {"id": "big", "type": trial_type, "conditions": names},
        unknown_name,
        WEB_BODY_CAP,
    )
    assert count > 7000
    response, peak, cpu = measured(lambda: post_check(owner, demo_study, body))
    result = response.get_json()
    assert response.status_code == 200 and result["ok"] is False
    problems = " ".join(result["problems"])
    if trial_type in CONDITION_TYPES:
        # named, and the message stays short: ten names and the count
        assert "block 'big': the stimulus set has no condition ['u0', 'u1'," in problems
        assert f"({count} in all)" in problems and len(problems) < 2000
    else:
        assert "unknown options ['conditions']" in problems
    assert peak < PEAK_BYTES, f"{trial_type}: peak {peak / 2**20:.1f} MB"
    assert cpu < CPU_SECONDS, f"{trial_type}: {cpu:.2f} s of CPU"


def test_thousands_of_unknown_options_get_a_short_answer(owner, demo_study):
    body, count = largest(
        lambda names: {"id": "big", "type": "abx"} | dict.fromkeys(names, 1),
        unknown_name,
        WEB_BODY_CAP,
    )
    response, peak, cpu = measured(lambda: post_check(owner, demo_study, body))
    problems = response.get_json()["problems"]
    assert problems[0].startswith("block 2 (abx): unknown options ['u0', 'u1', ")
    assert f"({count} in all)" in problems[0] and len(" ".join(problems)) < 2000
    assert peak < PEAK_BYTES and cpu < CPU_SECONDS


@pytest.mark.parametrize("trial_type", CONDITION_TYPES)
def test_a_known_condition_repeated_thousands_of_times_costs_little(owner, demo_study, trial_type):
    """Known names, repeated: each passes a lookup, so only the repeat check stops the pairs
    (fit_preference built every pair of the list: 35 million for this body)."""
    body, count = largest(
        lambda names: {"id": "big", "type": trial_type, "conditions": names},
        lambda i: KNOWN[i % 2],
        WEB_BODY_CAP,
    )
    assert count > 3000
    response, peak, cpu = measured(lambda: post_check(owner, demo_study, body))
    result = response.get_json()
    assert result["ok"] is False
    assert (
        "block 'big': 'conditions' lists ['shuffled_notes', 'sine_resynthesis'] more than once"
        in result["problems"]
    )
    assert peak < PEAK_BYTES, f"{trial_type}: peak {peak / 2**20:.1f} MB"
    assert cpu < CPU_SECONDS, f"{trial_type}: {cpu:.2f} s of CPU"


def test_fit_preference_refuses_thousands_of_repeated_pairs(owner, demo_study):
    body, count = largest(
        lambda names: {
            "id": "big",
            "type": "fit_preference",
            "conditions": list(KNOWN),
            "pairs": [[name, KNOWN[2]] for name in names],
        },
        lambda i: KNOWN[i % 2],
        WEB_BODY_CAP,
    )
    assert count > 1500
    response, peak, cpu = measured(lambda: post_check(owner, demo_study, body))
    assert response.get_json()["problems"] == [
        "block 'big': 'pairs' must list distinct pairs of two different conditions named in "
        "'conditions'"
    ]
    assert peak < PEAK_BYTES and cpu < CPU_SECONDS


def test_draft_save_refuses_the_largest_body_cheaply(app, owner, demo_study):
    """The designer's save: 422 with the problems, nothing stored, the same small cost."""
    draft = owner.post(
        "/researcher/studies/new",
        data={"stimulus_set": "demo", "slug": "hostile", "title": "Hostile"},
    )
    assert draft.status_code == 302
    body, _ = largest(
        lambda names: {"id": "big", "type": "fit_preference", "conditions": names},
        unknown_name,
        WEB_BODY_CAP,
    )
    response, peak, cpu = measured(
        lambda: owner.post(
            "/researcher/studies/hostile/design.json", data=body, content_type="application/json"
        )
    )
    assert response.status_code == 422
    assert "the stimulus set has no condition" in response.get_json()["problems"][0]
    assert peak < PEAK_BYTES and cpu < CPU_SECONDS
    stored = owner.get("/researcher/studies/hostile/design.json").get_json()["design"]
    assert [b["type"] for b in stored["blocks"]] == ["consent"]


def test_yaml_upload_of_the_largest_body_is_refused_cheaply(owner):
    import io

    body, _ = largest(
        lambda names: {"id": "big", "type": "fit_preference", "conditions": names},
        unknown_name,
        WEB_BODY_CAP - 1024,  # the multipart envelope around the file
    )
    design = json.loads(body)["design"]
    response, peak, cpu = measured(
        lambda: owner.post(
            "/researcher/studies/import",
            data={"design": (io.BytesIO(json.dumps(design).encode()), "hostile.json")},
            follow_redirects=True,
        )
    )
    assert "the stimulus set has no condition" in response.get_data(as_text=True)
    assert peak < PEAK_BYTES and cpu < CPU_SECONDS


@pytest.mark.parametrize("trial_type", CONDITION_TYPES)
def test_a_design_file_of_the_largest_size_is_refused_cheaply(app, demo_study, trial_type):
    """`flask create-study` reads files up to MAX_DESIGN_BYTES (256 KiB): the same validation,
    four times the names, still linear."""
    with app.app_context():
        catalog = catalog_for(db.session.scalar(select(StimulusSet)))
        body, count = largest(
            lambda names: {"id": "big", "type": trial_type, "conditions": names},
            lambda i: KNOWN[i % 2] if i % 3 == 0 else unknown_name(i),
            MAX_DESIGN_BYTES,
        )
        design = json.loads(body)["design"]

        def validate():
            with pytest.raises(DesignError) as refused:
                validated_design(design, catalog)
            return refused.value.problems

        problems, peak, cpu = measured(validate)
    assert count > 20_000
    assert any("the stimulus set has no condition" in p for p in problems)
    assert any("more than once" in p for p in problems)
    assert peak < PEAK_BYTES, f"{trial_type}: peak {peak / 2**20:.1f} MB"
    assert cpu < CPU_SECONDS, f"{trial_type}: {cpu:.2f} s of CPU"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            {"type": "abx", "conditions": ["sine_resynthesis"], "repetitions": 10**9},
            "'repetitions' must be a whole number 1-10",
        ),
        (
            {"type": "abx", "conditions": ["sine_resynthesis"], "catch_trials": 10**9},
            "'catch_trials' must be a whole number 0-50",
        ),
        (
            {
                "type": "emotion_rating",
                "conditions": ["sine_resynthesis"],
                "attention_checks": 10**9,
            },
            "'attention_checks' must be 0-50",
        ),
        (
            {"type": "emotion_rating", "conditions": ["sine_resynthesis"], "scales": [["x"]]},
            "'scales' must be a non-empty subset of",
        ),
        (
            {"type": "mushra", "conditions": ["sine_resynthesis"], "anchors": [["x"]]},
            "'anchors' must be a subset of",
        ),
        (
            {"type": "abx", "conditions": "sine_resynthesis"},
            "'conditions' must list at least one condition",
        ),
    ],
)
def test_counts_that_multiply_a_schedule_are_capped(app, demo_study, block, message):
    """A small number can cost as much as a long list: a billion repetitions or checks is a
    schedule no participant can take, refused before any is built."""
    with app.app_context():
        catalog = catalog_for(db.session.scalar(select(StimulusSet)))
        with pytest.raises(DesignError) as refused:
            validated_design(design_with({"id": "big"} | block), catalog)
    assert any(message in p for p in refused.value.problems), refused.value.problems
