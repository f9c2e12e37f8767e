"""Mixed models through R's lme4 (analysis/lme4.py): same numbers as lme4 called directly,
clear errors without R, the random-effect ladder, verdicts, speed, and calibration."""

import json
import subprocess
import time

import numpy as np
import pandas as pd
import pytest

from analysis import agreement, lme4, realism
from analysis.calibration import CalibrationDesign, calibrate, simulate_studies

DIRECT_GLMM = """
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], stringsAsFactors = TRUE)
# One row per answer, default optimiser and derivatives: lme4 as a user would call it.
g <- glmer(correct ~ 0 + condition + (1 | participant) + (1 | source), d, binomial)
r <- read.csv(args[2], stringsAsFactors = TRUE)
r$condition <- relevel(r$condition, "reference")
l <- lmerTest::lmer(valence ~ condition + (1 | participant) + (1 | source)
                    + (1 | source:condition), r)
cg <- summary(g)$coefficients
cl <- summary(l)$coefficients
write_json(list(glmm = list(term = rownames(cg), est = cg[, 1], se = cg[, 2]),
                lmm = list(term = rownames(cl), est = cl[, 1], se = cl[, 2], df = cl[, "df"])),
           args[3], digits = NA)
"""


@pytest.fixture(scope="module")
def small_study():
    design = CalibrationDesign(participants=40, sources=8)
    abx, ratings = simulate_studies(design, studies=1, seed=11)
    abx["participant"] = "L" + abx["participant"].astype(str)
    abx["source"] = "src" + abx["source"].astype(str)
    ratings["participant"] = "L" + ratings["participant"].astype(str)
    ratings["source"] = "src" + ratings["source"].astype(str)
    return abx.drop(columns="study"), ratings.drop(columns="study")


def test_estimates_and_standard_errors_match_lme4_called_directly(small_study, tmp_path):
    abx, ratings = small_study
    abx.to_csv(tmp_path / "abx.csv", index=False)
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    (tmp_path / "direct.R").write_text(DIRECT_GLMM, encoding="utf-8")
    subprocess.run(["Rscript", str(tmp_path / "direct.R"), str(tmp_path / "abx.csv"),
                    str(tmp_path / "ratings.csv"), str(tmp_path / "out.json")],
                   check=True, timeout=300, capture_output=True)
    direct = json.loads((tmp_path / "out.json").read_text())

    # Ours: aggregated binomial cells, integer codes, nloptwrap, no derivative step; the
    # intercepts-only rung so that the formula is the one called directly above.
    ladder = (("intercepts", ("(1 | participant)", "(1 | unit)")),)
    job, conditions = lme4.abx_job(abx, unit="source", ladder=ladder)
    rating, levels = lme4.rating_job(ratings, "valence", ladder=(
        ("clip", ("(1 | participant)", "(1 | unit)", "(1 | unit:condition)")),))
    glmm, lmm = (result[None] for result in lme4.run_jobs([job, rating]))

    ours = realism.glmm_verdicts(glmm, conditions).set_index("condition")
    expected = pd.DataFrame(direct["glmm"]).assign(
        condition=lambda d: d["term"].str.removeprefix("condition")).set_index("condition")
    assert ours["logit"].to_numpy() == pytest.approx(
        expected.loc[ours.index, "est"].to_numpy(), rel=1e-3, abs=1e-4)
    # The RX-based standard errors (no Hessian step) are within 1% of glmer's default.
    assert ours["se"].to_numpy() == pytest.approx(
        expected.loc[ours.index, "se"].to_numpy(), rel=0.01)

    shifts = agreement.rating_shifts(lmm, levels, "valence").set_index("condition")
    expected = pd.DataFrame(direct["lmm"]).iloc[1:].assign(
        condition=lambda d: d["term"].str.removeprefix("condition")).set_index("condition")
    assert shifts["coef"].to_numpy() == pytest.approx(
        expected.loc[shifts.index, "est"].to_numpy(), abs=1e-5)
    assert shifts["se"].to_numpy() == pytest.approx(
        expected.loc[shifts.index, "se"].to_numpy(), rel=1e-4)
    assert shifts["df"].to_numpy() == pytest.approx(
        expected.loc[shifts.index, "df"].to_numpy(), rel=1e-3)
    assert (shifts["estimation"] == "REML").all()


def test_missing_r_is_a_clear_error_naming_the_debian_packages(monkeypatch):
    lme4.check_r.cache_clear()
    monkeypatch.setattr(lme4.shutil, "which", lambda name: None)
    try:
        with pytest.raises(lme4.RUnavailableError, match="r-cran-lme4 r-cran-lmertest"):
            lme4.run_jobs([])
    finally:
        lme4.check_r.cache_clear()


