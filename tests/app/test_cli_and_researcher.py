"""Command-line set-up (import, accounts, studies, export) and the researcher pages."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from flow import run_to_end, start
from sqlalchemy import func, select

from study_app.extensions import db
from study_app.models import Clip, Researcher, Segment, StimulusSet, Study

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_cli(app, *args, input=None):
    return app.test_cli_runner().invoke(args=list(args), input=input)


def test_import_refusal_changes_nothing(app, demo_set_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(demo_set_dir, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    victim = manifest["clips"][0]
    (broken / victim["path"]).write_bytes(b"RIFF-not-really")
    manifest["clips"][1]["path"] = "../../etc/passwd"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli(app, "import-stimuli", str(broken))
    assert result.exit_code != 0
    assert victim["id"] in result.output
    assert manifest["clips"][1]["id"] in result.output  # every problem is named, not the first
    with app.app_context():
        assert db.session.scalar(select(func.count(StimulusSet.id))) == 0
        assert db.session.scalar(select(func.count(Clip.id))) == 0
    media = Path(app.config["MEDIA_DIR"])
    assert not media.exists() or not any(media.iterdir())


def test_import_is_idempotent_and_copies_canonical_media(app, demo_set_dir):
    assert run_cli(app, "import-stimuli", str(demo_set_dir)).exit_code == 0
    assert run_cli(app, "import-stimuli", str(demo_set_dir)).exit_code == 0
    with app.app_context():
        assert db.session.scalar(select(func.count(StimulusSet.id))) == 1
        clips = db.session.scalars(select(Clip)).all()
        segments = db.session.scalars(select(Segment)).all()
    manifest = json.loads((demo_set_dir / "manifest.json").read_text())
    assert len(clips) == len(manifest["clips"])
    assert len(segments) == len(manifest["segments"])
    media = Path(app.config["MEDIA_DIR"])
    for clip in clips:
        assert (media / clip.media_file).is_file()
        assert clip.key not in clip.media_file and clip.condition not in clip.media_file


def test_researcher_account_study_and_export(app, demo_set_dir, tmp_path):
    assert run_cli(app, "import-stimuli", str(demo_set_dir)).exit_code == 0
    result = run_cli(app, "create-researcher", "Ada@Example.org", "--password", "correct horse")
    assert result.exit_code == 0, result.output
    assert run_cli(app, "create-researcher", "x@example.org", "--password", "short").exit_code != 0
    with app.app_context():
        ada = db.session.scalar(select(Researcher).where(Researcher.email == "ada@example.org"))
        assert ada.password_hash != "correct horse" and ada.check_password("correct horse")
    design = REPO_ROOT / "stimuli" / "demo_study.yaml"
    result = run_cli(app, "create-study", str(design), "--owner", "ada@example.org")
    assert result.exit_code == 0, result.output
    again = run_cli(app, "create-study", str(design), "--owner", "ada@example.org")
    assert again.exit_code != 0 and "exists already" in again.output
    with app.app_context():
        token = db.session.scalar(select(Study.entry_token))
    client = app.test_client()
    run_to_end(client, start(client, token))
    out = tmp_path / "export"
    assert run_cli(app, "export", "demo", "--out", str(out)).exit_code == 0
    rows = list(csv.DictReader((out / "responses.csv").open()))
    assert len(rows) == 14
    study = json.loads((out / "study.json").read_text())
    assert study["format"] == "sightsound-export/1"
    assert study["design"]["slug"] == "demo"
    assert (
        study["manifest"]["name"]
        == json.loads((demo_set_dir / "manifest.json").read_text())["name"]
    )
    assert study["study"]["participants_completed"] == 1


def test_bad_design_file_lists_problems(app, demo_set_dir, tmp_path):
    assert run_cli(app, "import-stimuli", str(demo_set_dir)).exit_code == 0
    run_cli(app, "create-researcher", "ada@example.org", "--password", "correct horse")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "slug: bad\ntitle: Bad\nstimulus_set: demo\nblocks:\n"
        "  - {id: a, type: abx, conditions: [nope], trials_per_participant: 0}\n"
        "  - {id: b, type: teleport}\n"
    )
    result = run_cli(app, "create-study", str(bad), "--owner", "ada@example.org")
    assert result.exit_code != 0
    assert "teleport" in result.output


@pytest.fixture
def two_researchers(app, demo_study):
    with app.app_context():
        other = Researcher(email="other@example.org")
        other.set_password("other-password")
        db.session.add(other)
        db.session.commit()
    return demo_study


def login(client, email, password):
    return client.post(
        "/researcher/login", data={"email": email, "password": password}, follow_redirects=False
    )


def test_login_lists_own_studies_and_downloads_export(app, client, two_researchers):
    assert client.get("/researcher/").status_code == 302  # login required
    assert login(client, "owner@example.org", "wrong").status_code == 401
    assert login(client, "owner@example.org", "owner-password").status_code == 302
    page = client.get("/researcher/").get_data(as_text=True)
    assert "Music for performance videos" in page
    archive = client.get("/researcher/studies/demo/export.zip")
    assert archive.status_code == 200
    with zipfile.ZipFile(BytesIO(archive.get_data())) as zipped:
        assert set(zipped.namelist()) == {"responses.csv", "study.json"}

    other = app.test_client()
    login(other, "other@example.org", "other-password")
    assert "Music for performance videos" not in other.get("/researcher/").get_data(as_text=True)
    assert other.get("/researcher/studies/demo/export.zip").status_code == 404


def test_login_is_rate_limited(app, client, two_researchers):
    for _ in range(5):
        assert login(client, "owner@example.org", "guess").status_code == 401
    assert login(client, "owner@example.org", "owner-password").status_code == 429


def test_login_requires_csrf_token(app, demo_study):
    app.config["WTF_CSRF_ENABLED"] = True
    client = app.test_client()
    response = login(client, "owner@example.org", "owner-password")
    assert response.status_code == 400
    page = client.get("/researcher/login").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    response = client.post(
        "/researcher/login",
        data={"email": "owner@example.org", "password": "owner-password", "csrf_token": token},
    )
    assert response.status_code == 302
