"""A pause page (the ACR block's rest periods) takes no answer before its countdown ends, by the
server's clock: the countdown in the page is the browser's, and a forged form would skip it."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from flow import current, start
from sqlalchemy import func, select

from study_app.extensions import db
from study_app.models import Response, Study, Trial, as_utc
from study_app.services import TooEarly, locate, record_answer
from study_app.trial_types import get_trial_type

REST_SECONDS = 20
DESIGN = {
    "slug": "pauses",
    "title": "Pauses",
    "stimulus_set": "demo",
    "blocks": [
        {
            "id": "quality",
            "type": "acr",
            "conditions": ["reference", "shuffled_notes"],
            "trials_per_participant": 4,
            "gold_questions": 0,
            "trapping_questions": 0,  # the demo set's 3 s clips are too short for them
            "rest_every": 2,
            "rest_seconds": REST_SECONDS,
        }
    ],
}


def test_the_hook_asks_a_pause_for_its_own_length_and_nothing_else():
    acr = get_trial_type("acr")
    assert acr.min_answer_seconds({"item": "rest", "rest_seconds": 7}, {"rest_seconds": 99}) == 7
    assert acr.min_answer_seconds({"item": "rating", "duration": 3.0}, {}) == 0
    assert acr.min_answer_seconds({"item": "gold", "duration": 3.0}, {}) == 0
    for name in ("abx", "consent", "headphone_check", "mushra"):  # the base class's default
        assert get_trial_type(name).min_answer_seconds({}, {}) == 0


@pytest.fixture
def at_pause(app, client, make_study, tmp_path):
    """A participant on their first pause page (served, so its countdown has started); returns
    (participant token, step URL, the pause page)."""
    path = tmp_path / "pauses.yaml"
    path.write_text(yaml.safe_dump(DESIGN))
    _, token = make_study(path)
    step = start(client, token)
    for _ in range(2):  # two ratings, then the pause
        page = current(client, step)
        assert client.post(page.action, data={"rating": "4"}).status_code == 303
    page = current(client, step)
    assert 'id="rest"' in page.html and f'data-rest-seconds="{REST_SECONDS}"' in page.html
    return step.split("/")[2], step, page


def _pause(participant_token: str):
    """(the pause trial, the participant's current trial) as the answer route sees them."""
    position = locate(participant_token)
    return position.current, position.current


def answers(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(Response.id)))


def test_an_early_answer_is_refused_with_a_message_and_the_page_stays(app, client, at_pause):
    _, step, page = at_pause
    refused = client.post(page.action, data={})
    assert refused.status_code == 400
    html = refused.get_data(as_text=True)
    assert "Please wait until the pause is over" in html
    assert 'id="rest"' in html and page.action in html  # the same pause page, not the next
    assert answers(app) == 2
    assert current(client, step).action == page.action  # still on the pause


def test_the_countdown_is_measured_by_the_servers_clock(app, at_pause):
    participant_token, _, _ = at_pause
    with app.app_context():
        trial, now_current = _pause(participant_token)
        shown = as_utc(trial.presented_at)
        with pytest.raises(TooEarly) as early:
            record_answer(trial, now_current, {}, now=shown + timedelta(seconds=REST_SECONDS - 0.5))
        assert early.value.seconds_left == pytest.approx(0.5)
        assert early.value.problems == ["Please wait until the pause is over (1 s left)."]
        with pytest.raises(TooEarly):  # a clock that went back counts as no time at all
            record_answer(trial, now_current, {}, now=shown - timedelta(seconds=5))
    assert answers(app) == 2
    with app.app_context():
        trial, now_current = _pause(participant_token)
        stored = record_answer(
            trial, now_current, {}, now=as_utc(trial.presented_at) + timedelta(seconds=REST_SECONDS)
        )
        assert stored
        assert db.session.get(Trial, trial.id).response.answer["rest"] is True
    assert answers(app) == 3


def test_a_pause_never_served_takes_no_answer(app, at_pause):
    """A pause whose page was never served (a forged POST) has not started counting down."""
    participant_token, _, _ = at_pause
    with app.app_context():
        trial, now_current = _pause(participant_token)
        trial.presented_at = None
        db.session.commit()
        far_later = as_utc(db.session.scalar(select(Study.created_at))) + timedelta(days=1)
        with pytest.raises(TooEarly) as early:
            record_answer(trial, now_current, {}, now=far_later)
        assert early.value.seconds_left == REST_SECONDS
    assert answers(app) == 2


def test_once_the_countdown_is_over_the_pause_is_answered_over_http(app, client, at_pause):
    _, step, page = at_pause
    with app.app_context():
        trial = db.session.scalar(select(Trial).where(Trial.token == page.action.rsplit("/")[-1]))
        trial.presented_at = as_utc(trial.presented_at) - timedelta(seconds=REST_SECONDS)
        db.session.commit()
    assert client.post(page.action, data={}).status_code == 303
    assert answers(app) == 3
    after = current(client, step)
    assert after.trial_type == "acr" and after.action != page.action
    # a rated clip has no countdown: its answer is taken at once
    assert client.post(after.action, data={"rating": "2"}).status_code == 303
    assert answers(app) == 4
