"""A simulated study with known truth goes through the export format; the report recovers it."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


def by_condition(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_index("condition")


def test_condition_at_chance_is_not_distinguishable_and_is_equivalent(simulated_tables):
    row = by_condition(simulated_tables["realism"]).loc["at_chance"]
    assert row["pval_holm"] > 0.05
    assert row["cp_low"] < 0.5 < row["cp_high"]
    assert row["wilson_low"] < 0.5 < row["wilson_high"]
    assert abs(row["dprime"]) < 0.6
    # Within +-0.1 of chance: the exact (pooled, descriptive) TOST says so.
    assert row["pooled_equivalent"]
    assert row["share_above_chance"] < 0.15


def test_distinguishable_condition_is_detected(simulated_tables):
    row = by_condition(simulated_tables["realism"]).loc["distinguishable"]
    assert row["pval_holm"] < 1e-10
    assert 0.80 < row["accuracy"] < 0.90
    assert row["cp_low"] < row["accuracy"] < row["cp_high"]
    assert not row["pooled_equivalent"]
    assert row["dprime"] > 2
    assert row["share_above_chance"] > 0.3


def test_mixed_logistic_model_recovers_the_conditions(simulated_tables):
    glmm = by_condition(simulated_tables["realism_glmm"])
    assert glmm.loc["at_chance", "ci_low"] < 0.5 < glmm.loc["at_chance", "ci_high"]
    assert glmm.loc["distinguishable", "pval"] < 1e-6
    assert glmm.loc["distinguishable", "accuracy"] == pytest.approx(0.85, abs=0.05)
    # The verdicts: the headline comes from the mixed model, not from pooled answers.
    assert glmm.loc["distinguishable", "distinguishable"]
    assert not glmm.loc["at_chance", "distinguishable"]
    assert not glmm.loc["distinguishable", "equivalent"]
    # All participants left after exclusions enter the model (no subsample).
    assert glmm.loc["at_chance", "participants"] == simulated_tables["participants"][
        "participant"].nunique()


def test_exclusions_are_counted_and_matter(simulated_export, simulated_tables):
    responses = simulated_export.responses
    table = simulated_tables["exclusions"].set_index("rule")
    failed = responses.loc[responses["flag_failed_screening"].astype(bool), "participant"]
    assert table.loc["flag_failed_screening", "participants"] == failed.nunique() > 0
    assert table.loc["flag_too_fast", "rows"] == int(responses["flag_too_fast"].sum())
    assert table.loc["flag_too_fast", "level"] == "row"
    # Careless participants answer at chance, so keeping them dilutes the real effect.
    kept = by_condition(simulated_tables["realism"]).loc["distinguishable", "accuracy"]
    everyone = by_condition(simulated_tables["realism_no_exclusions"]).loc["distinguishable",
                                                                         "accuracy"]
    assert kept > everyone


def test_agreement_recovers_which_condition_keeps_the_emotion(simulated_tables):
    table = simulated_tables["agreement"].set_index(["condition", "dimension"])
    for dimension in ("valence", "arousal"):
        keeps = table.loc[("keeps_emotion", dimension)]
        loses = table.loc[("loses_emotion", dimension)]
        assert keeps["ccc"] > 0.8
        assert keeps["pearson_low"] > 0.5
        assert keeps["icc2"] > 0.8
        assert keeps["alpha_interval"] > 0.8
        assert keeps["ci_low"] < 0 < keeps["ci_high"]  # no systematic shift
        assert loses["ccc"] < 0.5
    assert table.loc[("keeps_emotion", "valence"), "gems_jaccard"] > 0.8
    # The permutation test against the mismatched control (exact: 2^12 unit swaps). Under H0
    # a p-value is uniform, so the second assertion holds for this seed, not for every seed.
    assert table.loc[("keeps_emotion", "valence"), "perm_pval_holm"] < 0.01
    assert table.loc[("loses_emotion", "valence"), "perm_pval_holm"] > 0.05


def test_fit_and_mixed_model_tables(simulated_tables):
    fit = by_condition(simulated_tables["fit"])
    assert fit.loc["keeps_emotion", "ci_low"] > fit.loc["mismatched", "ci_high"]
    model = simulated_tables["rating_mixed_model"]
    assert set(model["condition"]) == {"keeps_emotion", "loses_emotion", "mismatched"}
    assert set(model["dimension"]) == {"valence", "arousal"}
    keeps = model[model["condition"] == "keeps_emotion"]
    assert (keeps["ci_low"] < 0).all() and (keeps["ci_high"] > 0).all()


def test_objective_metrics_are_compared_with_listeners(simulated_export):
    from analysis.load import abx_trials, rating_trials
    from analysis.report import objective_vs_listeners

    abx = abx_trials(simulated_export.responses)
    accuracy = abx.groupby(["segment", "condition"], observed=True)["correct"].mean()
    objective = accuracy.rename("predicts_accuracy").reset_index()
    objective["noise"] = range(len(objective))
    table = objective_vs_listeners(objective, abx, rating_trials(simulated_export.responses))
    row = table.set_index(["metric", "outcome"]).loc[("predicts_accuracy", "abx_accuracy")]
    assert row["spearman"] == pytest.approx(1.0)
    assert row["clips"] == len(objective)


def test_cli_report_runs_end_to_end(simulated_export_paths, tmp_path):
    responses, study = simulated_export_paths
    out = tmp_path / "report"
    completed = subprocess.run(
        [sys.executable, "-m", "analysis", "report", "--responses", str(responses), "--study",
         str(study), "--out", str(out), "--n-boot", "200", "--n-permutations", "200"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("* plotly.js v") == 1  # the library is inlined exactly once
    assert "<script src=" not in html  # nothing fetched from a CDN
    assert html.count("Plotly.newPlot") >= 3
    tables = {p.stem for p in (out / "tables").glob("*.csv")}
    assert {"exclusions", "realism", "realism_no_exclusions", "realism_glmm", "agreement",
            "agreement_no_exclusions", "rating_mixed_model", "fit", "gems_kappa"} <= tables
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["format"] == "sightsound-report/1"
    realism = {row["condition"]: row for row in report["tables"]["realism"]}
    assert realism["distinguishable"]["pval_holm"] < 1e-10


def test_cli_reports_a_bad_export_clearly(tmp_path, simulated_export_paths):
    responses, study = simulated_export_paths
    broken = tmp_path / "responses.csv"
    pd.read_csv(responses).drop(columns=["correct", "valence"]).to_csv(broken, index=False)
    completed = subprocess.run(
        [sys.executable, "-m", "analysis", "report", "--responses", str(broken), "--study",
         str(study), "--out", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert "missing required column(s): correct, valence" in completed.stderr
