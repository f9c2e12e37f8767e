"""Static files under fingerprinted URLs, cached for a year without revalidation
(study_app/static_assets.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from flow import current, start
from sqlalchemy import select

from study_app.extensions import db
from study_app.models import Study
from study_app.static_assets import IMMUTABLE, collect, fingerprints

STATIC = Path(__file__).resolve().parents[2] / "study_app" / "static"
STATIC_URL = re.compile(r'(?:src|href)="(/static/[^"]+)"')


def test_every_static_url_in_the_pages_is_fingerprinted_and_immutable(app, client, demo_study):
    manifest = fingerprints(STATIC)
    with app.app_context():
        token = db.session.scalar(select(Study.entry_token))
    step = start(client, token)
    pages = [client.get(f"/join/{token}").get_data(as_text=True)]
    for _ in range(12):  # consent, the headphone check and an emotion rating (video: av_sync.js)
        page = current(client, step)
        pages.append(page.html)
        if page.trial_type == "emotion_rating":
            break
        client.post(page.action, data={"consent": "yes", "answer": "1", "plays_tones": "1"})
    urls = {url for html in pages for url in STATIC_URL.findall(html)}
    names = {url.rsplit("/", 1)[1] for url in urls}
    assert {"style.css", "favicon.svg", "trial.js", "av_sync.js"} <= names, urls
    for url in urls:
        fingerprint, name = re.fullmatch(r"/static/([0-9a-f]{8})/(.+)", url).groups()
        assert manifest[name] == fingerprint
        response = client.get(url)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == IMMUTABLE
        assert response.get_data() == (STATIC / name).read_bytes()
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_another_fingerprint_is_never_cached_as_immutable(client):
    response = client.get("/static/00000000/style.css")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-cache"
    assert client.get("/static/00000000/no-such-file.css").status_code == 404
    # The plain URL still works (tools asking for it), revalidated as before.
    assert "immutable" not in client.get("/static/style.css").headers["Cache-Control"]


def test_changing_a_file_changes_its_url_and_only_its(tmp_path):
    folder = tmp_path / "static"
    shutil.copytree(STATIC, folder)
    before = fingerprints(folder)
    with (folder / "style.css").open("a") as css:
        css.write("\n/* a new release */\n")
    after = fingerprints(folder)
    assert after["style.css"] != before["style.css"]
    assert {k: v for k, v in after.items() if k != "style.css"} == {
        k: v for k, v in before.items() if k != "style.css"
    }


def test_collect_lays_files_out_as_their_urls(tmp_path):
    manifest = collect(STATIC, tmp_path)
    for name, fingerprint in manifest.items():
        copied = tmp_path / "static" / fingerprint / name
        assert copied.read_bytes() == (STATIC / name).read_bytes()
