"""MUSHRA's "rate every sample" rule holds on the server, not only in mushra.js: sliders start
unset (no default score a participant could leave as an answer), an answer with an unset slider
or without the page's "every slider moved" mark is refused with a 400 naming the samples, and
every numeric field must be a finite number in its range. SQLite and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flow import read_page, start
from sqlalchemy import func, select

from study_app.extensions import db
from study_app.models import Response

DESIGN = Path(__file__).parent / "data" / "new_types_study.yaml"


@pytest.fixture
def mushra_page(app, client, make_study):
    _, token = make_study(DESIGN)
    step = start(client, token)
    client.post(read_page(client.get(step)).action, data={"consent": "yes"})
    page = read_page(client.get(step))
    assert page.trial_type == "mushra"
    return page


def answers(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(Response.id)))


def complete(page) -> dict[str, str]:
    slots = re.findall(r'name="score_(s\d+)"', page.html)
    assert len(slots) == 5
    return {f"score_{s}": str(40 + i) for i, s in enumerate(slots)} | {"moved": "all"}


def test_sliders_start_unset(mushra_page):
    html = mushra_page.html
    # the submitted score fields are empty until the participant sets a slider...
    fields = re.findall(r'<input type="hidden" name="score_(s\d+)" value="([^"]*)">', html)
    assert len(fields) == 5 and all(value == "" for _, value in fields)
    # ...and the visible sliders submit nothing themselves (their resting value is no answer)
    sliders = re.findall(r'<input type="range"[^>]*>', html)
    assert len(sliders) == 5
    assert not any("name=" in s for s in sliders)
    assert all('class="mushra-slider unset"' in s for s in sliders)


def test_an_unset_slider_is_refused_naming_the_samples(app, client, mushra_page):
    data = complete(mushra_page)
    slots = [k for k in data if k.startswith("score_")]
    data[slots[1]] = ""  # set on the page's first load: empty
    del data[slots[3]]  # or not sent at all
    response = client.post(mushra_page.action, data=data)
    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert "not set yet: sample 2, sample 4" in text
    assert answers(app) == 1  # the consent only


def test_an_answer_without_the_moved_mark_is_refused(app, client, mushra_page):
    data = complete(mushra_page)
    for moved in (None, "", "some", "none"):
        sent = {k: v for k, v in data.items() if k != "moved"}
        if moved is not None:
            sent["moved"] = moved
        response = client.post(mushra_page.action, data=sent)
        assert response.status_code == 400, moved
        assert "Please move every slider" in response.get_data(as_text=True)
    assert answers(app) == 1
    assert client.post(mushra_page.action, data=data).status_code == 303
    assert answers(app) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("score", "nan"),
        ("score", "inf"),
        ("score", "-inf"),
        ("score", "1e2"),
        ("score", "101"),
        ("score", "-1"),
        ("score", "50.5"),
        ("score", "\uff15\uff10"),  # fullwidth "50": int() would take it
        ("plays_ref", "nan"),
        ("plays_ref", "-1"),
        ("rt_ms", "inf"),
        ("rt_ms", "nan"),
        ("rt_ms", "-5"),
    ],
)
def test_numeric_fields_must_be_finite_and_in_range(app, client, mushra_page, field, value):
    data = complete(mushra_page)
    if field == "score":
        field = next(k for k in data if k.startswith("score_"))
    data[field] = value
    response = client.post(mushra_page.action, data=data)
    assert response.status_code == 400
    assert field in response.get_data(as_text=True)  # the problem names the field
    assert answers(app) == 1


def test_a_complete_answer_keeps_the_scores_given(app, client, mushra_page):
    data = complete(mushra_page) | {"plays_ref": "2", "rt_ms": "12345.6"}
    assert client.post(mushra_page.action, data=data).status_code == 303
    with app.app_context():
        stored = db.session.scalars(select(Response.answer).order_by(Response.id)).all()[-1]
    assert stored["scores"] == {
        k.removeprefix("score_"): int(v) for k, v in data.items() if k.startswith("score_")
    }
    assert stored["plays"]["ref"] == 2 and stored["client_rt_ms"] in (12345, 12346)
