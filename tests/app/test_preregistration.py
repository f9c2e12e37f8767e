"""Issue 22: the pre-registration written from the design, frozen when the study opens,
amended with dates, downloaded and exported."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from conftest import DEMO_DESIGN
from researcher import build_in_designer, catalog, logged_in
from sqlalchemy import select

from study_app.catalog import Catalog
from study_app.design import normalize_design, read_design_file
from study_app.extensions import db
from study_app.models import AuditEvent, Preregistration, Study
from study_app.power_hint import block_design, load_power_table, power_hint
from study_app.preregistration import (
    ASPREDICTED_LIMIT,
    PlanTextError,
    build_plan,
    canonical_json,
    clean_text,
    plan_sha256,
)

OSF_FIELDS = {
    "study_information": {"title", "authors", "description", "hypotheses"},
    "design_plan": {"study_type", "blinding", "study_design", "randomization"},
    "sampling_plan": {"existing_data", "data_collection_procedures", "sample_size",
                      "sample_size_rationale", "stopping_rule"},
    "variables": {"manipulated_variables", "measured_variables", "indices"},
    "analysis_plan": {"statistical_models", "transformations", "inference_criteria",
                      "data_exclusion", "missing_data", "exploratory_analysis"},
}


def demo_catalog(demo_set_dir: Path) -> Catalog:
    manifest = json.loads((demo_set_dir / "manifest.json").read_text())
    sources = {s["id"]: s["source"] for s in manifest["segments"]}
    return Catalog.from_clips((c["segment"], sources[c["segment"]], c["condition"], c["id"],
                               c["duration"]) for c in manifest["clips"])


def demo_design(slug: str = "demo") -> dict:
    return normalize_design(read_design_file(DEMO_DESIGN) | {"slug": slug})


def test_demo_plan_holds_every_field_filled_from_its_design(demo_set_dir):
    design = demo_design()
    plan = build_plan(design, demo_catalog(demo_set_dir),
                      {"sample_size": 40, "authors": "A. Researcher",
                       "abx": {"shuffled_notes": "indistinguishable"}})
    osf = plan["osf"]
    assert {k: set(v) for k, v in osf.items()} == OSF_FIELDS
    for section, fields in osf.items():
        for name, value in fields.items():
            assert value, f"{section}.{name} is empty"
    info = osf["study_information"]
    assert info["title"] == "Music for performance videos (demo)"
    assert info["authors"] == "A. Researcher"
    # One hypothesis per ABX condition, as chosen, then one per rating contrast: the three
    # rated conditions against the reference, on valence and on arousal.
    hypotheses = plan["analysis"]["hypotheses"]
    assert [(h["id"], h["condition"], h["kind"], h["dimension"]) for h in hypotheses] == [
        ("H1", "sine_resynthesis", "distinguishable", None),
        ("H2", "shuffled_notes", "indistinguishable", None),
        *[(f"H{3 + i}", c, "shift", d) for i, (d, c) in enumerate(
            (d, c) for d in ("valence", "arousal")
            for c in ("sine_resynthesis", "shuffled_notes", "mismatched"))],
    ]
    assert "above chance" in info["hypotheses"][0]["text"]
    assert "within 0.5 +/- 0.1" in info["hypotheses"][1]["text"]
    assert "TOST" in info["hypotheses"][1]["test"]
    # Design: the blocks, their conditions and trial counts from the design and the set.
    design_text = osf["design_plan"]["study_design"]
    assert "'realism' (abx, 2 conditions, 4 trials per listener from 4 segments)" in design_text
    assert "Rated conditions: reference, sine_resynthesis, shuffled_notes, mismatched" in (
        design_text)
    assert "Latin square" in osf["design_plan"]["randomization"]
    # Sampling: the researcher's 40 listeners and the stopping rule; the demo's blocks are
    # below the simulated power table, and the rationale says so rather than inventing power.
    assert osf["sampling_plan"]["sample_size"] == "40 listeners who complete the study."
    assert "when 40 listeners have completed" in osf["sampling_plan"]["stopping_rule"]
    assert "smaller than every simulated design" in osf["sampling_plan"]["sample_size_rationale"]
    assert plan["analysis"]["planned_participants"] == 40
    assert plan["analysis"]["stopping_rule"] == {"kind": "completions", "completions": 40,
                                                 "date": None}
    # Analysis: the exact formulas and ladders, alpha, Holm, the margin, the exclusions with the
    # design's thresholds (the headphone check's 5 of 6).
    models = plan["analysis"]["models"]
    assert models["realism"]["formula"] == (
        "correct ~ 0 + condition + (0 + condition | participant) + (1 | source) "
        "+ (1 | source:condition)")
    assert models["realism"]["ladder"][-1]["formula"] == (
        "correct ~ 0 + condition + (1 | participant)")
    assert models["valence"]["formula"].startswith("valence ~ condition + (1 | participant)")
    assert set(models) == {"realism", "valence", "arousal"}
    assert plan["analysis"]["alpha"] == 0.05 and plan["analysis"]["correction"] == "holm"
    assert plan["analysis"]["equivalence_margin"] == 0.1
    assert "Holm" in osf["analysis_plan"]["inference_criteria"]
    exclusions = osf["analysis_plan"]["data_exclusion"]
    assert "fewer than 5 of 6 correct" in exclusions[0]
    assert [e["rule"] for e in plan["analysis"]["exclusions"]] == [
        "flag_failed_screening", "flag_failed_catch", "flag_too_fast", "not_listened",
        "empty_rating"]
    assert [b["id"] for b in plan["analysis"]["blocks"]] == [
        "consent", "screening", "emotion", "realism", "debrief"]
    assert "opaque per-trial token" in osf["design_plan"]["blinding"]
    assert "within-subjects" in osf["design_plan"]["study_type"]
    assert "no listener has taken the study" in osf["sampling_plan"]["existing_data"]
    assert osf["variables"]["manipulated_variables"] == (
        "Condition (the source of the music): reference (the real recording) and "
        "sine_resynthesis, shuffled_notes, mismatched.")
    assert "valence and arousal" in osf["variables"]["measured_variables"]
    assert "d'" in osf["variables"]["indices"]
    assert "crossed random effects" in osf["analysis_plan"]["transformations"]
    assert "not imputed" in osf["analysis_plan"]["missing_data"]
    assert "is exploratory" in osf["analysis_plan"]["exploratory_analysis"]
    # AsPredicted: its eight answers within the limit.
    answers = plan["aspredicted"]["answers"]
    assert len(answers) == 8
    assert sum(len(a["answer"]) for a in answers) == plan["aspredicted"]["characters"]
    assert plan["aspredicted"]["characters"] <= ASPREDICTED_LIMIT == 3200
    assert "40 listeners" in answers[6]["answer"]


def test_planned_listeners_and_power_come_from_the_designers_table():
    """Eight sources, two conditions: the planned N is the fewest simulated listeners giving
    every hypothesis 80 % power, and the plan states each hypothesis's power at that N."""
    design = normalize_design({
        "slug": "eight", "title": "Eight", "stimulus_set": "set", "blocks": [
            {"id": "abx", "type": "abx", "conditions": ["gen_a", "gen_b"]}]})
    cat = catalog(8)
    plan = build_plan(design, cat)
    hint = power_hint(block_design(design["blocks"][0], cat), load_power_table("realism"))
    needed = hint["needed"]["q1"]  # accuracy 0.70
    assert needed is not None
    assert plan["analysis"]["planned_participants"] == needed
    for h in plan["hypotheses"]:
        assert h["power"]["needed"] == needed
        assert h["power"]["at"] == needed and h["power"]["power"] >= 0.8
    rationale = plan["osf"]["sampling_plan"]["sample_size_rationale"]
    assert f"{needed} listeners: the fewest listeners giving every hypothesis 80 % power" in (
        rationale)
    # A cap on completions is the plan's number, with the table's power at it.
    capped = build_plan(design | {"completion": {"max_completed": 30}}, cat)
    assert capped["analysis"]["planned_participants"] == 30
    # A stop date: the stopping rule is the date.
    dated = build_plan(design, cat, {"stop_date": "2027-03-31"})
    assert dated["analysis"]["stopping_rule"]["kind"] == "date"
    assert "stops on 2027-03-31" in dated["osf"]["sampling_plan"]["stopping_rule"]


