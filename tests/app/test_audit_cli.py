"""`flask audit-blinding STUDY` as the README shows it: through the command line, with CSRF
protection on (as in production), for several audit participants. Each audit participant is a
browser of its own: it fetches each page and answers with the page's CSRF token."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from study_app.extensions import db
from study_app.models import Participant

DATA = Path(__file__).parents[1] / "data"


# The audit plays whole sessions through HTTP: SQLite is enough (the session code it drives is
# tested on both databases elsewhere), as in test_blinding_audit.py.
pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def csrf_app(app):
    app.config["WTF_CSRF_ENABLED"] = True  # what create_app gives a real deployment
    return app


def run_audit(app, slug: str, participants: int):
    return app.test_cli_runner().invoke(
        args=["audit-blinding", slug, "--participants", str(participants)]
        + ["--permutations", "19"]
    )


def test_csrf_is_really_on(csrf_app, demo_study):
    """(Otherwise the tests below would prove nothing.) A form without its token is refused."""
    from flow import current

    with csrf_app.app_context():
        from study_app.models import Study

        token = db.session.scalar(select(Study.entry_token).where(Study.slug == demo_study))
    client = csrf_app.test_client()
    assert client.post(f"/join/{token}").status_code == 400
    html = client.get(f"/join/{token}").get_data(as_text=True)
    csrf = html.split('name="csrf_token" value="')[1].split('"')[0]
    joined = client.post(f"/join/{token}", data={"csrf_token": csrf})
    assert joined.status_code == 302
    page = current(client, joined.headers["Location"])
    assert client.post(page.action, data={"consent": "yes"}).status_code == 400


def test_audit_command_plays_several_participants_with_csrf_on(csrf_app, demo_study):
    result = run_audit(csrf_app, demo_study, 4)
    assert "verdict:" in result.output, result.output
    assert "refused" not in result.output
    assert result.exit_code in (0, 1), result.output  # 1 would be a leak, not a failure
    assert "4 audit participants" in result.output
    with csrf_app.app_context():  # the audit participants (previews) are gone again
        assert db.session.scalar(select(func.count(Participant.id))) == 0


def test_audit_command_waits_out_pause_pages(csrf_app, make_study, long_demo_set_dir):
    """A study with ACR rest pages, whose countdown the server enforces: the audit gets past
    them (a real browser would wait; the audit moves the page's serving time back)."""
    slug, _ = make_study(DATA / "p808_2afc_study.yaml", long_demo_set_dir)
    result = run_audit(csrf_app, slug, 2)
    assert "verdict:" in result.output, result.output
    assert result.exit_code in (0, 1), result.output
    assert "acr/clip" in result.output  # the block after the pauses was audited too
