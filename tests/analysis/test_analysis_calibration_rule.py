"""Issue 21: the verdicts' inference design by design, and listeners who do not listen.

Pure tests (no R): the df cap, the lapse-robust equivalence test, the calibration rule the
designer and the report share, and the inattentive listeners of the simulation. The evidence
that the rules are calibrated is the planning tables (sightsound_stats/power_*.json, rebuilt
by scripts/build_power_table.py and checked row by row in test_analysis_power.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import realism
from analysis.calibration import CalibrationDesign, simulate_studies
from sightsound_stats import planning


def _fit(estimates: dict[str, float], se: float, participants: int = 60, units: int = 8,
         unit_variance: float = 0.09, heard_on: dict[str, int] | None = None):
    """A fitted realism GLMM as analysis.lme4 returns it, with chosen numbers."""
    terms = [f"condition{code}" for code in estimates]
    return SimpleNamespace(
        coefficients=pd.DataFrame({"term": terms, "estimate": list(estimates.values()),
                                   "se": [se] * len(terms)}),
        variance=pd.DataFrame({"grp": ["participant", "unit"], "var1": ["(Intercept)"] * 2,
                               "var2": [None, None], "vcov": [0.25, unit_variance]}),
        groups={"participant": participants, "unit": units},
        extra={"data_units": units, "data_units_by_condition": heard_on or {}},
        model="intercepts for participant and unit", singular=False, reason="first fit",
        formula="y ~ 0 + condition + (1 | participant) + (1 | unit)")


def test_df_is_welch_satterthwaite_capped_at_the_sources_a_condition_was_heard_on():
    fit = _fit({"c0": 0.0, "c1": 0.4}, se=0.13, heard_on={"c0": 8, "c1": 5})
    welch = 0.13**4 / ((0.25 / 60) ** 2 / 59 + (0.09 / 8) ** 2 / 7)
    assert welch > 7
    assert realism.component_df(fit, "a", ["a", "b"], 0.13) == 7.0
    assert realism.component_df(fit, "b", ["a", "b"], 0.13) == 4.0
    # With few listeners and quiet stimuli Welch's df is the smaller and stays.
    quiet = _fit({"c0": 0.0}, se=0.2, participants=10, units=40, unit_variance=1e-4)
    welch = 0.2**4 / ((0.25 / 10) ** 2 / 9 + (1e-4 / 40) ** 2 / 39)
    assert welch < 39 and realism.component_df(quiet, "a", ["a"], 0.2) == pytest.approx(welch)


def test_equivalence_must_hold_for_the_listeners_who_listened():
    """The TOST is at 0.5 +- margin x (1 - lapse share), the interval widened to match; the
    plain TOST is kept beside it, and the verdict needs the robust one."""
    logit = float(np.log(0.58 / 0.42))
    table = realism.glmm_verdicts(_fit({"c0": logit}, se=0.03, participants=600, units=40,
                                       unit_variance=0.0009), ["sys"],
                                  margin=0.1, lapse_share=0.15).iloc[0]
    assert (table["tost_low"], table["tost_high"]) == pytest.approx((0.415, 0.585))
    high = np.log(0.585 / 0.415)
    expected = max(stats.t.sf((logit + high) / 0.03, table["df"]),
                   stats.t.cdf((logit - high) / 0.03, table["df"]))
    assert table["tost_pval"] == pytest.approx(expected)
    # 0.58 is within 0.6 for all listeners, not within 0.585 once 15 % may be guessing.
    assert table["equivalent_if_all_listened"] and not table["equivalent"]
    assert table["ci_high_lapses"] == pytest.approx(0.5 + (table["ci_high"] - 0.5) / 0.85)
    assert table["ci_low_lapses"] == pytest.approx(table["ci_low"])  # above chance: stays
    plain = realism.glmm_verdicts(_fit({"c0": logit}, se=0.03, participants=600, units=40,
                                       unit_variance=0.0009), ["sys"],
                                  margin=0.1, lapse_share=0.0).iloc[0]
    assert plain["equivalent"] and plain["tost_pval"] == plain["tost_pval_all_listened"]


def test_undo_lapses_moves_only_the_end_away_from_chance():
    assert realism.undo_lapses(0.3, 0.2, side="low") == pytest.approx(0.25)
    assert realism.undo_lapses(0.3, 0.2, side="high") == pytest.approx(0.3)
    assert realism.undo_lapses(0.95, 0.2, side="high") == 1.0  # clipped


def _row(participants, sources, heard, false_distinguishable=0.04, coverage=0.95,
         simulations=200):
    common = {"participants": participants, "sources": sources, "sources_heard": heard,
              "simulations": simulations, "coverage": coverage}
    return [{**common, "accuracy": 0.5, "distinguishable_1": false_distinguishable,
             "equivalent_1": 0.0},
            {**common, "accuracy": 0.6, "distinguishable_1": 0.3, "equivalent_1": 0.03}]


def test_calibration_rule_reads_every_corner_of_the_design_cell():
    table = {"rows": _row(40, 8, 4) + _row(80, 8, 4) + _row(40, 16, 4)
             + _row(80, 16, 4, false_distinguishable=0.11)}
    on_grid = planning.calibration(table, "realism", 40, 8, 4)
    assert on_grid["calibrated"] and on_grid["designs"] == [(40, 8, 4)]
    between = planning.calibration(table, "realism", 60, 12, 4)
    assert not between["calibrated"]
    assert sorted(between["designs"]) == [(40, 8, 4), (40, 16, 4), (80, 8, 4), (80, 16, 4)]
    assert "false 'distinguishable' at chance 11.0 %" in between["reason"]
    # Beyond the largest simulated design the edge counts; below the smallest, nothing does.
    assert planning.calibration(table, "realism", 70, 8, 4)["calibrated"]
    assert planning.calibration({"rows": _row(40, 8, 4)}, "realism", 500, 20, 9)["calibrated"]
    small = planning.calibration(table, "realism", 40, 4, 4)
    assert small["reason"].startswith("exploratory: fewer sources (4)")
    missing = planning.calibration({"rows": _row(40, 8, 4) + _row(40, 16, 8)}, "realism",
                                   40, 12, 4)
    assert missing["calibrated"] is False  # 40 x 16 x 4 is a corner but was not simulated
    assert "40 x 16 x 4 was not simulated" in missing["reason"]


def test_too_few_studies_or_undercoverage_make_a_design_exploratory():
    assert planning.design_problems(_row(40, 8, 4, simulations=100), "realism") == [
        "100 simulated studies (at least 200 needed)"]
    assert planning.design_problems(_row(40, 8, 4, coverage=0.91), "realism")
    assert not planning.design_problems(_row(40, 8, 4, coverage=0.99), "realism")


def test_the_report_reads_the_design_off_the_answers():
    from analysis.sections import design_calibration

    rows = pd.DataFrame([{"participant": f"P{p}", "source": f"S{(p + s) % 12}", "condition": c,
                          "correct": 1} for p in range(36) for c in ("a", "b")
                         for s in range(5)])
    table = {"rows": [row for p in (20, 40, 80) for s in (8, 16) for m in (2, 4, 8)
                      for row in _row(p, s, m)]}
    status = design_calibration(rows, "realism", table=table)
    # 36 listeners, 12 sources, 5 heard per condition: the cell of 20/40 x 8/16 x 4/8.
    assert sorted(status["designs"]) == [(p, s, m) for p in (20, 40) for s in (8, 16)
                                         for m in (4, 8)]
    assert status["calibrated"]


def test_exploratory_verdicts_say_so():
    from analysis.config import ReportConfig
    from analysis.sections.abx import Realism

    table = realism.glmm_verdicts(_fit({"c0": 0.0}, se=0.05, units=40), ["sys"])
    table["exploratory"] = True
    table["calibration"] = "exploratory: fewer sources (4) than every simulated design"
    (verdict,) = Realism().verdicts({"realism_glmm": table}, ReportConfig())
    assert verdict["verdict"].startswith("sys: EXPLORATORY, not at the nominal 5%")
    table["exploratory"] = False
    (verdict,) = Realism().verdicts({"realism_glmm": table}, ReportConfig())
    assert "EXPLORATORY" not in verdict["verdict"]
    assert "even if up to 25% of listeners answered at random" in verdict["verdict"]


def test_simulated_inattentive_listeners_guess_or_stop_and_leave_the_others_alone():
    design = CalibrationDesign(participants=200, sources=8, abx_repeats=8,
                               abx_accuracy={"clearly": 0.97})
    attentive, _ = simulate_studies(design, 1, seed=5)
    careless, _ = simulate_studies(
        CalibrationDesign(participants=200, sources=8, abx_repeats=8,
                          abx_accuracy={"clearly": 0.97}, random_responder_share=0.15,
                          dropout_share=0.2), 1, seed=5)
    per = careless.groupby("participant")["correct"].agg(["mean", "size"])
    full = 8 * 8
    guessing = per[per["mean"] < 0.75].index
    assert 15 <= len(guessing) <= 50  # about 15 % of 200, each near 0.5 over 16-32 answers
    assert 0.45 < careless[careless["participant"].isin(guessing)]["correct"].mean() < 0.55
    stopped = per[per["size"] < full]
    assert 25 <= len(stopped) <= 60 and stopped["size"].mean() == pytest.approx(full / 2, abs=4)
    # Listeners neither guessing nor stopping answer exactly as without inattention.
    untouched = per[(per["size"] == full)].index.difference(guessing)
    keys = ["participant", "source", "condition"]
    a, b = (frame[frame["participant"].isin(untouched)].sort_values(keys, kind="stable")
            ["correct"] for frame in (attentive, careless))
    assert len(a) > 100 and (a.to_numpy() == b.to_numpy()).all()


def test_rating_shifts_of_an_uncovered_design_are_labelled_exploratory():
    from analysis.config import ReportConfig
    from analysis.sections import design_calibration
    from analysis.sections.emotion_rating import EmotionRating

    rows = pd.DataFrame([{"participant": f"P{p}", "source": f"S{s}", "condition": c}
                         for p in range(30) for c in ("reference", "gen") for s in range(4)])
    table = {"rows": [{"participants": 20, "sources": 8, "sources_heard": 2, "shift": 0.0,
                       "shifted_1": 0.05, "coverage": 0.95, "simulations": 200}]}
    status = design_calibration(rows, "ratings", table=table)
    assert not status["calibrated"] and "fewer sources (4)" in status["reason"]
    shifts = pd.DataFrame([{"dimension": "valence", "condition": "gen", "coef": 0.1,
                            "ci_low": -0.2, "ci_high": 0.4, "pval_holm": 0.5,
                            "exploratory": True, "calibration": status["reason"]}])
    (verdict,) = EmotionRating().verdicts({"rating_mixed_model": shifts}, ReportConfig())
    assert verdict["verdict"].startswith("gen: EXPLORATORY, not at the nominal 5%")