def test_missing_r_package_is_named(monkeypatch, tmp_path):
    # A fake Rscript that finds no packages: the error names what is missing and the fix.
    fake = tmp_path / "Rscript"
    fake.write_text("#!/bin/sh\necho lme4 lmerTest\nexit 3\n")
    fake.chmod(0o755)
    lme4.check_r.cache_clear()
    monkeypatch.setattr(lme4.shutil, "which", lambda name: str(fake))
    try:
        with pytest.raises(lme4.RUnavailableError, match="missing: lme4 lmerTest.*apt-get"):
            lme4.check_r()
    finally:
        lme4.check_r.cache_clear()


def test_ladder_drops_what_the_data_cannot_support_and_says_why():
    # Listeners who differ in skill but not by condition, no clip effects: the by-participant
    # condition effects and the clip term are estimated as degenerate and dropped.
    design = CalibrationDesign(participants=50, sources=8, participant_condition_sd=0.0,
                               clip_sd=0.0, unit_sd=0.4)
    abx, _ = simulate_studies(design, studies=1, seed=3)
    table = realism.mixed_logistic(abx, unit="source").set_index("condition")
    row = table.iloc[0]
    assert "condition | participant" not in row["formula"]
    assert "singular" in row["model_choice"] and "accepted" in row["model_choice"]
    assert row["formula"].startswith("correct ~ 0 + condition")
    assert "(1 | source)" in row["formula"] or "used anyway" in row["model_choice"]
    assert table["participants"].iloc[0] == 50


def test_ladder_keeps_by_participant_condition_effects_when_listeners_differ_by_condition():
    design = CalibrationDesign(participants=80, sources=8, participant_condition_sd=1.0,
                               abx_repeats=4, clip_sd=0.0)
    abx, _ = simulate_studies(design, studies=1, seed=5)
    row = realism.mixed_logistic(abx, unit="source").iloc[0]
    assert "participant" in row["formula"] and "condition" in row["formula"].split("+", 2)[-1]
    assert "participant:condition" in row["formula"] or "condition | participant" in row[
        "formula"]


def test_verdicts_on_known_truth(small_study):
    abx, _ = small_study
    table = realism.mixed_logistic(abx, unit="source", margin=0.1).set_index("condition")
    clearly = table.loc["clearly"]
    assert clearly["distinguishable"] and not clearly["equivalent"]
    assert clearly["ci_low"] < 0.8 < clearly["ci_high"]
    assert clearly["dprime_low"] < clearly["dprime"] < clearly["dprime_high"]
    # Averaging over listeners pulls the population accuracy towards 0.5.
    assert 0.5 < clearly["marginal_accuracy"] < clearly["accuracy"]
    assert table["pval_holm"].ge(table["pval"]).all()


def test_glmm_on_300_listeners_is_fast_enough():
    # Speed check: the whole ladder for 300 listeners x 48 answers (14,400 answers) in one
    # Rscript run; about 5 s here on a shared 2-core machine.
    design = CalibrationDesign(participants=300, sources=8)
    abx, ratings = simulate_studies(design, studies=1, seed=8)
    started = time.perf_counter()
    realism.mixed_logistic(abx, unit="source")
    agreement.rating_mixed_model(ratings, "valence")
    assert time.perf_counter() - started < 60


@pytest.mark.slow
def test_calibration_of_the_verdicts():
    # 200 studies of 60 listeners x 8 sources with known truth, fitted in one R session.
    summary, per_study = calibrate(CalibrationDesign(), studies=200, seed=2024, cores=2)
    assert summary.attrs["failed_fits"] == 0
    rows = summary.set_index("condition")
    abx = per_study[per_study["outcome"] == "abx"]
    assert abs(abx["covered"].mean() - 0.95) <= 0.03
    shifts = per_study[per_study["outcome"] == "rating shift"]
    assert abs(shifts["covered"].mean() - 0.95) <= 0.03
    assert rows.loc["at_chance", "called_distinguishable"] <= 0.08
    assert rows.loc["on_margin", "called_equivalent"] <= 0.08
    assert rows.loc["null_shift", "called_shifted"] <= 0.08
    # And the verdicts are not merely timid: clear effects are found.
    assert rows.loc["clearly", "called_distinguishable"] >= 0.95
    assert rows.loc["shifted", "called_shifted"] >= 0.5
    assert np.isfinite(rows["coverage"]).all()


