"""A hostile participant or visitor: forged and replayed tokens, answers out of order or out of
range, oversized bodies, CSRF-less posts, password guessing, traversal in manifests, injection in
free text, and random junk at every participant endpoint. Nothing may store, leak or crash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from flow import DEFAULT_ANSWERS, answer, current, read_page, start
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from study_app.extensions import db
from study_app.models import Clip, Participant, Response, StimulusSet, Study, Trial


def entry_token(app) -> str:
    with app.app_context():
        return db.session.scalar(select(Study.entry_token))


def responses(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(Response.id)))


def advance_to(client, step: str, trial_type: str):
    for _ in range(50):
        page = current(client, step)
        if page.trial_type == trial_type:
            return page
        assert answer(client, page).status_code == 303
    raise AssertionError(f"no {trial_type} trial")


# Tokens ------------------------------------------------------------------------------------


FORGED_PATHS = (
    "/p/%00/",
    "/p/a%00b/t/x/m/a",
    "/p/" + "x" * 5000 + "/",
    "/p/%ff%fe/",
    "/p/../../etc/passwd/",
    "/join/%00",
    "/join/' OR '1'='1",
)


def test_forged_tokens_are_404_not_500(app, client, demo_study):
    for path in FORGED_PATHS:
        assert client.get(path).status_code == 404, path
        assert client.post(path, data={"answer": "A"}).status_code in (404, 405), path


def test_forged_trial_and_media_tokens(app, client, demo_study):
    step = start(client, entry_token(app))
    page = current(client, step)
    p_token = step.strip("/").split("/")[1]
    for forged in ("A" * 43, page.action.rsplit("/", 1)[1][:-1] + "Z", "%00" * 20):
        assert client.post(f"/p/{p_token}/t/{forged}", data={"consent": "yes"}).status_code == 404
        assert client.get(f"/p/{p_token}/t/{forged}/m/a").status_code == 404
    assert client.get(page.action + "/m/../../secret_key").status_code == 404
    assert client.get(page.action + "/m/nope").status_code == 404
    assert responses(app) == 0


def test_replayed_answer_changes_nothing(app, client, demo_study):
    step = start(client, entry_token(app))
    advance_to(client, step, "abx")
    page = current(client, step)
    assert client.post(page.action, data={"answer": "A", "confidence": "5"}).status_code == 303
    stored = responses(app)
    for data in ({"answer": "B", "confidence": "1"}, {"answer": "A", "confidence": "5"}):
        assert client.post(page.action, data=data).status_code == 303  # replay: a no-op
    assert responses(app) == stored
    # media of an answered trial is gone too
    assert client.get(page.media[0]).status_code == 404
    with app.app_context():
        trial = db.session.scalar(select(Trial).where(Trial.token == page.action.rsplit("/")[-1]))
        assert trial.response.answer["answer"] == "A" and trial.response.answer["confidence"] == 5


def test_answers_to_trials_not_reached_are_refused(app, client, demo_study):
    step = start(client, entry_token(app))
    with app.app_context():
        participant = db.session.scalar(select(Participant))
        urls = [f"/p/{participant.token}/t/{t.token}" for t in participant.trials[1:]]
    for url in urls:
        assert client.post(url, data={"answer": "A", "confidence": "3"}).status_code == 303
        assert client.get(url + "/m/a").status_code == 404
    assert responses(app) == 0
    assert current(client, step).trial_type == "consent"


BAD_ABX = (
    {"answer": "C", "confidence": "3"},
    {"answer": "A", "confidence": "0"},
    {"answer": "A", "confidence": "6"},
    {"answer": "A", "confidence": "-1"},
    {"answer": "A", "confidence": "3.5"},
    {"answer": "A", "confidence": "1e309"},
    {"answer": "A", "confidence": "９"},
    {"answer": "A" * 10_000, "confidence": "3"},
    {},
)
BAD_RATINGS = (("valence", "10"), ("arousal", "0"), ("fit", "9" * 20), ("tempo", "nan"))


def test_out_of_range_answers_and_ratings(app, client, demo_study):
    step = start(client, entry_token(app))
    page = advance_to(client, step, "emotion_rating")
    before = responses(app)
    for field, value in BAD_RATINGS:
        data = dict(DEFAULT_ANSWERS["emotion_rating"], **{field: value})
        assert client.post(page.action, data=data).status_code == 400, field
    assert responses(app) == before
    page = advance_to(client, step, "abx")
    before = responses(app)
    for data in BAD_ABX:
        response = client.post(page.action, data=data)
        assert response.status_code == 400, data
        assert "A" * 1000 not in response.get_data(as_text=True)
    assert responses(app) == before


def test_forged_play_counts_and_rt_are_refused(app, client, demo_study):
    # Refused, not clamped into plausible-looking values (test_numeric_answers.py has more).
    step = start(client, entry_token(app))
    page = advance_to(client, step, "abx")
    before = responses(app)
    for field, value in (("plays_a", "10" * 30), ("plays_b", "-5"), ("rt_ms", "-1e9")):
        data = {"answer": "B", "confidence": "2", field: value}
        response = client.post(page.action, data=data)
        assert response.status_code == 400 and field in response.get_data(as_text=True)
    assert responses(app) == before


def test_oversized_body_is_refused(app, client, demo_study):
    step = start(client, entry_token(app))
    page = current(client, step)
    response = client.post(page.action, data={"consent": "yes", "pad": "x" * (65 * 1024)})
    assert response.status_code == 413
    raw = client.post(
        page.action, data=b"x" * (200 * 1024), content_type="application/octet-stream"
    )
    assert raw.status_code == 413
    assert responses(app) == 0


# Free text: stored inertly, rendered escaped ----------------------------------------------

INJECTION = "<script>alert(1)</script>'; DROP TABLE participants; --\x00\x07"


def test_injection_in_prolific_ids_is_stored_inertly(app, client, demo_study):
    token = entry_token(app)
    query = {"PROLIFIC_PID": INJECTION, "STUDY_ID": "1' OR '1'='1", "SESSION_ID": '"><img>'}
    welcome = client.get(f"/join/{token}", query_string=query)
    assert welcome.status_code == 200
    html = welcome.get_data(as_text=True)
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert '"><img>' not in html
    response = client.post(f"/join/{token}", data=query)
    assert response.status_code == 302
    with app.app_context():
        participant = db.session.scalar(select(Participant))
        assert participant.external_id == "<script>alert(1)</script>'; DROP TABLE participants; --"
        assert participant.external_study_id == "1' OR '1'='1"
        assert db.session.scalar(select(func.count(Participant.id))) == 1  # table still there
    # the same id resumes rather than matching by injection
    again = client.__class__(app).post(f"/join/{token}", data={"PROLIFIC_PID": "x' OR '1'='1"})
    assert again.status_code == 302 and again.headers["Location"] != response.headers["Location"]


def test_injection_is_escaped_on_the_researcher_pages(app, demo_study):
    from study_app.models import Researcher

    token = entry_token(app)
    app.test_client().post(f"/join/{token}", data={"PROLIFIC_PID": INJECTION})
    researcher = app.test_client()
    login = researcher.post(
        "/researcher/login", data={"email": "owner@example.org", "password": "owner-password"}
    )
    assert login.status_code == 302
    with app.app_context():
        assert db.session.scalar(select(Researcher)) is not None
    for url in ("/researcher/", f"/researcher/studies/{demo_study}/responses.csv"):
        page = researcher.get(url, follow_redirects=True)
        assert page.status_code in (200, 404)
        assert b"<script>alert(1)" not in page.get_data() or url.endswith(".csv")


# CSRF and login throttling ----------------------------------------------------------------


@pytest.fixture
def csrf_app(app):
    """The test app with CSRF protection on, as in production, and one researcher."""
    from study_app.models import Researcher

    app.config["WTF_CSRF_ENABLED"] = True
    with app.app_context():
        owner = Researcher(email="owner@example.org")
        owner.set_password("owner-password")
        db.session.add(owner)
        db.session.commit()
    return app


def test_csrf_less_posts_are_refused(csrf_app):
    client = csrf_app.test_client()
    good = {"email": "owner@example.org", "password": "owner-password"}
    assert client.post("/researcher/login", data=good).status_code == 400
    assert client.post("/researcher/logout").status_code in (400, 302)
    forged = dict(good, csrf_token="forged-token")
    assert client.post("/researcher/login", data=forged).status_code == 400
    # with the form's own token it works
    page = client.get("/researcher/login").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    assert client.post("/researcher/login", data=dict(good, csrf_token=token)).status_code == 302
    # a logged-in researcher's state-changing posts need a token too
    for rule in csrf_app.url_map.iter_rules():
        # login/logout are auth's (the same /researcher URLs)
        if rule.endpoint.startswith(("researcher.", "auth.")) and "POST" in rule.methods:
            if rule.arguments:
                continue
            assert client.post(rule.rule).status_code == 400, rule.rule


def test_participant_posts_need_the_page_token(csrf_app, demo_set_dir):
    from study_app.design import read_design_file
    from study_app.models import Researcher
    from study_app.services import create_study, import_stimulus_set

    with csrf_app.app_context():
        import_stimulus_set(demo_set_dir, Path(csrf_app.config["MEDIA_DIR"]))
        owner = db.session.scalar(select(Researcher))
        repo = Path(__file__).resolve().parents[2]
        token = create_study(read_design_file(repo / "stimuli" / "demo_study.yaml"), owner)
        token = token.entry_token
    client = csrf_app.test_client()
    assert client.post(f"/join/{token}").status_code == 400  # no token: nobody is enrolled
    html = client.get(f"/join/{token}").get_data(as_text=True)
    csrf = html.split('name="csrf_token" value="')[1].split('"')[0]
    step = client.post(f"/join/{token}", data={"csrf_token": csrf}).headers["Location"]
    page = read_page(client.get(step))
    assert client.post(page.action, data={"consent": "yes"}).status_code == 400
    assert responses(csrf_app) == 0
    page_csrf = page.html.split('name="csrf_token" value="')[1].split('"')[0]
    ok = client.post(page.action, data={"consent": "yes", "csrf_token": page_csrf})
    assert ok.status_code == 303 and responses(csrf_app) == 1


def test_login_brute_force_is_rate_limited(app, demo_study):
    client = app.test_client()
    statuses = [
        client.post(
            "/researcher/login", data={"email": "owner@example.org", "password": f"guess-{i}"}
        ).status_code
        for i in range(8)
    ]
    assert statuses[:5] == [401] * 5
    assert set(statuses[5:]) == {429}
    # even the right password is refused while throttled
    right = client.post(
        "/researcher/login", data={"email": "OWNER@example.org", "password": "owner-password"}
    )
    assert right.status_code == 429
    # another account is not locked by guesses at this one
    other = client.post("/researcher/login", data={"email": "x@example.org", "password": "nope"})
    assert other.status_code == 401


def test_login_throttle_is_shared_by_every_worker_and_expires(app, database, demo_study, make_app):
    """gunicorn runs several processes: the failures are counted in the database, so a second
    app on the same database (another worker) refuses the sixth guess too."""
    from datetime import timedelta

    from study_app.models import LoginFailure

    other_worker = make_app(*database)
    guess = {"email": "owner@example.org", "password": "wrong"}
    for _ in range(5):
        assert app.test_client().post("/researcher/login", data=guess).status_code == 401
    assert other_worker.test_client().post("/researcher/login", data=guess).status_code == 429
    # once the window has passed, the old failures no longer count (and are cleared)
    with app.app_context():
        for failure in db.session.scalars(select(LoginFailure)):
            failure.at -= timedelta(minutes=6)
        db.session.commit()
    right = {"email": "owner@example.org", "password": "owner-password"}
    assert other_worker.test_client().post("/researcher/login", data=right).status_code == 302
    with app.app_context():
        assert db.session.scalar(select(func.count(LoginFailure.id))) == 0


# Path traversal through the import command ------------------------------------------------


def test_import_cli_refuses_paths_that_leave_the_set(app, demo_set_dir, tmp_path):
    for how in ("dotdot", "absolute", "symlink_out", "video_dotdot"):
        refused_import(app, demo_set_dir, tmp_path / how, how)


def refused_import(app, demo_set_dir, tmp_path, how):
    tmp_path.mkdir()
    broken = tmp_path / "set"
    shutil.copytree(demo_set_dir, broken)
    outside = tmp_path / "outside.wav"
    shutil.copy(
        broken / json.loads((broken / "manifest.json").read_text())["clips"][0]["path"], outside
    )
    manifest = json.loads((broken / "manifest.json").read_text())
    clip = manifest["clips"][0]
    if how == "dotdot":
        clip["path"] = "../outside.wav"
    elif how == "absolute":
        clip["path"] = str(outside)
    elif how == "symlink_out":
        (broken / "audio" / "escape.wav").symlink_to(outside)
        clip["path"] = "audio/escape.wav"
    else:
        manifest["sources"][0]["video"] = "video/../../outside.wav"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    result = app.test_cli_runner().invoke(args=["import-stimuli", str(broken)])
    assert result.exit_code != 0, (how, result.output)
    with app.app_context():
        assert db.session.scalar(select(func.count(StimulusSet.id))) == 0
        assert db.session.scalar(select(func.count(Clip.id))) == 0


# Property-based: random junk at every participant endpoint --------------------------------

junk_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
junk_form = st.dictionaries(
    st.sampled_from(
        ["answer", "confidence", "valence", "arousal", "fit", "tempo", "gems", "consent"]
        + ["plays_a", "plays_x", "plays_clip", "rt_ms", "PROLIFIC_PID", "csrf_token"]
    )
    | junk_text,
    junk_text,
    max_size=8,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    which=st.sampled_from(["join", "step", "answer", "media", "other_trial"]),
    token_part=st.one_of(st.none(), junk_text),
    slot=junk_text,
    form=junk_form,
    method=st.sampled_from(["get", "post"]),
)
def test_participant_endpoints_never_500(app, demo_study, which, token_part, slot, form, method):
    from urllib.parse import quote

    client = app.test_client()
    token = entry_token(app)
    step = start(client, token, "")
    page = current(client, step)
    p_token = step.strip("/").split("/")[1]
    t_token = page.action.rsplit("/", 1)[1]
    bad = None if token_part is None else quote(token_part, safe="") or "x"
    urls = {
        "join": f"/join/{bad or token}",
        "step": f"/p/{bad or p_token}/",
        "answer": f"/p/{p_token}/t/{bad or t_token}",
        "media": f"/p/{p_token}/t/{t_token}/m/{quote(slot, safe='') or 'a'}",
        "other_trial": f"/p/{bad or p_token}/t/{t_token}",
    }
    url = urls[which]
    if method == "get":
        response = client.get(url, query_string={k: v for k, v in form.items()})
    else:
        response = client.post(url, data=form)
    assert response.status_code < 500, (url, form, response.status_code)
    with app.app_context():
        stored = db.session.scalars(select(Response)).all()
    for row in stored:  # whatever got stored is a valid answer of its trial type
        assert json.dumps(row.answer)