def test_aspredicted_stays_within_its_limit_for_a_large_design():
    conditions = [f"generated_condition_{i}" for i in range(6)]
    design = normalize_design({
        "slug": "big", "title": "Big", "stimulus_set": "set", "blocks": [
            {"id": "abx", "type": "abx", "conditions": conditions},
            {"id": "emo", "type": "emotion_rating", "conditions": ["reference", *conditions],
             "scales": ["valence", "arousal"]}]})
    plan = build_plan(design, catalog(8, conditions=("reference", *conditions)),
                      {"description": "word " * 900})
    total = sum(len(a["answer"]) for a in plan["aspredicted"]["answers"])
    assert total == plan["aspredicted"]["characters"] <= ASPREDICTED_LIMIT
    assert "(Full text in the OSF plan.)" in json.dumps(plan["aspredicted"])
    assert len(plan["hypotheses"]) == 6 + 12


def test_canonical_json_and_its_hash_do_not_depend_on_key_order():
    one = canonical_json({"b": 1, "a": {"y": [1, 2], "x": "é"}})
    two = canonical_json({"a": {"x": "é", "y": [1, 2]}, "b": 1})
    assert one == two == '{"a":{"x":"é","y":[1,2]},"b":1}'
    assert plan_sha256(one) == hashlib.sha256(one.encode()).hexdigest()


