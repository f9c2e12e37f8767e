"""One completion code (and redirect) per outcome, as Prolific takes them: completed, screened out
(a failed screening block that ends the session), failed attention checks (a catch trial
failed). Codes absent from a design are generated and kept in the stored design."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from flow import current, start
from sqlalchemy import func, select

from study_app.design import COMPLETION_KEYS, DesignError, normalize_design
from study_app.export import export_files
from study_app.extensions import db
from study_app.models import Participant, Researcher, Response, Study, Trial
from study_app.services import create_study, duplicate_study, update_design

URLS = {
    "redirect_url": "https://example.org/done?cc={code}",
    "screened_out_redirect_url": "https://example.org/screened?cc={code}",
    "failed_attention_redirect_url": "https://example.org/attention?cc={code}",
}
DESIGN = {
    "slug": "outcomes",
    "title": "Outcomes",
    "stimulus_set": "demo",
    "completion": {"code": "DONE-1", "screened_out_code": "SCREENED-1"} | URLS,
    "blocks": [
        {"id": "consent", "type": "consent", "text": "Please agree."},
        {
            "id": "screening",
            "type": "headphone_check",
            "trials": 2,
            "pass_threshold": 2,
            "exclude_on_fail": True,
        },
        {
            "id": "abx",
            "type": "abx",
            "conditions": ["sine_resynthesis", "shuffled_notes"],
            "trials_per_participant": 2,
            "catch_trials": 1,
        },
        {"id": "debrief", "type": "debrief", "text": "Thank you!"},
    ],
}
CODE = re.compile(r'id="completion-code" class="code">([^<]+)<')
REDIRECT = re.compile(r'id="redirect" href="([^"]+)"')


@pytest.fixture
def outcomes_study(app, make_study, tmp_path):
    """(slug, entry token, the stored completion mapping)."""
    path = tmp_path / "outcomes.yaml"
    path.write_text(yaml.safe_dump(DESIGN))
    slug, token = make_study(path)
    with app.app_context():
        completion = db.session.scalar(select(Study.design).where(Study.slug == slug))["completion"]
    return slug, token, completion


def spec_of(app, page) -> dict:
    with app.app_context():
        return db.session.scalar(
            select(Trial.spec).where(Trial.token == page.action.rsplit("/", 1)[1])
        )


def take(app, client, token, *, fail_screening=False, fail_catch=False):
    """Play one participant to the end; returns (final page HTML, step URL)."""
    step = start(client, token)
    for _ in range(30):
        page = current(client, step)
        if page.trial_type is None:
            return page.html, step
        spec = spec_of(app, page)
        if page.trial_type == "consent":
            data = {"consent": "yes"}
        elif page.trial_type == "headphone_check":
            right = spec["correct_answer"]
            data = {"answer": str(int(right) % 3 + 1) if fail_screening else right}
        else:  # abx: right, except a catch trial when it is to be failed
            right = spec["correct_answer"]
            wrong = "A" if right == "B" else "B"
            data = {"answer": wrong if fail_catch and spec["is_catch"] else right}
            data["confidence"] = "3"
        assert client.post(page.action, data=data).status_code == 303
    raise AssertionError("the study did not end")


def shown(html: str) -> tuple[str | None, str | None]:
    code, url = CODE.search(html), REDIRECT.search(html)
    return (code.group(1) if code else None, url.group(1) if url else None)


# The design ---------------------------------------------------------------------------------


def test_the_design_takes_a_code_and_a_redirect_per_outcome():
    base = {k: v for k, v in DESIGN.items() if k != "completion"}
    completion = normalize_design(base)["completion"]
    assert set(completion) == COMPLETION_KEYS and set(completion.values()) == {None}
    with pytest.raises(DesignError) as refused:
        normalize_design(
            base
            | {
                "completion": {
                    "screened_out_code": "has space",
                    "failed_attention_code": 1234,
                    "failed_attention_redirect_url": "http://example.org/",
                    "screened_out_redirect_url": "https://example.org/?cc={code}",
                }
            }
        )
    problems = " ".join(refused.value.problems)
    assert "'completion.screened_out_code' must be 1-64 letters" in problems
    assert "'completion.failed_attention_code' must be 1-64 letters" in problems
    assert "'completion.failed_attention_redirect_url' must be an https:// URL" in problems
    assert "screened_out_redirect_url" not in problems
    with pytest.raises(DesignError):
        normalize_design(base | {"completion": {"code": "X" * 65}})


def test_absent_codes_are_generated_distinct_and_kept_in_the_stored_design(
    app, outcomes_study, tmp_path
):
    slug, _, completion = outcomes_study
    assert completion["code"] == "DONE-1" and completion["screened_out_code"] == "SCREENED-1"
    generated = completion["failed_attention_code"]
    assert re.fullmatch(r"[0-9A-F]{8}", generated)
    with app.app_context():
        study = db.session.scalar(select(Study).where(Study.slug == slug))
        assert study.completion_code == "DONE-1"
        # the export's study.json carries every code
        exported = json.loads(export_files(study)["study.json"])
        assert exported["design"]["completion"]["failed_attention_code"] == generated
        owner = db.session.scalar(select(Researcher))
        bare = create_study(DESIGN | {"slug": "bare", "completion": {}}, owner, status="draft")
        codes = [bare.design["completion"][k] for k in ("code", "screened_out_code")]
        codes.append(bare.design["completion"]["failed_attention_code"])
        assert len(set(codes)) == 3 and all(re.fullmatch(r"[0-9A-F]{8}", c) for c in codes)
        assert bare.completion_code == codes[0]
        # editing a draft with the codes left empty keeps them; a code given replaces its own
        edited = update_design(
            bare, DESIGN | {"slug": "bare", "completion": {"screened_out_code": "NEW-2"}}
        )
        kept = edited.design["completion"]
        assert [kept["code"], kept["failed_attention_code"]] == [codes[0], codes[2]]
        assert kept["screened_out_code"] == "NEW-2" and edited.completion_code == codes[0]
        # a duplicate is the same design, codes included
        copy = duplicate_study(edited, owner)
        assert copy.design["completion"] == kept


# The outcomes -------------------------------------------------------------------------------


def test_a_participant_who_completes_gets_the_completed_code(app, outcomes_study):
    _, token, _ = outcomes_study
    html, _ = take(app, app.test_client(), token)
    assert shown(html) == ("DONE-1", "https://example.org/done?cc=DONE-1")
    assert "Thank you!" in html  # the debrief
    with app.app_context():
        participant = db.session.scalar(select(Participant))
        assert participant.completed_at is not None and not participant.screened_out


def test_a_screened_out_participant_gets_the_screened_out_code_and_goes_no_further(
    app, outcomes_study
):
    _, token, _ = outcomes_study
    client = app.test_client()
    html, step = take(app, client, token, fail_screening=True)
    assert shown(html) == ("SCREENED-1", "https://example.org/screened?cc=SCREENED-1")
    assert "DONE-1" not in html and "may not be suitable" in html
    with app.app_context():
        participant = db.session.scalar(select(Participant))
        assert participant.screened_out and participant.completed_at is None
        answered = db.session.scalar(select(func.count(Response.id)))
        # The first ABX trial (the next unanswered one) takes no answer: the session is over.
        first_abx = db.session.scalar(
            select(Trial)
            .where(Trial.block_id == "abx", Trial.participant_id == participant.id)
            .order_by(Trial.trial_index)
        )
    refused = client.post(f"{step}t/{first_abx.token}", data={"answer": "A", "confidence": "3"})
    assert refused.status_code == 303 and refused.headers["Location"].endswith(step)
    with app.app_context():
        assert db.session.scalar(select(func.count(Response.id))) == answered
    assert shown(current(client, step).html)[0] == "SCREENED-1"


def test_a_participant_who_failed_an_attention_check_gets_that_code(app, outcomes_study):
    _, token, completion = outcomes_study
    html, _ = take(app, app.test_client(), token, fail_catch=True)
    code = completion["failed_attention_code"]
    assert shown(html) == (code, f"https://example.org/attention?cc={code}")
    assert "DONE-1" not in html
    assert "Thank you!" in html  # the same page as a completion: it names no outcome
    with app.app_context():
        assert db.session.scalar(select(Participant.completed_at)) is not None
    # and one who passes the same catch trial still gets the completed code
    html, _ = take(app, app.test_client(), token)
    assert shown(html)[0] == "DONE-1"


def test_an_outcome_without_a_redirect_shows_its_code_alone(app, make_study, tmp_path):
    path = tmp_path / "no_redirects.yaml"
    path.write_text(yaml.safe_dump(DESIGN | {"slug": "plain", "completion": {"code": "P-1"}}))
    _, token = make_study(path)
    html, _ = take(app, app.test_client(), token, fail_screening=True)
    code, url = shown(html)
    assert url is None and code not in (None, "P-1")


def test_a_study_older_than_the_outcome_codes_keeps_its_behaviour(app, outcomes_study):
    """A design stored before the new keys: completion gets the study's code, screening out
    gets no code (as before) rather than an error."""
    slug, token, _ = outcomes_study
    with app.app_context():
        study = db.session.scalar(select(Study).where(Study.slug == slug))
        study.design = study.design | {
            "completion": {"code": None, "redirect_url": None, "max_completed": None}
        }
        study.completion_code = "OLD-7"
        db.session.commit()
    assert shown(take(app, app.test_client(), token)[0]) == ("OLD-7", None)
    html, _ = take(app, app.test_client(), token, fail_screening=True)
    assert shown(html) == (None, None) and "may not be suitable" in html


def test_the_designer_gets_every_code(app, outcomes_study):
    """The designer (design.json) and its YAML download show the codes to set up on Prolific."""
    slug, _, completion = outcomes_study
    owner = app.test_client()
    owner.post(
        "/researcher/login", data={"email": "owner@example.org", "password": "owner-password"}
    )
    design = owner.get(f"/researcher/studies/{slug}/design.json").get_json()["design"]
    assert design["completion"] == completion
    downloaded = yaml.safe_load(owner.get(f"/researcher/studies/{slug}/design.yaml").data)
    assert downloaded["completion"]["failed_attention_code"] == completion["failed_attention_code"]
