"""Issue 22: the report's "As planned / Deviations" against the plan frozen in the export.

The plans here are written by the app's own builder (study_app.preregistration) from the
simulated export's design, frozen as the app freezes them; the tests may import both sides
(the packages never import each other)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from prereg_plans import write_plan

from analysis import lme4
from analysis.__main__ import main
from analysis.deviations import (
    AMENDMENT,
    DEVIATION,
    NO_PLAN_LINE,
    deviations,
    label_verdicts,
)
from analysis.load import ExclusionConfig, read_export
from analysis.simulate import simulate_export
from sightsound_stats.planning import LAPSE_SHARE
from study_app.preregistration import ladder

RULES = ExclusionConfig().active_rules()


def test_the_plan_states_exactly_the_ladders_the_report_fits():
    """The plan's formulas (study_app.preregistration.formula) are the ones the report fits and
    names (lme4.formula_text), rung by rung, both read from sightsound_stats.ladders."""
    for kind, response, rungs, fixed in (("realism", "correct", lme4.ABX_LADDER, "0 + condition"),
                                         ("rating", "valence", lme4.RATING_LADDER, "condition")):
        planned = ladder(kind, response, unit="source")
        assert [r["name"] for r in planned] == [name for name, _ in rungs]
        # The formula R fits (response ~ fixed + terms, as fit_mixed.R pastes it), named as
        # lme4.formula_text names it for the report.
        fitted = [lme4.formula_text(lme4.MixedFit(
            formula=f"y ~ {fixed} + {' + '.join(terms)}", model=name, reason="", attempts=[],
            coefficients=pd.DataFrame(), variance=pd.DataFrame(), nobs=0, groups={},
            loglik=0.0, reml=True, singular=False, converged=True), response, "source")
            for name, terms in rungs]
        assert [r["formula"] for r in planned] == fitted


def fitted_as_planned(record: dict, realism_step: int = 0) -> dict[str, pd.DataFrame]:
    """The report's model tables as if R had fitted the planned structures (realism at a given
    step of its ladder): deviations reads only their formula and model columns."""
    models = record["plan"]["analysis"]["models"]
    rung = models["realism"]["ladder"][realism_step]
    shifts = pd.DataFrame([{"dimension": d, "formula": models[d]["formula"],
                            "model": models[d]["ladder"][0]["name"]}
                           for d in ("valence", "arousal")])
    return {"realism_glmm": pd.DataFrame([{"formula": rung["formula"], "model": rung["name"]}]),
            "rating_mixed_model": shifts}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two simulated exports: 40 listeners (the plan's number) and 32 (stopped early)."""
    folder = tmp_path_factory.mktemp("planned")
    return {n: simulate_export(folder / str(n), participants=n, abx_trials=10, rating_trials=12,
                               sources=6, seed=n) for n in (40, 32)}


def found(export, record, tables, **settings) -> pd.DataFrame:
    options = {"alpha": 0.05, "margin": 0.1, "lapse_share": LAPSE_SHARE, "unit": "source",
               "exclusion_rules": RULES}
    return deviations(record, export.study, export.responses, tables, **(options | settings))


def named(table: pd.DataFrame) -> list[str]:
    return table.loc[table["status"] == DEVIATION, "item"].tolist()


def test_a_report_as_planned_has_no_deviation(exports):
    record = write_plan(exports[40])
    export = read_export(*exports[40])
    assert export.preregistration == record
    table = found(export, record, fitted_as_planned(record))
    assert named(table) == []
    # Every planned item is there: listeners, five exclusion rules, alpha, margin, lapse
    # share, correction, unit, three models, two blocks' conditions.
    assert len(table) == 1 + 5 + 5 + 3 + 2
    assert "40 completed" in table.loc[0, "analysed"]


def test_stopped_at_32_of_40_planned_listeners_is_that_deviation(exports):
    record = write_plan(exports[32])
    table = found(read_export(*exports[32]), record, fitted_as_planned(record))
    assert named(table) == ["listeners and stopping rule"]
    assert table.loc[0, "note"] == "stopped early: 32 of 40 planned listeners"


