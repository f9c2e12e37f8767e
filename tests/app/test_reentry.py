"""Issue 23, item 7: a participant who comes back under another PROLIFIC_PID is flagged for the
researcher (dashboard, export), never blocked: by the study's browser-marker cookie, or by the
same client address and User-Agent within a day (study_app/reentry.py)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from flow import answer, current, run_to_end
from sqlalchemy import select

from study_app.extensions import db
from study_app.models import Participant, Study
from study_app.reentry import ADDRESS_WINDOW, MARKER_SHAPE


def entry_token(app, slug: str) -> str:
    with app.app_context():
        return db.session.scalar(select(Study.entry_token).where(Study.slug == slug))


def join(client, token: str, pid: str, address: str, agent: str = "Browser/1") -> str:
    response = client.post(
        f"/join/{token}?PROLIFIC_PID={pid}",
        environ_base={"REMOTE_ADDR": address},
        headers={"User-Agent": agent},
    )
    assert response.status_code == 302
    return response.headers["Location"]


def flags(app, pid: str) -> tuple[str | None, str | None]:
    with app.app_context():
        participant = db.session.scalar(select(Participant).where(Participant.external_id == pid))
        return participant.possible_reentry_of, participant.reentry_evidence


def screen_out(app, pid: str) -> None:
    with app.app_context():
        participant = db.session.scalar(select(Participant).where(Participant.external_id == pid))
        participant.screened_out = True
        db.session.commit()


def test_a_screened_out_participant_back_under_a_new_pid_is_flagged_not_blocked(app, demo_study):
    """The same browser, another PROLIFIC_PID, another address: a participant of their own (not
    the earlier session, not a refusal), flagged by the browser's marker cookie."""
    token = entry_token(app, demo_study)
    browser = app.test_client()
    first = join(browser, token, "pid-1", "198.51.100.1")
    screen_out(app, "pid-1")
    second = join(browser, token, "pid-2", "203.0.113.9")  # e.g. after switching networks
    assert second != first
    assert current(browser, second).trial_type == "consent"  # a fresh session
    assert flags(app, "pid-2") == ("P0001", "cookie")
    assert flags(app, "pid-1") == (None, None)
    # the first participant, back with their own id, still resumes their own session, and a
    # visit without an id resumes the browser's latest one
    assert join(browser, token, "pid-1", "203.0.113.9") == first
    assert browser.get(f"/join/{token}").headers["Location"] == second


def test_the_same_address_and_agent_within_a_day_is_flagged(app, demo_study):
    token = entry_token(app, demo_study)
    join(app.test_client(), token, "pid-1", "198.51.100.1", "Agent/A")
    # a fresh browser (private window), same address and agent
    join(app.test_client(), token, "pid-2", "198.51.100.1", "Agent/A")
    assert flags(app, "pid-2") == ("P0001", "address+agent")
    # another agent at the same address, or the same agent elsewhere: no flag
    join(app.test_client(), token, "pid-3", "198.51.100.1", "Agent/B")
    join(app.test_client(), token, "pid-4", "198.51.100.2", "Agent/A")
    assert flags(app, "pid-3") == flags(app, "pid-4") == (None, None)
    # a day later the address match no longer counts
    with app.app_context():
        for participant in db.session.scalars(select(Participant)):
            participant.started_at -= ADDRESS_WINDOW + timedelta(minutes=1)
        db.session.commit()
    join(app.test_client(), token, "pid-5", "198.51.100.1", "Agent/A")
    assert flags(app, "pid-5") == (None, None)


def test_every_earlier_entry_and_both_kinds_of_evidence_are_listed(app, demo_study):
    token = entry_token(app, demo_study)
    browser = app.test_client()
    join(browser, token, "pid-1", "198.51.100.1")
    join(app.test_client(), token, "pid-2", "198.51.100.1")
    join(browser, token, "pid-3", "198.51.100.1")
    assert flags(app, "pid-2") == ("P0001", "address+agent")
    assert flags(app, "pid-3") == ("P0001|P0002", "cookie|address+agent")


def test_the_marker_cookie_is_opaque_and_only_hashes_are_stored(app, demo_study):
    token = entry_token(app, demo_study)
    markers = []
    for pid in ("pid-1", "pid-2"):
        response = app.test_client().post(
            f"/join/{token}?PROLIFIC_PID={pid}", environ_base={"REMOTE_ADDR": "198.51.100.1"}
        )
        cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("ss_seen_"))
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        markers.append(cookie.split("=", 1)[1].split(";", 1)[0])
    # random, the same shape for everyone: it carries nothing about the study or its stimuli
    assert all(MARKER_SHAPE.fullmatch(m) for m in markers) and markers[0] != markers[1]
    with app.app_context():
        stored = db.session.scalars(select(Participant)).all()
        for participant in stored:
            for tag in (participant.browser_tag, participant.client_tag):
                assert len(tag) == 64 and "198.51.100.1" not in tag
                assert tag not in markers


def test_export_and_dashboard_show_the_flags(app, demo_study):
    token = entry_token(app, demo_study)
    browser = app.test_client()
    first_step = join(browser, token, "pid-1", "198.51.100.1")
    first = current(browser, first_step)
    answer(browser, first)  # consent
    run_to_end(browser, join(browser, token, "pid-2", "198.51.100.1"))
    researcher = app.test_client()
    login = {"email": "owner@example.org", "password": "owner-password"}
    assert researcher.post("/researcher/login", data=login).status_code == 302
    summary = researcher.get(f"/researcher/studies/{demo_study}/dashboard.json").get_json()
    assert summary["possible_reentries"] == 1
    rows = {p["participant"]: p for p in summary["participants"]}
    assert rows["P0002"]["possible_reentry_of"] == "P0001"
    assert rows["P0002"]["reentry_evidence"] == "cookie|address+agent"
    assert rows["P0001"]["possible_reentry_of"] is None
    page = researcher.get(f"/researcher/studies/{demo_study}/participants/P0002")
    assert "Possible re-entry under another Prolific id: may be P0001" in page.get_data(
        as_text=True
    )
    text = researcher.get(f"/researcher/studies/{demo_study}/responses.csv").get_data(as_text=True)
    exported = list(csv.DictReader(io.StringIO(text)))
    reentered = [r for r in exported if r["participant"] == "P0002"]
    assert reentered and all(r["possible_reentry_of"] == "P0001" for r in reentered)
    assert all(r["reentry_evidence"] == "cookie|address+agent" for r in reentered)
