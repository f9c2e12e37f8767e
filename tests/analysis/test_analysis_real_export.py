"""The app's own export (study_app.export.write_export) passes the analysis' checks: a study still
running, with a participant who stopped half-way, for the demo design and the later trial types.

The analysis package never imports study_app; only this test joins the two, so a change on
either side of the export contract that makes real exports refused shows up here.
"""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import pytest
from flow import answer, current, run_to_end, start, valid_answer
from sqlalchemy import select

import export_contract
from analysis.load import apply_exclusions, read_export

REPO_ROOT = Path(__file__).resolve().parents[2]


def _export(app, tmp_path) -> tuple[Path, Path]:
    from study_app.export import write_export
    from study_app.extensions import db
    from study_app.models import Study

    with app.app_context():
        paths = write_export(db.session.scalar(select(Study)), tmp_path / "export")
    return paths[0], tmp_path / "export" / "study.json"


def _assert_follows_contract(responses: Path) -> None:
    """The header is export_contract's columns in order, and a row fills only the columns that
    the contract gives its trial type."""
    with responses.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == export_contract.names()
        strays = {
            (row["trial_type"], name)
            for row in reader
            for name, value in row.items()
            if value != "" and name not in export_contract.filled_by(row["trial_type"])
        }
    assert not strays


def _listened(app, page) -> dict:
    """A valid answer, given as if the clips had been heard (P.808 items refuse early ones)."""
    from study_app.extensions import db
    from study_app.models import Trial

    with app.app_context():
        trial = db.session.scalar(select(Trial).where(Trial.token == page.action.rsplit("/")[-1]))
        trial.presented_at = trial.presented_at - timedelta(seconds=60)
        db.session.commit()
    return valid_answer(app, page)


def _stop_after(app, token: str, answered: int) -> None:
    """A participant who answers `answered` trials and leaves (the study is still running)."""
    client = app.test_client()
    step = start(client, token)
    for _ in range(answered):
        page = current(client, step)
        assert answer(client, page, _listened(app, page)).status_code == 303


@pytest.mark.parametrize(
    ("design", "long_clips"),
    [
        (REPO_ROOT / "stimuli" / "demo_study.yaml", False),
        (REPO_ROOT / "tests" / "data" / "mushra_similarity_fit_study.yaml", False),
        (REPO_ROOT / "tests" / "data" / "p808_2afc_study.yaml", True),
    ],
    ids=["demo", "mushra_similarity_fit", "p808_2afc"],
)
def test_the_apps_export_of_a_running_study_loads(
    app, make_study, long_demo_set_dir, tmp_path, design, long_clips
):
    slug, token = make_study(design, long_demo_set_dir) if long_clips else make_study(design)
    for _ in range(2):
        client = app.test_client()
        run_to_end(client, start(client, token), answers=lambda page: _listened(app, page))
    _stop_after(app, token, 5)
    responses, study = _export(app, tmp_path)
    _assert_follows_contract(responses)
    export = read_export(responses, study)
    assert export.study["study"]["participants_completed"] == 2
    assert export.responses["participant"].nunique() == 3
    # issue 13's listening evidence is exported and typed; these clients fetch no media, so
    # every trial with audio is "not listened"
    assert str(export.responses["server_rt_ms"].dtype) == "Int64"
    summary = apply_exclusions(export.responses).summary.set_index("rule")
    assert summary.loc["not_listened", "rows"] > 0
    assert summary.loc["empty_rating", "rows"] == 0


def test_a_headphone_block_of_both_methods_is_checked_per_test(app, make_study, tmp_path):
    """`method: both` runs `trials` antiphase then `trials` Huggins trials, each test passed at
    `pass_threshold` of its own: one wrong answer in each of 6 + 6 passes (pooled over 12 it
    would look like 2 wrong against an allowance of 1, and the export would be refused), and
    the block fixes 12 rows, not 6."""
    import yaml
    from flow import read_page

    design = {
        "format": "sightsound-design/1",
        "slug": "both-screens",
        "title": "Both screens",
        "stimulus_set": "demo",
        "blocks": [
            {"id": "screen", "type": "headphone_check", "method": "both", "trials": 6},
            {"id": "debrief", "type": "debrief", "text": "Thanks."},
        ],
    }
    path = tmp_path / "design.yaml"
    path.write_text(yaml.safe_dump(design))
    _, token = make_study(path)
    client = app.test_client()
    step = start(client, token)
    wrong_in: set[str] = set()
    for _ in range(12):
        page = read_page(client.get(step))
        assert page.trial_type == "headphone_check"
        form = valid_answer(app, page)
        from study_app.extensions import db
        from study_app.models import Trial

        with app.app_context():
            spec = db.session.scalar(
                select(Trial).where(Trial.token == page.action.rsplit("/", 1)[1])
            ).spec
        form["answer"] = spec["correct_answer"]
        if spec["method"] not in wrong_in:  # the first trial of each test answered wrongly
            wrong_in.add(spec["method"])
            form["answer"] = str(int(spec["correct_answer"]) % 3 + 1)
        assert answer(client, page, form).status_code == 303
    responses, study = _export(app, tmp_path)
    export = read_export(responses, study)  # not refused
    rows = export.responses
    assert len(rows) == 12 and int((~rows["correct"].astype(bool)).sum()) == 2
    assert not rows["flag_failed_screening"].astype(bool).any()
