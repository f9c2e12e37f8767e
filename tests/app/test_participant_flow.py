"""A participant's session through the HTTP layer: storage, resume, idempotence, isolation."""

from __future__ import annotations

import csv
import io

from flow import DEFAULT_ANSWERS, answer, current, run_to_end, start
from sqlalchemy import func, select

from study_app.export import responses_csv
from study_app.extensions import db
from study_app.models import Participant, Response, Study, Trial


def entry_token(app, slug: str) -> str:
    with app.app_context():
        return db.session.scalar(select(Study.entry_token).where(Study.slug == slug))


def response_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(Response.id)))


def with_statements(app, request):
    """(what `request()` returned, [(SQL statement, isolation level set on its connection)])
    for every statement the app executed meanwhile."""
    from sqlalchemy import event

    with app.app_context():
        engine = db.engine
    seen: list[tuple[str, str | None]] = []

    def listener(conn, cursor, statement, *args):
        seen.append((statement, conn.get_execution_options().get("isolation_level")))

    event.listen(engine, "before_cursor_execute", listener)
    try:
        return request(), seen
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def db_kind(app) -> str:
    with app.app_context():
        return db.engine.dialect.name


def kinds(statements) -> list[str]:
    """SELECT, INSERT, UPDATE, ... of each recorded statement."""
    return [statement.split()[0].upper() for statement, _ in statements]


def test_whole_demo_study_and_export(app, client, demo_study):
    step = start(
        client, entry_token(app, demo_study), "?PROLIFIC_PID=pid-1&STUDY_ID=s1&SESSION_ID=x9"
    )
    seen_types = []
    final = run_to_end(client, step, on_page=lambda page: seen_types.append(page.trial_type))
    assert "DEMO-2026" in final.html
    assert seen_types[0] == "consent"
    assert seen_types.count("headphone_check") == 6
    assert seen_types.count("abx") == 4
    assert seen_types.count("emotion_rating") == 4
    with app.app_context():
        study = db.session.scalar(select(Study).where(Study.slug == demo_study))
        participant = study.participants[0]
        assert participant.external_id == "pid-1"
        assert participant.external_study_id == "s1"
        assert participant.external_session_id == "x9"
        assert participant.completed_at is not None
        rows = list(csv.DictReader(io.StringIO(responses_csv(study))))
    # consent is not exported; every other answer is one row
    assert len(rows) == 6 + 4 + 4
    abx = [r for r in rows if r["trial_type"] == "abx"]
    assert {r["answer"] for r in abx} == {"A"}
    assert all(r["correct"] == str(int(r["correct_answer"] == "A")) for r in abx)
    assert all(r["confidence"] == "3" for r in abx)
    emotion = [r for r in rows if r["trial_type"] == "emotion_rating"]
    assert {r["valence"] for r in emotion} == {"6"}
    assert {r["gems"] for r in emotion} == {"wonder;tension"}
    assert {r["condition"] for r in emotion} == {
        "reference",
        "sine_resynthesis",
        "shuffled_notes",
        "mismatched",
    }
    assert all(r["external_id"] == "pid-1" for r in rows)
    # every answer came at once, faster than the clips could be heard
    assert all(r["flag_too_fast"] == "1" and r["excluded"] == "1" for r in abx)


def test_double_submit_stores_one_row(app, client, demo_study):
    step = start(client, entry_token(app, demo_study))
    page = current(client, step)
    assert answer(client, page).status_code == 303
    first = response_count(app)
    again = client.post(page.action, data={"consent": "yes"})
    assert again.status_code == 303
    assert response_count(app) == first == 1


def test_repeat_submit_keeps_the_first_answer(app, client, demo_study):
    step = start(client, entry_token(app, demo_study))
    answer(client, current(client, step))  # consent
    screening = current(client, step)
    answer(client, screening, {"answer": "2"})
    answer(client, screening, {"answer": "3"})
    with app.app_context():
        stored = db.session.scalars(
            select(Response).join(Trial).where(Trial.trial_type == "headphone_check")
        ).all()
        assert [r.answer["answer"] for r in stored] == ["2"]


def test_reload_resumes_at_first_unanswered_trial(app, client, demo_study):
    step = start(client, entry_token(app, demo_study))
    for _ in range(3):
        answer(client, current(client, step))
    before = current(client, step)
    reloaded = current(client, step)
    assert before.action == reloaded.action
    # a fresh browser (no cookie) with the same link resumes too
    other_browser = app.test_client()
    assert current(other_browser, step).action == before.action
    with app.app_context():
        trial = db.session.scalar(
            select(Trial).where(Trial.token == before.action.rsplit("/", 1)[1])
        )
        assert trial.trial_index == 3


def test_join_link_twice_in_same_browser_resumes(app, client, demo_study):
    token = entry_token(app, demo_study)
    step = start(client, token)
    assert client.get(f"/join/{token}").headers["Location"] == step


def test_returning_prolific_participant_gets_their_session(app, demo_study):
    token = entry_token(app, demo_study)
    first = start(app.test_client(), token, "?PROLIFIC_PID=abc")
    second = start(app.test_client(), token, "?PROLIFIC_PID=abc")
    assert first == second
    with app.app_context():
        assert db.session.scalar(select(func.count(Participant.id))) == 1


