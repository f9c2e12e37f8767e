"""The blinding audit: a cheating participant's classifier does no better than chance on the
demo study, and the audit does notice a leak when there is one."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from sightsound_stats import wilson_interval
from study_app.audit import (
    RECURRENCE,
    TRANSPORT,
    Observation,
    analyse,
    collect,
    wav_header,
    x_copy_reveals_answer,
)

# The audit plays whole sessions through HTTP: SQLite alone is enough (and no test is skipped
# on PostgreSQL; the session code it drives is covered on both elsewhere).
pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def observations(app, demo_study):
    return collect(app, demo_study, participants=12, seed=1)


def test_demo_study_is_blind(app, demo_study, observations):
    from sqlalchemy import func, select

    from study_app.extensions import db
    from study_app.models import Participant

    labelled = [o for o in observations if o.label is not None]
    assert {o.trial_type for o in labelled} == {"abx", "emotion_rating"}
    assert len(labelled) >= 12 * (4 * 3 + 4)
    results = analyse(observations, permutations=499, seed=0)
    tasks = {(r.task, r.group) for r in results}
    assert ("abx/a", TRANSPORT) in tasks and ("emotion_rating/clip", TRANSPORT) in tasks
    for result in results:
        if result.group == TRANSPORT:
            assert not result.leaks, result  # Holm-adjusted p >= 0.05
    # audit participants are gone afterwards
    with app.app_context():
        assert db.session.scalar(select(func.count(Participant.id))) == 0
    # each slot is served with its own dither: X never equals A or B byte for byte
    x = x_copy_reveals_answer(observations)
    assert x["abx_trials"] == 12 * 4 and x["x_bytes_equal_a_or_b"] == 0
    # nor does any clip download recur, so "got these bytes before" cannot predict anything
    assert all(o.seen_before == 0 for o in labelled)
    # (trial position alone is audited too, but 48 trials give it no power worth asserting on:
    # the participants' schedules are random, so such an assertion would fail by chance)
    assert [r for r in results if r.group == RECURRENCE]


def test_audit_finds_a_planted_leak(observations):
    leaky = [
        dataclasses.replace(
            o,
            headers=dict(o.headers, **{"Content-Length": str(o.size + (o.label != "reference"))}),
        )
        if o.label is not None
        else o
        for o in observations
    ]
    results = analyse(leaky, permutations=199, seed=0, groups=(TRANSPORT,))
    assert results and all(r.leaks and r.balanced_accuracy > 0.9 for r in results)


def test_audit_command_prints_a_verdict(app, demo_study, tmp_path):
    out = tmp_path / "audit.json"
    result = app.test_cli_runner().invoke(
        args=["audit-blinding", demo_study, "--participants", "4", "--permutations", "99"]
        + ["--json", str(out)]
    )
    assert "verdict:" in result.output, result.output
    data = json.loads(out.read_text())
    assert data["participants"] == 4 and data["results"]
    transport_leaks = [r for r in data["leaks"] if "transport" in r]
    assert transport_leaks == [] and result.exit_code in (0, 1)
    assert "no study" in app.test_cli_runner().invoke(args=["audit-blinding", "nope"]).output


def test_helpers():
    assert wav_header(b"not a wav") == {}
    low, high = wilson_interval(50, 100)
    assert low < 0.5 < high and round(high - low, 2) == 0.19
    fake = [
        Observation(p, t, "abx", s, "/u", 200, {}, 10, "h", 1.0, label=lab)
        for p in range(6)
        for t in range(4)
        for s, lab in (("a", "reference"), ("b", "gen"))
    ]
    results = analyse(fake, permutations=49)
    assert all(not r.leaks for r in results)
    assert np.isclose(results[0].balanced_accuracy, 0.5)


def test_every_trial_type_is_blind(app, make_study, long_demo_set_dir):
    """The same audit on every trial type added after ABX and emotion rating: MUSHRA's hidden
    slots (its labelled Reference is open by design and left out), similarity, fit rating, the
    2AFC fit preference and P.808 ACR (gold-high items are the reference clip too)."""
    from pathlib import Path

    design = Path(__file__).parents[1] / "data" / "audit_every_trial_type.yaml"
    slug, _ = make_study(design, long_demo_set_dir)
    observations = collect(app, slug, participants=12, seed=2)
    types = {"mushra", "similarity", "fit_rating", "fit_preference", "acr"}
    labelled = [o for o in observations if o.label is not None]
    assert {o.trial_type for o in labelled} == types
    assert not any(o.slot == "ref" for o in labelled)  # the open references
    # the page's waveform outline (of the open Reference) is observed too, never labelled
    outlines = [o for o in observations if o.slot == "peaks/ref"]
    assert outlines and all(o.status == 200 and o.label is None for o in outlines)
    assert {o.size for o in outlines} == {outlines[0].size}
    results = analyse(observations, permutations=499, seed=0)
    assert {r.task.split("/")[0] for r in results if r.group == TRANSPORT} == types
    for result in results:
        if result.group == TRANSPORT:
            assert not result.leaks, result
    assert all(o.seen_before == 0 for o in labelled)
