"""`make demo`'s set-up command: a fresh database is migrated, the demo set built and imported,
the researcher and both demo studies created, the links printed; every type's demo study runs
from start to finish."""

from __future__ import annotations

import re

from flow import read_page, start, valid_answer
from sqlalchemy import select

from study_app.extensions import db
from study_app.models import Study


def test_demo_setup_creates_both_studies_and_they_run(make_app, tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'demo.sqlite'}")  # empty: demo-setup migrates it
    runner = app.test_cli_runner()
    result = runner.invoke(args=["demo-setup", "--base-url", "http://demo.test"])
    assert result.exit_code == 0, result.output
    links = dict(
        re.findall(r"^\s+(Participant link|Every trial type) : (\S+)$", result.output, re.M)
    )
    assert set(links) == {"Participant link", "Every trial type"}
    assert "researcher@demo.invalid" in result.output
    # running it again changes nothing and prints the same links
    again = runner.invoke(args=["demo-setup", "--base-url", "http://demo.test"])
    assert again.exit_code == 0 and links["Every trial type"] in again.output
    with app.app_context():
        slugs = set(db.session.scalars(select(Study.slug)))
    assert slugs == {"demo", "demo-all-types"}

    client = app.test_client()
    step = start(client, links["Every trial type"].rsplit("/", 1)[1])
    seen = []
    for _ in range(60):
        page = read_page(client.get(step))
        if page.trial_type is None:
            break
        seen.append(page.trial_type)
        for url in page.media:
            assert client.get(url).status_code == 200, url
        assert client.post(page.action, data=valid_answer(app, page)).status_code == 303
    assert "DEMO-ALL" in page.html
    assert set(seen) == {
        "consent",
        "p808_qualification",
        "mushra",
        "similarity",
        "fit_rating",
        "fit_preference",
        "acr",
    }