def test_another_margin_is_that_deviation(exports):
    record = write_plan(exports[40])
    table = found(read_export(*exports[40]), record, fitted_as_planned(record), margin=0.2)
    assert named(table) == ["equivalence margin"]
    row = table.set_index("item").loc["equivalence margin"]
    assert (row["planned"], row["analysed"]) == ("+/-0.1", "+/-0.2")
    assert "--margin" in row["note"]


def test_another_lapse_share_is_that_deviation_and_a_plan_without_one_says_so(exports):
    """The plan states the share of random responders 'equivalent' must survive; a report run
    with another (--lapse-share) deviates, and a plan frozen before the app stated it (a plain
    TOST at the margin) is stricter-than-planned, said as a deviation."""
    record = write_plan(exports[40])
    assert record["plan"]["analysis"]["lapse_share"] == LAPSE_SHARE
    export = read_export(*exports[40])
    table = found(export, record, fitted_as_planned(record), lapse_share=0.1)
    assert named(table) == ["equivalence robust to random responders"]
    row = table.set_index("item").loc["equivalence robust to random responders"]
    assert (row["planned"], row["analysed"]) == ("25%", "10%")
    assert "--lapse-share" in row["note"]
    older = json.loads(json.dumps(record))
    del older["plan"]["analysis"]["lapse_share"]
    table = found(export, older, fitted_as_planned(older))
    row = table.set_index("item").loc["equivalence robust to random responders"]
    assert row["status"] == DEVIATION and row["planned"].startswith("not stated")
    assert row["analysed"] == "25% (TOST at +/-0.075)" and "stricter" in row["note"]


def test_keep_unheard_is_that_deviation(exports):
    record = write_plan(exports[40])
    kept = ExclusionConfig(not_listened=False).active_rules()
    table = found(read_export(*exports[40]), record, fitted_as_planned(record),
                  exclusion_rules=kept)
    assert named(table) == ["exclusion rule not_listened"]
    assert "--keep-unheard" in table.set_index("item").loc["exclusion rule not_listened", "note"]


def test_fallbacks_conditions_amendments_and_integrity(exports):
    record = write_plan(exports[40], amendments=[
        {"at": "2026-11-27T10:00:00.000Z", "text": "Stop at 32.", "reason": "Funding."}])
    export = read_export(*exports[40])
    # A fallback down the planned ladder is as planned, and named.
    table = found(export, record, fitted_as_planned(record, realism_step=5))
    assert named(table) == []
    note = table.set_index("item").loc["model realism: random effects", "note"]
    assert note == ("fallback down the planned ladder to step 6 of 7: "
                    "'intercepts for participant and unit'")
    # So is a structure the plan's reduction rule gives: a step without the terms a singular
    # fit put at zero (R names it "<step> without <terms>").
    reduced = fitted_as_planned(record)
    first = record["plan"]["analysis"]["models"]["valence"]["ladder"][0]
    reduced["rating_mixed_model"].loc[0, ["formula", "model"]] = [
        "valence ~ condition + (1 | participant) + (1 | source:condition)",
        f"{first['name']} without (1 | participant:condition), (1 | unit)"]
    table = found(export, record, reduced)
    assert named(table) == []
    assert "step 1 of 5 of the planned ladder ('participant and clip condition effects') " \
        "without the terms a singular fit estimated at zero" in table.set_index("item").loc[
            "model valence: random effects", "note"]
    # A structure outside the ladder is a deviation.
    outside = fitted_as_planned(record)
    outside["realism_glmm"]["formula"] = "correct ~ 0 + condition + (1 | source)"
    assert named(found(export, record, outside)) == ["model realism: random effects"]
    # A condition dropped from the data.
    dropped = export.responses[export.responses["condition"] != "at_chance"]
    table = deviations(record, export.study, dropped, fitted_as_planned(record), alpha=0.05,
                       margin=0.1, lapse_share=LAPSE_SHARE, unit="source",
                       exclusion_rules=RULES)
    assert named(table) == ["conditions of block realism"]
    assert table.set_index("item").loc["conditions of block realism", "note"] == (
        "dropped: at_chance")
    # The amendment, dated.
    amendments = table[table["status"] == AMENDMENT]
    assert amendments["item"].tolist() == ["amendment of 2026-11-27T10:00:00.000Z"]
    assert amendments["analysed"].tolist() == ["Stop at 32."]
    # A plan edited after freezing no longer matches its hash.
    tampered = json.loads(json.dumps(record))
    tampered["plan"]["analysis"]["alpha"] = 0.1
    assert named(found(export, tampered, fitted_as_planned(tampered)))[0] == "plan's integrity"


