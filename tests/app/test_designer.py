"""Researchers design, preview, open, monitor and curate studies in the browser (HTTP level)."""

from __future__ import annotations

import io

import pytest
import yaml
from flow import DEFAULT_ANSWERS, run_to_end, start
from researcher import build_in_designer, logged_in, two_block_design
from sqlalchemy import func, select

from study_app.export import responses_csv
from study_app.extensions import db
from study_app.models import AuditEvent, Participant, Researcher, Response, Study, Trial


@pytest.fixture
def researchers(app, demo_study):
    with app.app_context():
        other = Researcher(email="other@example.org")
        other.set_password("other-password")
        admin = Researcher(email="admin@example.org", is_admin=True)
        admin.set_password("admin-password")
        db.session.add_all([other, admin])
        db.session.commit()


@pytest.fixture
def owner(app, researchers):
    return logged_in(app, "owner@example.org", "owner-password")


def test_designer_yaml_round_trip_gives_identical_design(app, owner):
    slug = build_in_designer(owner, two_block_design())
    exported = owner.get(f"/researcher/studies/{slug}/design.yaml")
    assert exported.status_code == 200
    text = exported.get_data(as_text=True)
    with app.app_context():
        original = db.session.scalar(select(Study).where(Study.slug == slug))
        original_design = original.design
        original.slug = "renamed-original"  # free the slug for the re-import
        db.session.commit()
    response = owner.post(
        "/researcher/studies/import",
        data={"design": (io.BytesIO(text.encode()), "design.yaml")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    with app.app_context():
        imported = db.session.scalar(select(Study).where(Study.slug == slug))
        assert imported.status == "draft"
        assert imported.design == original_design == yaml.safe_load(text)


def test_designer_reports_every_problem(app, owner):
    slug = build_in_designer(owner, two_block_design())
    bad = two_block_design()
    bad["blocks"][1]["trials_per_participant"] = 50
    bad["blocks"].append({"id": "abx", "type": "emotion_rating", "conditions": ["nope"]})
    response = owner.post(f"/researcher/studies/{slug}/design.json", json={"design": bad})
    assert response.status_code == 422
    problems = " ".join(response.get_json()["problems"])
    assert "duplicate block id 'abx'" in problems
    checked = owner.post(f"/researcher/studies/{slug}/check", json={"design": bad}).get_json()
    assert not checked["ok"] and checked["problems"]
    bad.pop("blocks")
    bad["blocks"] = [two_block_design()["blocks"][1] | {"trials_per_participant": 50}]
    problems = " ".join(
        owner.post(f"/researcher/studies/{slug}/design.json", json={"design": bad}).get_json()[
            "problems"
        ]
    )
    assert "50 trials asked but the set can fill only 8" in problems


def test_other_researcher_can_neither_see_nor_change(app, owner):
    slug = build_in_designer(owner, two_block_design())
    other = logged_in(app, "other@example.org", "other-password")
    for url in (
        f"/researcher/studies/{slug}/",
        f"/researcher/studies/{slug}/design.json",
        f"/researcher/studies/{slug}/design.yaml",
        f"/researcher/studies/{slug}/dashboard",
        f"/researcher/studies/{slug}/dashboard.json",
        f"/researcher/studies/{slug}/export.zip",
    ):
        assert other.get(url).status_code == 404, url
    for url, kwargs in (
        (f"/researcher/studies/{slug}/design.json", {"json": {"design": two_block_design()}}),
        (f"/researcher/studies/{slug}/status", {"data": {"status": "open"}}),
        (f"/researcher/studies/{slug}/preview", {}),
        (f"/researcher/studies/{slug}/duplicate", {}),
    ):
        assert other.post(url, **kwargs).status_code == 404, url
    assert slug not in other.get("/researcher/").get_data(as_text=True)
    with app.app_context():
        study = db.session.scalar(select(Study).where(Study.slug == slug))
        assert study.status == "draft" and study.participants == []
    admin = logged_in(app, "admin@example.org", "admin-password")
    assert admin.get(f"/researcher/studies/{slug}/design.json").status_code == 200


def test_open_study_design_is_immutable_and_can_be_duplicated(app, owner):
    slug = build_in_designer(owner, two_block_design())
    assert (
        owner.post(f"/researcher/studies/{slug}/status", data={"status": "open"}).status_code == 302
    )
    changed = two_block_design(title="Changed")
    response = owner.post(f"/researcher/studies/{slug}/design.json", json={"design": changed})
    assert response.status_code == 422
    assert "cannot change" in response.get_json()["problems"][0]
    assert not owner.get(f"/researcher/studies/{slug}/design.json").get_json()["editable"]
    copy = owner.post(f"/researcher/studies/{slug}/duplicate")
    assert copy.status_code == 302 and "two-blocks-copy1" in copy.headers["Location"]
    saved = owner.post(
        "/researcher/studies/two-blocks-copy1/design.json",
        json={"design": two_block_design(title="Changed", slug="two-blocks-copy1")},
    )
    assert saved.status_code == 200
    with app.app_context():
        original = db.session.scalar(select(Study).where(Study.slug == slug))
        assert original.title == "Two blocks" and original.status == "open"
    # a draft takes no participants
    with app.app_context():
        draft_token = db.session.scalar(
            select(Study.entry_token).where(Study.slug == "two-blocks-copy1")
        )
    assert app.test_client().get(f"/join/{draft_token}").status_code == 403


def right(app, page) -> dict:
    """The default answer, but right on ABX (a failed catch trial would end with the
    failed-attention code, not TWO-1)."""
    data = DEFAULT_ANSWERS[page.trial_type]
    if page.trial_type == "abx":
        with app.app_context():
            token = page.action.rsplit("/", 1)[1]
            spec = db.session.scalar(select(Trial.spec).where(Trial.token == token))
        data = data | {"answer": spec["correct_answer"]}
    return data


def test_preview_is_not_counted(app, owner):
    slug = build_in_designer(owner, two_block_design())
    response = owner.post(f"/researcher/studies/{slug}/preview")
    assert response.status_code == 302
    final = run_to_end(owner, response.headers["Location"], answers=lambda page: right(app, page))
    assert "TWO-1" in final.html and "Preview" in final.html
    with app.app_context():
        study = db.session.scalar(select(Study).where(Study.slug == slug))
        preview = study.participants[0]
        assert preview.is_preview and preview.assignment_index < 0
        assert responses_csv(study).count("\n") == 1  # header only
    summary = owner.get(f"/researcher/studies/{slug}/dashboard.json").get_json()
    assert summary["started"] == 0


def test_dashboard_withdrawal_and_audit(app, owner):
    slug = build_in_designer(owner, two_block_design())
    owner.post(f"/researcher/studies/{slug}/status", data={"status": "open"})
    with app.app_context():
        token = db.session.scalar(select(Study.entry_token).where(Study.slug == slug))
    finished = app.test_client()
    run_to_end(finished, start(finished, token, "?PROLIFIC_PID=done-1"))
    unfinished = app.test_client()
    step = start(unfinished, token)
    unfinished.post(
        unfinished.get(step).get_data(as_text=True).split('action="')[1].split('"')[0],
        data={"consent": "yes"},
    )
    summary = owner.get(f"/researcher/studies/{slug}/dashboard.json").get_json()
    assert (summary["started"], summary["completed"]) == (2, 1)
    # answered without downloading a byte, at once: every answer unheard and too quick
    assert summary["responses_per_block"] == [
        {"block": "abx", "type": "abx", "responses": 3, "unheard": 3, "too_quick": 3}
    ]
    assert sum(summary["responses_per_condition"]["abx"].values()) == 2  # catch not counted
    assert summary["balance"][0]["cells"] == 4
    assert summary["too_fast_answers"] == 3
    page = owner.get(f"/researcher/studies/{slug}/participants/P0001")
    assert page.status_code == 200 and "done-1" in page.get_data(as_text=True)

    response = owner.post(
        f"/researcher/studies/{slug}/participants/P0001/withdraw", data={"reason": "asked"}
    )
    assert response.status_code == 302
    with app.app_context():
        study = db.session.scalar(select(Study).where(Study.slug == slug))
        remaining = [p.public_id for p in study.participants]
        assert remaining == ["P0002"]
        assert db.session.scalar(select(func.count(Response.id))) == 1  # P0002's consent
        assert (
            db.session.scalar(
                select(func.count(Trial.id))
                .join(Participant)
                .where(Participant.external_id == "done-1")
            )
            == 0
        )
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "withdraw"))
        assert event.detail["participant"] == "P0001"
        assert event.detail["answers_deleted"] == 4 and event.detail["reason"] == "asked"
    summary = owner.get(f"/researcher/studies/{slug}/dashboard.json").get_json()
    assert (summary["started"], summary["completed"]) == (1, 0)


def test_completed_cap_turns_new_arrivals_away(app, owner):
    design = two_block_design()
    design["completion"]["max_completed"] = 1
    slug = build_in_designer(owner, design)
    owner.post(f"/researcher/studies/{slug}/status", data={"status": "open"})
    with app.app_context():
        token = db.session.scalar(select(Study.entry_token).where(Study.slug == slug))
    waiting = app.test_client()
    waiting_step = start(waiting, token, "?PROLIFIC_PID=slow")
    first = app.test_client()
    run_to_end(first, start(first, token, "?PROLIFIC_PID=fast"))
    late = app.test_client().post(f"/join/{token}?PROLIFIC_PID=late")
    assert late.status_code == 200 and "This study is full" in late.get_data(as_text=True)
    # someone who had already started may still finish
    assert start(app.test_client(), token, "?PROLIFIC_PID=slow") == waiting_step
    with app.app_context():
        assert db.session.scalar(select(func.count(Participant.id))) == 2