@pytest.mark.parametrize("name", ["analysis.lme4", "analysis.calibration", "analysis.realism"])
def test_docstring_examples_of_the_mixed_model_modules(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0


def test_report_opens_with_plain_verdicts_models_and_sample_sizes(simulated_export, tmp_path):
    import re

    from analysis.report import ReportConfig, write_report

    summary = write_report(simulated_export, tmp_path, ReportConfig(n_boot=100,
                                                                     n_permutations=100))
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    body = html[html.index("<body>"):]
    # The verdicts come first, before any figure or table.
    assert body.index("<h2>Verdicts</h2>") < body.index("<h2>Models fitted</h2>") < body.index(
        "<table")
    assert re.findall(r"<section[^>]*id='([\w-]+)'", body)[:3] == ["verdicts", "analysed",
                                                                    "models"]
    verdicts = {row["condition"] + "|" + row["question"]: row["verdict"]
                for row in summary["tables"]["verdicts"]}
    assert verdicts["distinguishable|realism (ABX)"].startswith(
        "distinguishable: listeners could tell it from the real recording (accuracy 0.8")
    chance = verdicts["at_chance|realism (ABX)"]
    assert "could tell it from" not in chance
    assert re.search(r"95 % CI 0\.\d\d-0\.\d\d", chance)
    assert "keeps_emotion|rating shift (valence)" in verdicts
    # Formulas and why that random-effect structure, and N analysed next to N enrolled.
    assert "correct ~ 0 + condition" in body and "Why:" in body
    assert "Satterthwaite" in body
    assert "Enrolled (study.json): 80 started, 80 completed." in body
    assert "Analysed in the realism model:" in body
    assert "flag_failed_screening" in body
    # No table wider than 10 columns on the page; every shown column has a legend entry.
    for table in re.findall(r"<table.*?</table>", body, flags=re.S):
        header = re.search(r"<thead>.*?</thead>", table, flags=re.S).group(0)
        assert len(re.findall(r"<th[ >]", header)) <= 10


def test_power_by_simulating_the_mixed_model():
    from analysis.power import simulate_glmm_power

    strong = simulate_glmm_power(0.75, participants=30, n_simulations=20, seed=1)
    null = simulate_glmm_power(0.5, participants=30, n_simulations=20, seed=1)
    assert strong["simulations"] == 20 and strong["failed_fits"] == 0
    assert strong["power_distinguishable"] >= 0.9
    assert null["power_distinguishable"] <= 0.2
    # Equivalence within +-0.1 needs precision: at chance with 30 listeners it is often shown.
    assert null["power_equivalent"] > strong["power_equivalent"]


DIRECT_REDUCED = """
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], stringsAsFactors = TRUE)
# lme4's defaults (optimiser, derivatives, start), one row per answer: a cold fit of the model
# our ladder reached by cutting a zero variance out of a larger one.
g <- glmer(correct ~ 0 + condition + (1 | participant) + (1 | source), d, binomial)
r <- read.csv(args[2], stringsAsFactors = TRUE)
r$condition <- relevel(r$condition, "reference")
l <- lmerTest::lmer(valence ~ condition + (1 | participant) + (1 | participant:condition)
                    + (1 | source), r)
cg <- summary(g)$coefficients
cl <- summary(l)$coefficients
write_json(list(glmm = list(term = rownames(cg), est = cg[, 1], se = cg[, 2],
                            theta = unname(getME(g, "theta"))),
                lmm = list(term = rownames(cl), est = cl[, 1], se = cl[, 2], df = cl[, "df"])),
           args[3], digits = NA)
"""


def test_refit_started_from_the_larger_fit_equals_a_cold_lme4_fit(tmp_path):
    # No clip effects in truth: the first structure of each ladder is singular in the clip
    # term (unit:condition) alone (study 1 of this seed), the ladder refits without it
    # starting from the singular fit's estimates, and that refit must be the fit lme4 finds
    # from its own default start.
    design = CalibrationDesign(participants=60, sources=8, clip_sd=0.0, rating_clip_sd=0.0,
                               rating_participant_condition_sd=0.0)
    abx, ratings = simulate_studies(design, studies=8, seed=4)
    abx = abx[abx["study"] == 1].drop(columns="study")
    ratings = ratings[ratings["study"] == 1].drop(columns="study")
    abx.to_csv(tmp_path / "abx.csv", index=False)
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    (tmp_path / "direct.R").write_text(DIRECT_REDUCED, encoding="utf-8")
    subprocess.run(["Rscript", str(tmp_path / "direct.R"), str(tmp_path / "abx.csv"),
                    str(tmp_path / "ratings.csv"), str(tmp_path / "out.json")],
                   check=True, timeout=300, capture_output=True)
    direct = json.loads((tmp_path / "out.json").read_text())

    job, conditions = lme4.abx_job(abx, unit="source", ladder=(
        ("with clip", ("(1 | participant)", "(1 | unit)", "(1 | unit:condition)")),))
    rating, levels = lme4.rating_job(ratings, "valence", ladder=(
        ("full", ("(1 | participant)", "(1 | participant:condition)", "(1 | unit)",
                  "(1 | unit:condition)")),))
    glmm, lmm = (result[None] for result in lme4.run_jobs([job, rating], cores=2))

    assert [a["status"] for a in glmm.attempts] == ["singular", "accepted"]
    assert glmm.attempts[0]["degenerate"] == ["(1 | unit:condition)"]
    assert glmm.attempts[1]["started_from_previous"]
    assert "started from the previous fit's estimates" in glmm.reason
    ours = realism.glmm_verdicts(glmm, conditions).set_index("condition")
    expected = pd.DataFrame({k: direct["glmm"][k] for k in ("term", "est", "se")}).assign(
        condition=lambda d: d["term"].str.removeprefix("condition")).set_index("condition")
    assert ours["logit"].to_numpy() == pytest.approx(
        expected.loc[ours.index, "est"].to_numpy(), rel=1e-3, abs=1e-4)
    assert ours["se"].to_numpy() == pytest.approx(
        expected.loc[ours.index, "se"].to_numpy(), rel=0.01)
    sds = glmm.variance.set_index("grp")["sdcor"]
    assert sds[["participant", "unit"]].to_numpy() == pytest.approx(
        direct["glmm"]["theta"], rel=1e-2)

    assert [a["status"] for a in lmm.attempts] == ["singular", "accepted"]
    assert lmm.attempts[0]["degenerate"] == ["(1 | unit:condition)"]
    assert lmm.attempts[1]["started_from_previous"]
    shifts = agreement.rating_shifts(lmm, levels, "valence").set_index("condition")
    expected = pd.DataFrame(direct["lmm"]).iloc[1:].assign(
        condition=lambda d: d["term"].str.removeprefix("condition")).set_index("condition")
    assert shifts["coef"].to_numpy() == pytest.approx(
        expected.loc[shifts.index, "est"].to_numpy(), abs=1e-4)
    assert shifts["se"].to_numpy() == pytest.approx(
        expected.loc[shifts.index, "se"].to_numpy(), rel=1e-3)
    assert shifts["df"].to_numpy() == pytest.approx(
        expected.loc[shifts.index, "df"].to_numpy(), rel=1e-2)


def test_units_are_counted_when_the_chosen_structure_has_no_unit_term(small_study):
    # Small studies can end on "(1 | participant)"; the report still states how many stimulus
    # units were analysed (it used to fail converting a missing count to an integer).
    abx, ratings = small_study
    only = (("participant intercepts only", ("(1 | participant)",)),)
    job, conditions = lme4.abx_job(abx, unit="source", ladder=only)
    rating, levels = lme4.rating_job(ratings, "valence", ladder=only)
    glmm, lmm = (result[None] for result in lme4.run_jobs([job, rating]))
    assert "unit" not in glmm.groups
    table = realism.glmm_verdicts(glmm, conditions)
    assert (table["units"] == abx["source"].nunique()).all()
    assert (table["participants"] == abx["participant"].nunique()).all()
    shifts = agreement.rating_shifts(lmm, levels, "valence")
    assert (shifts["units"] == ratings["source"].nunique()).all()


def test_report_stops_r_when_a_python_statistic_fails(simulated_export, monkeypatch):
    # R fits in the background while the report computes the rest; an error there must not
    # leave Rscript running or its scratch folder behind.
    from pathlib import Path

    from analysis import report

    started = []

    class Recording(subprocess.Popen):
        def __init__(self, args, **kwargs):
            super().__init__(args, **kwargs)
            started.append((self, Path(args[2]).parent))

    def broken(*args, **kwargs):
        raise ValueError("a statistic failed")

    lme4.check_r()  # its own probe of R runs through Popen too; done (and cached) first
    monkeypatch.setattr(lme4.subprocess, "Popen", Recording)
    monkeypatch.setattr(report.agreement, "summarize", broken)
    with pytest.raises(ValueError, match="a statistic failed"):
        report.analyse(simulated_export, report.ReportConfig(n_boot=10, n_permutations=10))
    assert len(started) == 1
    process, folder = started[0]
    assert process.returncode is not None  # killed and reaped, not left running
    assert not folder.exists()