def test_token_cannot_touch_another_participants_trial(app, demo_study):
    token = entry_token(app, demo_study)
    alice, bob = app.test_client(), app.test_client()
    alice_step, bob_step = start(alice, token), start(bob, token)
    alice_page = current(alice, alice_step)
    bob_token = bob_step.strip("/").split("/")[1]
    alice_trial = alice_page.action.rsplit("/", 1)[1]
    forged = f"/p/{bob_token}/t/{alice_trial}"
    assert bob.post(forged, data=DEFAULT_ANSWERS["consent"]).status_code == 404
    assert bob.get(forged + "/m/a").status_code == 404
    assert response_count(app) == 0
    assert bob.get("/p/not-a-token/").status_code == 404


def test_answer_to_a_trial_not_reached_is_refused(app, client, demo_study):
    step = start(client, entry_token(app, demo_study))
    with app.app_context():
        participant = db.session.scalar(select(Participant))
        later = participant.trials[5]
        url = f"/p/{participant.token}/t/{later.token}"
    response = client.post(url, data=DEFAULT_ANSWERS["headphone_check"])
    assert response.status_code == 303
    assert response_count(app) == 0
    assert client.get(url + "/m/tones").status_code == 404  # no peeking at later media either
    assert current(client, step).trial_type == "consent"


def test_invalid_answer_is_refused_with_a_message(app, client, demo_study):
    step = start(client, entry_token(app, demo_study))
    page = current(client, step)
    while page.trial_type != "abx":
        answer(client, page)
        page = current(client, step)
    response = client.post(page.action, data={"answer": "C", "confidence": "9"})
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert "X is A or B" in body and "between 1 and 5" in body
    assert response_count(app) == 1 + 6 + 4  # consent, screening, emotion ratings


def test_closed_study_turns_participants_away_politely(app, client, demo_study):
    with app.app_context():
        study = db.session.scalar(select(Study))
        study.status = "closed"
        db.session.commit()
        token = study.entry_token
    response = client.get(f"/join/{token}")
    assert response.status_code == 403
    assert "not taking participants" in response.get_data(as_text=True)


def test_progress_and_position_come_from_one_query(app, client, demo_study):
    """The page's progress counts what is stored, and every participant request starts with a
    single query (participant, study, current trial and progress together)."""
    step = start(client, entry_token(app, demo_study))
    for _ in range(3):
        answer(client, current(client, step))
    page, statements = with_statements(app, lambda: current(client, step))
    with app.app_context():
        participant = db.session.scalar(select(Participant))
        # consent (answered first) and the debrief are pages, not trials: neither counts
        total = sum(1 for t in participant.trials if t.trial_type not in ("consent", "debrief"))
    assert f"2 of {total} answered" in page.html
    selects = [
        sql
        for (sql, _), kind in zip(statements, kinds(statements), strict=True)
        if kind == "SELECT"
    ]
    assert len(selects) == 1, selects


def test_trial_requests_run_in_autocommit_with_at_most_two_statements(app, client, demo_study):
    """A page, a medium or an answer makes one write at most, a single statement, so they run
    in autocommit (no BEGIN and COMMIT round trips); the answer is still stored before the 303.
    Joining writes a participant and their schedule together, so it keeps its transaction."""
    response, joined = with_statements(
        app, lambda: client.post(f"/join/{entry_token(app, demo_study)}")
    )
    assert "INSERT" in kinds(joined)
    assert {level for _, level in joined} == {None}  # the engine's default: a transaction
    step = response.headers["Location"]
    answer(client, current(client, step))  # past the consent page: the next one has media

    page_response, page_statements = with_statements(app, lambda: client.get(step))
    page = current(client, step)
    assert page.media
    # (the body read, as a browser reads it: the evidence is recorded once it is written)
    medium, media_all = with_statements(app, lambda: client.get(page.media[0], buffered=True))
    again, again_all = with_statements(app, lambda: client.get(page.media[0], buffered=True))
    acknowledged, answer_statements = with_statements(app, lambda: answer(client, page))
    assert (page_response.status_code, medium.status_code, again.status_code) == (200, 200, 200)
    assert acknowledged.status_code == 303
    assert kinds(page_statements) == ["SELECT", "UPDATE"]  # locate, first view
    # The media request itself only reads, in autocommit: locate, the slot's throttle window
    # (and the clip's file, the first time). Once the body is written, the bytes written go
    # into the slot's evidence row in one transaction of its own (listening evidence, issue
    # 23): a lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: the trial's row), a read, one write.
    media_statements = [s for s in media_all if s[1] == "AUTOCOMMIT"]
    again_statements = [s for s in again_all if s[1] == "AUTOCOMMIT"]
    assert kinds(media_statements) in (["SELECT", "SELECT"], ["SELECT", "SELECT", "SELECT"])
    assert kinds(again_statements) == ["SELECT", "SELECT"]  # the clip's file is known now
    lock = "BEGIN" if db_kind(app) == "sqlite" else "SELECT"
    assert kinds([s for s in media_all if s[1] is None]) == [lock, "SELECT", "INSERT"]
    assert kinds([s for s in again_all if s[1] is None]) == [lock, "SELECT", "UPDATE"]
    assert kinds(answer_statements) == ["SELECT", "INSERT"]
    for _, level in page_statements + media_statements + again_statements + answer_statements:
        assert level == "AUTOCOMMIT"
    assert response_count(app) == 2  # the consent and this answer, committed
