"""Error pages: every status in the app's layout, in plain words, with a way back to the study
for a participant that names nothing but their own step page; and the favicon."""

from __future__ import annotations

import re

import pytest
from flask import abort
from flow import answer, current, start
from sqlalchemy import select
from werkzeug.exceptions import TooManyRequests

from study_app.extensions import db
from study_app.models import Clip, Study

STATUSES = (400, 403, 404, 405, 413, 429, 500)
BACK_LINK = re.compile(r'<a class="button primary" id="back-to-study" href="([^"]+)"')


def assert_laid_out(response, status: int) -> str:
    """The app's own layout: viewport, stylesheet, a main landmark and one level-one heading."""
    assert response.status_code == status
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    # (the stylesheet's URL is fingerprinted: study_app/static_assets.py)
    assert re.search(r'"/static/[0-9a-f]{8}/style\.css"', html) and '<main id="main">' in html
    assert len(re.findall(r"<h1>[^<]+</h1>", html)) == 1, html
    assert f"Error {status}" in html
    return html


@pytest.fixture
def aborting_app(database, make_app):
    """An app with routes that fail with each status, under a participant URL and elsewhere
    (routes must be added before the first request, so it is a fresh app)."""
    app = make_app(*database)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a crash becomes the 500 page, as in production
    with app.app_context():
        db.create_all()

    def fail(status: int, token: str = ""):
        if status == 500:
            raise RuntimeError("a bug")
        if status == 429:
            raise TooManyRequests(retry_after=60)
        abort(status)

    app.add_url_rule("/fail/<int:status>", "fail", fail)
    app.add_url_rule("/p/<token>/fail/<int:status>", "participant_fail", fail)
    return app


@pytest.mark.parametrize("status", STATUSES)
def test_every_error_status_has_a_laid_out_page_in_plain_words(aborting_app, status):
    client = aborting_app.test_client()
    response = client.get(f"/fail/{status}")
    html = assert_laid_out(response, status)
    assert "link you were given" not in html  # not a participant URL: no participant advice
    if status == 429:
        assert response.headers["Retry-After"] == "60"  # the error's own headers are kept
    # A participant URL, with a token nobody has: how to get back in, but no link.
    html = assert_laid_out(client.get(f"/p/{'u' * 43}/fail/{status}"), status)
    assert "link you were given" in html and not BACK_LINK.search(html)


def test_plain_words_not_flasks_defaults(aborting_app):
    client = aborting_app.test_client()
    for status, words in (
        (404, "There is no page at this address"),
        (405, "cannot be opened or reloaded by itself"),
        (413, "larger than this site accepts"),
        (429, "Please wait a few minutes"),
        (500, "Nothing you did caused this"),
    ):
        html = client.get(f"/fail/{status}").get_data(as_text=True)
        assert words in html, status
        assert "The requested URL" not in html and "Werkzeug" not in html


def test_known_participant_gets_a_link_to_their_own_step_and_nothing_else(app, client, demo_study):
    step = start(client, db_entry_token(app))
    token = step.split("/")[2]
    page = current(client, step)
    assert answer(client, page).status_code == 303  # past consent, inside the study
    page = current(client, step)
    trial_token = page.action.rsplit("/", 1)[1]
    with app.app_context():
        study = db.session.scalar(select(Study))
        secrets = set(db.session.scalars(select(Clip.condition))) | set(
            db.session.scalars(select(Clip.key))
        )
        secrets |= {study.slug, study.completion_code}
    for path, status in (
        (f"/p/{token}/t/{trial_token}", 405),  # reloading the answer URL
        (f"/p/{token}/t/{'z' * 43}/m/a", 404),  # a medium of a trial not current
        (f"/p/{token}/t/{trial_token}/m/nope", 404),  # a slot the trial does not have
        (f"/p/{token}/nothing-here", 404),
    ):
        response = client.get(path)
        html = assert_laid_out(response, status)
        assert BACK_LINK.search(html).group(1) == f"/p/{token}/", path
        assert response.headers["Cache-Control"] == "no-store"
        # Blind: the page names no condition, clip, code or slug (it is the same page for
        # every participant apart from their own token).
        assert not [s for s in secrets if s and s in html], path
    # The link leads back to the page the participant was on.
    assert current(client, step).action == page.action


def test_oversized_answer_gets_the_413_page_with_the_way_back(app, client, demo_study):
    step = start(client, db_entry_token(app))
    page = current(client, step)
    response = client.post(page.action, data={"consent": "yes", "pad": "x" * (65 * 1024)})
    html = assert_laid_out(response, 413)
    assert BACK_LINK.search(html).group(1) == step


def test_expired_form_gets_the_400_page_with_the_way_back(app, demo_study):
    """With CSRF on (as in production), an answer whose form token is missing, e.g. a page kept
    open across a browser restart, is a 400 that says how to go on."""
    app.config["WTF_CSRF_ENABLED"] = True
    client = app.test_client()
    entry = db_entry_token(app)
    join = client.get(f"/join/{entry}").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', join).group(1)
    step = client.post(f"/join/{entry}", data={"csrf_token": csrf}).headers["Location"]
    page = current(client, step)
    html = assert_laid_out(client.post(page.action, data={"consent": "yes"}), 400)
    assert BACK_LINK.search(html).group(1) == step


def test_unknown_entry_link_says_to_use_the_link_given(app, client, demo_study):
    html = assert_laid_out(client.get(f"/join/{'e' * 43}"), 404)
    assert "link you were given" in html and not BACK_LINK.search(html)


def test_researcher_pages_get_html_and_their_scripts_get_json(app, demo_study):
    client = app.test_client()
    response = client.post(
        "/researcher/login", data={"email": "owner@example.org", "password": "owner-password"}
    )
    assert response.status_code == 302
    html = assert_laid_out(client.get("/researcher/studies/no-such-study/"), 404)
    assert 'href="/researcher/"' in html and "link you were given" not in html
    response = client.get("/researcher/studies/no-such-study/dashboard.json")
    assert response.status_code == 404 and response.is_json
    assert response.get_json()["ok"] is False


def test_favicon(app, client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert response.get_data(as_text=True).startswith("<svg")
    page = client.get(f"/p/{'u' * 43}/").get_data(as_text=True)
    assert re.search(
        r'<link rel="icon" href="/static/[0-9a-f]{8}/favicon\.svg" type="image/svg\+xml">', page
    )
    assert client.get("/static/favicon.svg").status_code == 200


def db_entry_token(app) -> str:
    with app.app_context():
        return db.session.scalar(select(Study.entry_token))
