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
    monkeypatch.setattr(lme4.shutil, "which", lambda name: None)
    with pytest.raises(lme4.RUnavailableError, match="r-cran-lme4 r-cran-lmertest"):
        lme4.run_jobs([])


def test_a_missing_r_package_stops_the_fits_with_the_same_clear_error(monkeypatch, tmp_path):
    # The fits check their packages themselves (no separate R run before them): fit_mixed.R
    # exits 3 with the missing names on stderr.
    fake = tmp_path / "Rscript"
    fake.write_text("#!/bin/sh\necho 'lmerTest jsonlite' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(lme4.shutil, "which", lambda name: str(fake))
    with pytest.raises(lme4.RUnavailableError, match="missing: lmerTest jsonlite.*apt-get"):
        lme4.run_jobs([])


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
    # Whether this design's realism verdicts are calibrated depends on the shipped planning
    # table (tests/analysis/test_analysis_calibration_rule.py): the prefix is checked there.
    exploratory = "EXPLORATORY, not at the nominal 5% (this design's verdicts are not " \
        "calibrated; why: Models fitted): "
    verdicts = {row["condition"] + "|" + row["question"]: row["verdict"].replace(exploratory, "")
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

    monkeypatch.setattr(lme4.subprocess, "Popen", Recording)
    monkeypatch.setattr(report.agreement, "summarize", broken)
    with pytest.raises(ValueError, match="a statistic failed"):
        report.analyse(simulated_export, report.ReportConfig(n_boot=10, n_permutations=10))
    assert len(started) == 1
    process, folder = started[0]
    assert process.returncode is not None  # killed and reaped, not left running
    assert not folder.exists()


# A cold lmerTest fit of one data set alone, in its own Rscript: lmerTest::lmer as a user would
# call it (default optimiser and derivatives), lmerTest's own Satterthwaite df, p-values and
# intervals (contest with confint = TRUE), for every fixed effect.
COLD_LMERTEST = """
suppressPackageStartupMessages({library(lmerTest); library(jsonlite)})
fits <- fromJSON(commandArgs(trailingOnly = TRUE)[1], simplifyVector = FALSE)
for (f in fits) {
  d <- read.csv(f$csv, colClasses = c(condition = "character"))
  d$participant <- factor(d$participant)
  d$unit <- factor(d$unit)
  d$condition <- factor(d$condition, levels = unlist(f$levels))
  m <- lmerTest::lmer(as.formula(f$formula), data = d, REML = TRUE)
  k <- length(fixef(m))
  s <- contest(m, diag(k), joint = FALSE, confint = TRUE)
  write_json(list(term = names(fixef(m)), estimate = s$Estimate, se = s[["Std. Error"]],
                  df = s$df, t = s[["t value"]], p = s[["Pr(>|t|)"]], low = s$lower,
                  high = s$upper), f$out, digits = NA)
}
"""


def cold_lmertest_fits(parts: list[tuple[pd.DataFrame, lme4.MixedFit, list[str]]],
                       tmp_path) -> list[pd.DataFrame]:
    """For each (data, our fit, levels): lmerTest's table for our fit's formula, fitted cold."""
    (tmp_path / "cold.R").write_text(COLD_LMERTEST, encoding="utf-8")
    spec = []
    for index, (data, fit, levels) in enumerate(parts):
        data.to_csv(tmp_path / f"part{index}.csv", index=False)
        spec.append({"csv": str(tmp_path / f"part{index}.csv"), "formula": fit.formula,
                     "levels": levels, "out": str(tmp_path / f"cold{index}.json")})
    (tmp_path / "cold.json").write_text(json.dumps(spec), encoding="utf-8")
    subprocess.run(["Rscript", str(tmp_path / "cold.R"), str(tmp_path / "cold.json")],
                   check=True, timeout=600, capture_output=True)
    return [pd.DataFrame(json.loads((tmp_path / f"cold{i}.json").read_text())).set_index("term")
            for i in range(len(parts))]


def assert_same_as_cold_lmertest(fit: lme4.MixedFit, conditions: list[str],
                                 cold: pd.DataFrame) -> None:
    """Every fixed effect: estimate, SE, Satterthwaite df, t; every shift: p and interval."""
    ours = fit.coefficients.set_index("term")
    assert list(ours.index) == list(cold.index)
    assert ours["estimate"].to_numpy() == pytest.approx(cold["estimate"].to_numpy(),
                                                        rel=1e-4, abs=1e-6)
    assert ours["se"].to_numpy() == pytest.approx(cold["se"].to_numpy(), rel=1e-4)
    # The issue asks for 2 %; the same optimum gives the same df far more closely.
    assert ours["df"].to_numpy() == pytest.approx(cold["df"].to_numpy(), rel=1e-3)
    assert ours["statistic"].to_numpy() == pytest.approx(cold["t"].to_numpy(), rel=1e-4)
    shifts = agreement.rating_shifts(fit, conditions, "valence").set_index("condition")
    terms = [f"conditionc{conditions.index(c)}" for c in shifts.index]
    assert shifts["pval"].to_numpy() == pytest.approx(cold.loc[terms, "p"].to_numpy(),
                                                      rel=1e-3, abs=1e-9)
    assert shifts["ci_low"].to_numpy() == pytest.approx(cold.loc[terms, "low"].to_numpy(),
                                                        rel=1e-4, abs=1e-5)
    assert shifts["ci_high"].to_numpy() == pytest.approx(cold.loc[terms, "high"].to_numpy(),
                                                         rel=1e-4, abs=1e-5)


@pytest.fixture(scope="module")
def four_rating_studies():
    """Four 40-listener x 8-source rating studies (issue 21's size), known truth."""
    _, ratings = simulate_studies(CalibrationDesign(participants=40, sources=8), studies=4,
                                  seed=21)
    return ratings


@pytest.mark.parametrize("order", [(0, 1), (1, 0)], ids=["first-second", "swapped"])
def test_every_rating_job_of_one_r_run_equals_a_cold_lmertest_fit(four_rating_studies, order,
                                                                   tmp_path):
    # Issue 21: lmerTest re-evaluated the fit's call at the script's top level, where `data`
    # was the last job's CSV: every job but the last got the df of another data set. Two
    # jobs in one Rscript run, in both orders, each checked against its own data alone.
    jobs = [lme4.rating_job(four_rating_studies[four_rating_studies["study"] == k]
                            .drop(columns="study"), "valence") for k in order]
    fits = lme4.run_jobs([job for job, _ in jobs], cores=2)
    parts = [(job.data, result[None], job.levels) for (job, _), result in zip(jobs, fits,
                                                                              strict=True)]
    for (_, fit, _), (_, conditions), cold in zip(parts, jobs,
                                                  cold_lmertest_fits(parts, tmp_path),
                                                  strict=True):
        assert_same_as_cold_lmertest(fit, conditions, cold)


def test_every_study_of_a_by_job_equals_a_cold_lmertest_fit(four_rating_studies, tmp_path):
    # With `by` (the calibration, the power tables) the df came from all studies stacked.
    job, conditions = lme4.rating_job(four_rating_studies, "valence", by="study")
    fits = lme4.run_jobs([job], cores=2)[0]
    assert len(fits) == 4
    parts = [(job.data[job.data["study"] == int(key)].drop(columns="study"), fit, job.levels)
             for key, fit in sorted(fits.items())]
    for (_, fit, _), cold in zip(parts, cold_lmertest_fits(parts, tmp_path), strict=True):
        assert_same_as_cold_lmertest(fit, conditions, cold)


def test_a_singular_maximal_fit_does_not_skip_the_clip_term_the_data_support():
    # Issue 21: a 40-listener x 8-source ABX study with a clip (source x condition) SD of 0.3
    # and no source variance. The maximal GLMM is singular in the correlated listener term and
    # in (1 | unit); the ladder used to skip every later structure with (1 | unit) and end at
    # (1 | participant), losing the clip term. A structure that drops a term the data did
    # support is fitted now; only one that would reach the same singular optimum is skipped.
    design = CalibrationDesign(participants=40, sources=8, unit_sd=0.0, clip_sd=0.3)
    abx, _ = simulate_studies(design, studies=60, seed=1)
    table = realism.mixed_logistic(abx[abx["study"] == 28].drop(columns="study"),
                                   unit="source")
    row = table.iloc[0]
    assert row["model_choice"].startswith("maximal: correlated by-participant condition "
                                          "effects: singular, degenerate (0 + condition | "
                                          "participant), (1 | unit)")
    assert "skipped" not in row["model_choice"]
    assert "(1 | source:condition)" in row["formula"]
    job, _ = lme4.abx_job(abx[abx["study"] == 28].drop(columns="study"), unit="source")
    fit = lme4.run_jobs([job])[0][None]
    clip = fit.variance.set_index("grp").loc["unit:condition", "sdcor"]
    assert clip > 0.1 and not fit.singular


def test_a_singular_rating_fit_is_refitted_with_a_second_optimiser_before_a_term_is_dropped():
    # Issue 21: nloptwrap can stop at a false singular fit. A singular LMM is refitted by
    # bobyqa from lme4's default start; the fit with the lower REML criterion is kept and the
    # model choice says which. Here the clip variance is really 0: both optimisers agree, the
    # nloptwrap fit is kept, and the clip term is then dropped. A fit that is not singular is
    # not refitted.
    design = CalibrationDesign(participants=40, sources=8, rating_clip_sd=0.0)
    _, ratings = simulate_studies(design, studies=2, seed=4)
    job, _ = lme4.rating_job(ratings[ratings["study"] == 1].drop(columns="study"), "valence")
    fit = lme4.run_jobs([job])[0][None]
    singular, accepted = fit.attempts[0], fit.attempts[-1]
    assert singular["status"] == "singular" and accepted["status"] == "accepted"
    tried = singular["optimizers_tried"]
    assert [t["optimizer"] for t in tried] == ["nloptwrap", "bobyqa"]
    assert all(t["converged"] and t["singular"] for t in tried)
    assert tried[1]["criterion"] == pytest.approx(tried[0]["criterion"], abs=1e-3)
    assert singular["optimizer"] == "nloptwrap" and singular["degenerate"]
    assert "criterion: nloptwrap" in fit.reason and "kept the nloptwrap fit" in fit.reason
    assert accepted["optimizers_tried"] == [] and fit.optimizer == "nloptwrap"


def test_a_nested_fit_at_a_confirmed_singular_optimum_is_not_refitted():
    # fit_mixed.R's covered_by: once the second optimiser has confirmed a singular optimum from
    # lme4's default start, a later structure that only drops terms from it and reaches that
    # criterion (to 1e-3) is at its own optimum; the second optimiser is not run again (3.2 s
    # of the 1,000 x 120 benchmark). A structure with a term of its own, or a criterion above
    # the confirmed one, is refitted as before.
    program = f"""
    source("{lme4.SCRIPT}")
    confirmed <- list(list(terms = c("(1 | a)", "(1 | b)", "(1 | c)"), formula = "y ~ big",
                           criterion = 100))
    nested <- c("(1 | a)", "(1 | c)")
    cat(covered_by(list(criterion = 100.0004), nested, confirmed), "|")
    cat(is.null(covered_by(list(criterion = 100.01), nested, confirmed)), "|")
    cat(is.null(covered_by(list(criterion = 100), c("(1 | a)", "(1 | d)"), confirmed)), "|")
    skipped <- check_singular_fit(list(fit = 1, converged = TRUE, singular = TRUE,
                                       optimizer = "nloptwrap", criterion = 100.0004,
                                       seconds = 0.5),
                                  NULL, list(family = "gaussian"), nested, confirmed)
    cat(length(skipped$checks), skipped$checks[[1]]$covered_by)
    """
    done = subprocess.run(["Rscript", "-e", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    parts = [part.strip() for part in done.stdout.split("|")]
    assert parts == ["y ~ big", "TRUE", "TRUE", "1 y ~ big"]


def test_valence_and_arousal_of_a_40_by_8_export_equal_cold_lmertest_fits(tmp_path):
    # Issue 21's known-truth refit: an exported 40-listener x 8-source study, both rating
    # dimensions in one R run as the report fits them; valence (the first job) had df of
    # about 50 where a cold lmerTest fit gives 28.
    from analysis.load import read_export
    from analysis.simulate import simulate_export

    paths = simulate_export(tmp_path / "export", participants=40, abx_trials=16,
                            rating_trials=32, sources=8, seed=21)
    responses = read_export(*paths).responses
    ratings = responses[responses["trial_type"] == "emotion_rating"]
    jobs = [lme4.rating_job(ratings, dimension) for dimension in ("valence", "arousal")]
    fits = lme4.run_jobs([job for job, _ in jobs], cores=2)
    parts = [(job.data, result[None], job.levels) for (job, _), result in zip(jobs, fits,
                                                                              strict=True)]
    for (_, fit, _), (_, conditions), cold in zip(parts, jobs,
                                                  cold_lmertest_fits(parts, tmp_path),
                                                  strict=True):
        assert_same_as_cold_lmertest(fit, conditions, cold)