def test_verdicts_say_which_hypothesis_they_answer(exports):
    record = write_plan(exports[40], abx={"at_chance": "indistinguishable"})
    verdicts = pd.DataFrame([
        {"question": "realism (ABX)", "condition": "at_chance", "verdict": "at_chance: x."},
        {"question": "rating shift (arousal)", "condition": "mismatched", "verdict": "m: y."},
        {"question": "semantic agreement", "condition": "keeps_emotion", "verdict": "k: z."}])
    hypotheses = {(h["condition"], h["dimension"]): h["id"]
                  for h in record["plan"]["analysis"]["hypotheses"]}
    labelled = label_verdicts(verdicts, record)
    first, second = hypotheses[("at_chance", None)], hypotheses[("mismatched", "arousal")]
    assert labelled["registration"].tolist() == [
        f"pre-registered ({first})", f"pre-registered ({second})", "exploratory"]
    assert labelled["verdict"].tolist() == [
        f"Pre-registered ({first}): at_chance: x.", f"Pre-registered ({second}): m: y.",
        "Exploratory: k: z."]


@pytest.mark.slow
def test_report_opens_with_as_planned_and_deviations(exports, tmp_path):
    """The whole command (R fits the models): the section comes right after the verdicts,
    names the changed margin and the kept unheard answers, lists the amendment, and every
    verdict says whether it was pre-registered."""
    paths = exports[40]
    write_plan(paths, amendments=[
        {"at": "2026-11-27T10:00:00.000Z", "text": "Stop at 32.", "reason": "Funding."}])
    out = tmp_path / "report"
    assert main(["report", "--responses", str(paths[0]), "--study", str(paths[1]),
                 "--out", str(out), "--margin", "0.15", "--keep-unheard",
                 "--n-boot", "100", "--n-permutations", "100"]) == 0
    report = json.loads((out / "report.json").read_text())
    table = pd.DataFrame(report["tables"]["deviations"])
    # Whatever structure R settles on for this small study is on the planned ladder.
    assert named(table) == ["exclusion rule not_listened", "equivalence margin"]
    assert "Stop at 32." in table["analysed"].tolist()
    verdicts = report["tables"]["verdicts"]
    assert verdicts and all(v["verdict"].startswith(("Pre-registered (H", "Exploratory: "))
                            for v in verdicts)
    assert any(v["registration"] == "pre-registered (H1)" for v in verdicts)
    page = (out / "report.html").read_text()
    sections = [part.split("'", 1)[0] for part in page.split("<section id='")[1:]]
    assert sections[:2] == ["verdicts", "preregistration"]
    assert "As planned / Deviations" in page and NO_PLAN_LINE not in page


@pytest.mark.slow
def test_report_without_a_plan_says_so_and_runs(tmp_path):
    paths = simulate_export(tmp_path / "export", participants=24, abx_trials=8,
                            rating_trials=8, sources=6, seed=2)
    out = tmp_path / "report"
    assert main(["report", "--responses", str(paths[0]), "--study", str(paths[1]),
                 "--out", str(out), "--n-boot", "50", "--n-permutations", "50"]) == 0
    page = (out / "report.html").read_text()
    assert page.count(NO_PLAN_LINE) == 1 and "id='preregistration'" not in page
    report = json.loads((out / "report.json").read_text())
    assert "deviations" not in report["tables"]
    assert not any(v["verdict"].startswith("Exploratory") for v in report["tables"]["verdicts"])


def test_a_broken_plan_file_is_refused(exports, capsys):
    paths = exports[40]
    plan_path = paths[1].with_name("preregistration.json")
    plan_path.write_text("{not json")
    try:
        assert main(["report", "--responses", str(paths[0]), "--study", str(paths[1]),
                     "--out", str(paths[1].parent / "r")]) == 2
    finally:
        plan_path.unlink()
    assert "preregistration.json: not readable as JSON" in capsys.readouterr().err