def test_plan_text_is_checked():
    with pytest.raises(PlanTextError) as refused:
        clean_text({"stop_date": "31/03/2027", "sample_size": "many",
                    "abx": {"gen_a": "maybe"}, "description": "x" * 5001})
    assert len(refused.value.problems) == 4
    assert clean_text({"sample_size": " 40 ", "stop_date": "2027-03-31"})["sample_size"] == 40


# In the app ---------------------------------------------------------------------------------


def draft_of_demo(owner) -> str:
    design = read_design_file(DEMO_DESIGN) | {"slug": "demo-draft", "title": "Demo draft"}
    design["completion"] = {"code": "DRAFT-1"}
    return build_in_designer(owner, design)


def test_researcher_writes_reads_and_downloads_the_draft_plan(app, owner):
    slug = draft_of_demo(owner)
    page = owner.get(f"/researcher/studies/{slug}/preregistration")
    assert page.status_code == 200 and "Draft: written from the design" in page.text
    saved = owner.post(f"/researcher/studies/{slug}/preregistration", data={
        "authors": "A. Researcher, B. Colleague", "description": "Can listeners tell?",
        "exploratory_analyses": "GEMS profiles.", "sample_size": "40", "stop_date": "",
        "abx:shuffled_notes": "indistinguishable",
        "wording:abx:sine_resynthesis": "Sine resynthesis is audibly not the real thing."})
    assert saved.status_code == 302
    plan = json.loads(owner.get(f"/researcher/studies/{slug}/preregistration.json").data)
    assert plan["draft"] is True
    info = plan["plan"]["osf"]["study_information"]
    assert info["authors"] == "A. Researcher, B. Colleague"
    assert info["description"] == "Can listeners tell?"
    assert info["hypotheses"][0]["text"] == "Sine resynthesis is audibly not the real thing."
    assert "within 0.5 +/- 0.1" in info["hypotheses"][1]["text"]
    assert plan["plan"]["analysis"]["planned_participants"] == 40
    markdown = owner.get(f"/researcher/studies/{slug}/preregistration.md")
    assert markdown.mimetype == "text/markdown" and "# Pre-registration: Demo draft" in (
        markdown.text)
    assert "attachment" in markdown.headers["Content-Disposition"]
    printable = owner.get(f"/researcher/studies/{slug}/preregistration.html")
    assert printable.mimetype == "text/html" and "@media print" in printable.text
    assert "Can listeners tell?" in printable.text
    # Bad text: every problem on the page, nothing stored.
    refused = owner.post(f"/researcher/studies/{slug}/preregistration",
                         data={"sample_size": "-3", "stop_date": "soon"})
    assert refused.status_code == 400
    assert "sample_size" in refused.text and "stop_date" in refused.text
    with app.app_context():
        study = db.session.scalar(select(Study).where(Study.slug == slug))
        stored = db.session.scalar(select(Preregistration).where(
            Preregistration.study_id == study.id))
        assert stored.text["sample_size"] == 40 and stored.plan_json is None


def test_opening_freezes_the_plan_and_amendments_are_dated(app, owner):
    slug = draft_of_demo(owner)
    owner.post(f"/researcher/studies/{slug}/preregistration",
               data={"sample_size": "40", "description": "Before opening."})
    draft = json.loads(owner.get(f"/researcher/studies/{slug}/preregistration.json").data)
    assert owner.post(f"/researcher/studies/{slug}/status",
                      data={"status": "open"}).status_code == 302
    frozen = json.loads(owner.get(f"/researcher/studies/{slug}/preregistration.json").data)
    with app.app_context():
        study = db.session.scalar(select(Study).where(Study.slug == slug))
        row = db.session.scalar(select(Preregistration).where(
            Preregistration.study_id == study.id))
        events = db.session.scalars(select(AuditEvent).where(
            AuditEvent.study_id == study.id, AuditEvent.action == "preregistration:frozen")).all()
        study_id = study.id
    # The frozen bytes are the canonical JSON of the draft's plan; their hash is in the log.
    assert row.plan_json == canonical_json(draft["plan"])
    assert row.sha256 == hashlib.sha256(row.plan_json.encode()).hexdigest() == frozen["sha256"]
    assert [e.detail["sha256"] for e in events] == [row.sha256]
    assert frozen["plan"] == draft["plan"] and frozen["amendments"] == []
    assert frozen["frozen_at"].endswith("Z")
    # Later design edits are refused, so is editing the plan's text, and the plan stays.
    changed = read_design_file(DEMO_DESIGN) | {"slug": slug, "title": "Changed"}
    assert owner.post(f"/researcher/studies/{slug}/design.json",
                      json={"design": changed}).status_code == 422
    assert owner.post(f"/researcher/studies/{slug}/preregistration",
                      data={"description": "Rewritten."}).status_code == 400
    # Closing and reopening keeps the first frozen plan (no second freeze).
    owner.post(f"/researcher/studies/{slug}/status", data={"status": "closed"})
    owner.post(f"/researcher/studies/{slug}/status", data={"status": "open"})
    # An amendment: dated, with its reason, beside the unchanged plan.
    assert owner.post(f"/researcher/studies/{slug}/preregistration/amendments",
                      data={"text": "", "reason": ""}).status_code == 400
    assert owner.post(f"/researcher/studies/{slug}/preregistration/amendments", data={
        "text": "Recruitment stops at 32 listeners.", "reason": "Funding ended early."},
    ).status_code == 302
    amended = json.loads(owner.get(f"/researcher/studies/{slug}/preregistration.json").data)
    assert amended["plan"] == frozen["plan"] and amended["sha256"] == frozen["sha256"]
    assert [(a["text"], a["reason"]) for a in amended["amendments"]] == [
        ("Recruitment stops at 32 listeners.", "Funding ended early.")]
    assert amended["amendments"][0]["at"][:4].isdigit()
    markdown = owner.get(f"/researcher/studies/{slug}/preregistration.md").text
    assert "## Amendments" in markdown and "Funding ended early." in markdown
    page = owner.get(f"/researcher/studies/{slug}/preregistration").text
    assert frozen["sha256"] in page and "Recruitment stops at 32 listeners." in page
    with app.app_context():
        actions = db.session.scalars(select(AuditEvent.action).where(
            AuditEvent.study_id == study_id).order_by(AuditEvent.id)).all()
        row = db.session.scalar(select(Preregistration).where(
            Preregistration.study_id == study_id))
    assert actions.count("preregistration:frozen") == 1
    assert "preregistration:amended" in actions
    assert row.plan_json == canonical_json(draft["plan"])
    # The export carries it.
    archive = zipfile.ZipFile(io.BytesIO(owner.get(
        f"/researcher/studies/{slug}/export.zip").data))
    exported = json.loads(archive.read("preregistration.json"))
    assert exported == amended


def test_a_study_opened_without_a_plan_exports_none(app, owner, demo_study):
    archive = zipfile.ZipFile(io.BytesIO(owner.get(
        f"/researcher/studies/{demo_study}/export.zip").data))
    assert "preregistration.json" not in archive.namelist()
    # Its plan page shows the plan its design would give, as a draft it can no longer edit.
    page = owner.get(f"/researcher/studies/{demo_study}/preregistration")
    assert page.status_code == 200 and "plan-form" not in page.text


def test_another_researchers_plan_is_not_found(app, owner, demo_study):
    from study_app.models import Researcher

    with app.app_context():
        other = Researcher(email="other@example.org")
        other.set_password("other-password")
        db.session.add(other)
        db.session.commit()
    stranger = logged_in(app, "other@example.org", "other-password")
    for suffix in ("", ".json", ".md", ".html"):
        assert stranger.get(
            f"/researcher/studies/{demo_study}/preregistration{suffix}").status_code == 404
    assert stranger.post(f"/researcher/studies/{demo_study}/preregistration/amendments",
                         data={"text": "x", "reason": "y"}).status_code == 404
