"""Analysis of the fit_preference (2AFC), acr (ITU-T P.808) and p808_qualification trial types."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from agresti import BASEBALL, TEAMS
from scipy import stats

from analysis import mos, preference
from analysis.load import REQUIRED_COLUMNS, ExportError, read_export, validate_responses
from analysis.report import ReportConfig, new_trial_type_tables, report_from_files
from analysis.simulate import Truth, simulate_export

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- P.808 rules
def acr_rows(records: list[tuple]) -> pd.DataFrame:
    """Hand-made acr rows: (participant, acr_item, condition, clip, acr_rating, correct_answer)."""
    frame = pd.DataFrame.from_records(
        records,
        columns=["participant", "acr_item", "condition", "clip", "acr_rating", "correct_answer"],
    )
    frame["trial_type"] = "acr"
    frame["is_catch"] = frame["acr_item"] != "rating"
    return frame


def test_gold_rule_accepts_one_category_off_and_rejects_two():
    assert mos.p808_gold_passed(5, 5) is True
    assert mos.p808_gold_passed(4, 5) is True  # off by exactly 1: passes
    assert mos.p808_gold_passed(3, 5) is False  # off by 2: fails
    assert mos.p808_gold_passed(2, 1) is True
    assert mos.p808_gold_passed(3, 1) is False
    assert mos.p808_gold_passed(float("nan"), 5) is False  # no answer is no pass
    assert mos.p808_gold_passed([1, 2, 3], [1, 1, 1]).tolist() == [True, True, False]


def test_trap_rule_is_exact():
    assert mos.p808_trap_passed(3, 3) is True
    assert mos.p808_trap_passed(2, 3) is False  # one off fails a trap (unlike gold)
    assert mos.p808_trap_passed(4, 3) is False
    assert mos.p808_trap_passed([1, 5, 5], [1, 5, 4]).tolist() == [True, True, False]


def test_item_correctness_is_recomputed_from_the_raw_answer():
    rows = acr_rows(
        [
            ("P1", "gold", "p808_gold_high", "g", 4, "5"),
            ("P1", "gold", "p808_gold_low", "g", 3, "1"),
            ("P1", "gold", "p808_gold_low", "g", 2, None),  # expected from the condition: 1
            ("P1", "trap", "p808_trap", "t", 2, "3"),
            ("P1", "trap", "p808_trap", "t", 3, "3"),
            ("P1", "rating", "a", "c", 1, None),
        ]
    )
    rows["correct"] = [False, True, False, True, False, pd.NA]  # a wrong app value everywhere
    assert mos.p808_item_correct(rows).tolist() == [True, False, True, False, True, pd.NA]
    # Without raw answers, the export's own `correct` is what there is.
    assert mos.p808_item_correct(rows.drop(columns=["acr_rating"])).tolist()[:2] == [False, True]


def test_screening_drops_a_failing_listener_with_all_their_rows():
    rows = acr_rows(
        [
            # P1: gold one off (4 for 5, 2 for 1), trap exact -> kept
            ("P1", "gold", "p808_gold_high", "ref1", 4, "5"),
            ("P1", "gold", "p808_gold_low", "deg1", 2, "1"),
            ("P1", "trap", "p808_trap", "trap1", 2, "2"),
            ("P1", "rating", "good", "good1", 4, None),
            ("P1", "rating", "poor", "poor1", 2, None),
            # P2: gold two off (3 for 5) -> dropped
            ("P2", "gold", "p808_gold_high", "ref1", 3, "5"),
            ("P2", "gold", "p808_gold_low", "deg1", 1, "1"),
            ("P2", "trap", "p808_trap", "trap1", 2, "2"),
            ("P2", "rating", "good", "good1", 5, None),
            ("P2", "rating", "poor", "poor1", 1, None),
            # P3: trap one off (3 for 2) -> dropped, although the gold items are right
            ("P3", "gold", "p808_gold_high", "ref1", 5, "5"),
            ("P3", "gold", "p808_gold_low", "deg1", 1, "1"),
            ("P3", "trap", "p808_trap", "trap1", 3, "2"),
            ("P3", "rating", "good", "good1", 1, None),
            ("P3", "rating", "poor", "poor1", 5, None),
        ]
    )
    result = mos.p808_acr_screen(rows)
    assert set(result.kept["participant"]) == {"P1"}
    assert result.kept["acr_item"].tolist() == ["rating", "rating"]  # no gold / trap row stays
    table = result.listeners.set_index("participant")
    assert table["dropped"].to_dict() == {"P1": False, "P2": True, "P3": True}
    assert table.loc["P2", ["gold_items", "gold_failed", "trap_failed"]].tolist() == [2, 1, 0]
    assert table.loc["P3", ["trap_items", "trap_failed", "gold_failed"]].tolist() == [1, 1, 0]
    assert table["rated"].tolist() == [2, 2, 2]
    # One allowed failure keeps P2 and P3.
    assert set(mos.p808_acr_screen(rows, max_failures=1).kept["participant"]) == {"P1", "P2", "P3"}

    # Through the report: catch rows never enter the MOS, dropped listeners neither.
    tables = new_trial_type_tables(rows.assign(flag_failed_catch=False))
    mos_table = tables["acr_mos"].set_index("condition")
    assert mos_table["n"].to_dict() == {"good": 1, "poor": 1}
    assert mos_table["mos"].to_dict() == {"good": 4.0, "poor": 2.0}
    unscreened = tables["acr_mos_no_screening"].set_index("condition")
    assert unscreened.loc["good", "mos"] == pytest.approx((4 + 5 + 1) / 3)
    assert unscreened["n"].sum() == 6  # 6 rated clips: still no gold or trap row
    screening = tables["acr_p808_screening"].set_index("participant")
    assert screening["in_mos"].to_dict() == {"P1": True, "P2": False, "P3": False}
    assert tables["acr_mos_per_listener"]["participant"].tolist() == ["P1"]


def test_rows_without_acr_item_fall_back_on_is_catch_and_correct():
    rows = pd.DataFrame(
        {
            "participant": ["P1", "P1", "P2", "P2"],
            "is_catch": [True, False, True, False],
            "correct": [False, pd.NA, True, pd.NA],
            "acr_rating": [1, 3, 5, 4],
        }
    )
    result = mos.p808_acr_screen(rows)
    assert result.kept["participant"].tolist() == ["P2"]
    assert result.listeners["catch_items"].tolist() == [1, 1]


def test_mos_confidence_interval_by_hand():
    ratings = pd.DataFrame(
        {
            "participant": ["P1", "P2", "P3", "P4", "P5"],
            "condition": "a",
            "acr_rating": [2, 3, 3, 4, 5],
        }
    )
    # By hand: mean 3.4; s^2 = (1.96 + 0.16 + 0.16 + 0.36 + 2.56) / 4 = 1.3, s = 1.1402;
    # t(0.975, 4) = 2.7764 (tables: 2.776); half width = 2.7764 * 1.1402 / sqrt(5) = 1.4157,
    # so the 95% CI is [1.9843, 4.8157].
    t = stats.t.ppf(0.975, 4)
    assert t == pytest.approx(2.7764, abs=1e-4)
    half = t * np.sqrt(1.3) / np.sqrt(5)
    row = mos.mos_per_condition(ratings, rating="acr_rating").iloc[0]
    assert row["mos"] == pytest.approx(3.4)
    assert row["sd"] == pytest.approx(np.sqrt(1.3))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((3.4 - half, 3.4 + half))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((1.9843, 4.8157), abs=1e-4)

    # The same five ratings from one listener: per-listener MOS, same interval.
    one = ratings.assign(participant="P1", clip=["c1", "c1", "c2", "c2", "c2"])
    listener = mos.mos_per_listener(one, rating="acr_rating").iloc[0]
    assert listener["n"] == 5
    assert (listener["ci_low"], listener["ci_high"]) == pytest.approx((3.4 - half, 3.4 + half))
    clips = mos.mos_per_clip(one, rating="acr_rating").set_index("clip")
    assert clips.loc["c1", "mos"] == 2.5 and clips.loc["c2", "mos"] == 4.0


# --------------------------------------------------------------------------- 2AFC fit preference
# Agresti (2002) Table 10.10 (1987 American League East, tests/agresti.py).


def fit_preference_rows(wins: list[list[int]], names: list[str], seed: int = 0) -> pd.DataFrame:
    """One fit_preference row per win, in random A/B order, shaped as the export writes them."""
    rng = np.random.default_rng(seed)
    records = []
    for i, winner in enumerate(names):
        for j, loser in enumerate(names):
            for _ in range(wins[i][j]):
                winner_in_a = rng.random() < 0.5
                a, b = (winner, loser) if winner_in_a else (loser, winner)
                records.append(
                    {
                        "participant": f"P{len(records) % 17}",
                        "trial_type": "fit_preference",
                        "is_catch": False,
                        "condition": pd.NA,
                        "conditions": f"{a}|{b}",
                        "condition_a": a,
                        "condition_b": b,
                        "clip_a": f"seg_{a}",
                        "clip_b": f"seg_{b}",
                        "answer": "A" if winner_in_a else "B",
                        "preferred_condition": winner,
                        "preference_strength": int(rng.integers(1, 4)),
                    }
                )
    return pd.DataFrame.from_records(records)


def test_fit_preference_rows_give_the_same_bradley_terry_fit_as_the_wins_matrix():
    rows = fit_preference_rows(BASEBALL, TEAMS)
    choices = preference.preference_choices(rows)
    assert len(choices) == np.sum(BASEBALL)
    assert (choices["winner"] == rows["preferred_condition"]).all()
    from_rows = preference.bradley_terry(choices[["winner", "loser"]], reference="Baltimore")
    matrix = pd.DataFrame(BASEBALL, index=TEAMS, columns=TEAMS)
    from_matrix = preference.bradley_terry(matrix, reference="Baltimore")
    table = from_rows.table.loc[TEAMS]
    pd.testing.assert_frame_equal(table, from_matrix.table, check_exact=False, rtol=1e-7)
    assert from_rows.deviance == pytest.approx(from_matrix.deviance)
    assert table.loc["Milwaukee", "log_worth_ref"] == pytest.approx(1.58, abs=0.005)  # Agresti
    # The conditions only in `conditions` ("a|b"), answers in lower case: the same choices.
    bare = rows.drop(columns=["condition_a", "condition_b"]).assign(
        answer=rows["answer"].str.lower()
    )
    pd.testing.assert_frame_equal(preference.preference_choices(bare), choices)
    # The report's table adds Wald intervals around the same estimates.
    flat = preference.preference_table(from_rows).set_index("item")
    z = stats.norm.ppf(0.975)
    assert flat.loc["Detroit", "ci_high_ref"] == pytest.approx(
        table.loc["Detroit", "log_worth_ref"] + z * table.loc["Detroit", "se_ref"]
    )


def test_pair_table_by_hand():
    rows = fit_preference_rows([[0, 16, 9], [4, 0, 5], [1, 5, 0]], ["x", "y", "z"], seed=3)
    choices = preference.preference_choices(rows)
    pairs = preference.pair_preferences(choices).set_index(["first", "second"])
    xy = pairs.loc[("x", "y")]
    assert (xy["n"], xy["first_wins"], xy["share_first"]) == (20, 16, 0.8)
    # exact two-sided binomial p for 16 of 20: 2 * P(K >= 16) = 2 * 6196 / 2^20 = 0.011818
    assert xy["pval"] == pytest.approx(2 * 6196 / 2**20)
    assert xy["pval"] == pytest.approx(stats.binomtest(16, 20).pvalue)
    won = rows[rows["preferred_condition"] == "x"]
    x_over_y = won[won["conditions"].str.contains("y")]
    assert xy["mean_strength_first"] == pytest.approx(x_over_y["preference_strength"].mean())
    assert pairs.loc[("y", "z"), "pval"] == pytest.approx(1.0)
    # Holm over the three pairs
    from statsmodels.stats.multitest import multipletests

    expected = multipletests(pairs["pval"], method="holm")[1]
    np.testing.assert_allclose(pairs["pval_holm"], expected)


def test_bradley_terry_table_says_why_when_no_fit_exists():
    rows = fit_preference_rows([[0, 5], [0, 0]], ["always", "never"])
    tables = new_trial_type_tables(rows)
    table = tables["fit_preference_bradley_terry"]
    assert table["item"].tolist() == ["always", "never"]
    assert "strongly connected" in table["note"].iloc[0]
    assert tables["fit_preference_pairs"].iloc[0]["share_first"] == 1.0


# --------------------------------------------------------------------------- loading the export
def core_frame(n: int) -> pd.DataFrame:
    columns = list(REQUIRED_COLUMNS)
    frame = pd.DataFrame({c: [pd.NA] * n for c in columns}, dtype=object)
    frame[["participant", "is_catch", "rt_ms"]] = ["P1", "0", "9000"]
    frame[["flag_failed_screening", "flag_failed_catch", "flag_too_fast"]] = "0"
    return frame


def test_new_columns_are_typed_and_checked():
    frame = core_frame(3)
    frame["trial_type"] = ["fit_preference", "acr", "p808_qualification"]
    frame["answer"] = ["B", "4", pd.NA]
    frame["condition_a"] = ["x", pd.NA, pd.NA]
    frame["condition_b"] = ["y", pd.NA, pd.NA]
    frame["preferred_condition"] = ["y", pd.NA, pd.NA]
    frame["preference_strength"] = ["3", pd.NA, pd.NA]
    frame["acr_item"] = [pd.NA, "rating", pd.NA]
    frame["acr_rating"] = [pd.NA, "4", pd.NA]
    frame["qualification_passed"] = [pd.NA, pd.NA, "1"]
    frame["hearing_reported_normal"] = [pd.NA, pd.NA, "0"]
    frame["listening_device"] = [pd.NA, pd.NA, "earbuds"]
    frame["tone_count_errors"] = [pd.NA, pd.NA, "2"]
    typed = validate_responses(frame)
    assert str(typed["acr_rating"].dtype) == "Int64"
    assert str(typed["preference_strength"].dtype) == "Int64"
    assert str(typed["tone_count_errors"].dtype) == "Int64"
    assert str(typed["qualification_passed"].dtype) == "boolean"
    assert typed["hearing_reported_normal"].tolist()[2] is False
    assert str(typed["acr_item"].dtype) == "string"

    bad = frame.copy()
    bad["acr_rating"] = [pd.NA, "6", pd.NA]
    bad["preference_strength"] = ["0", pd.NA, pd.NA]
    bad["qualification_passed"] = [pd.NA, pd.NA, "yes"]
    bad["acr_item"] = [pd.NA, "anchor", pd.NA]
    bad["preferred_condition"] = ["x", pd.NA, pd.NA]  # answer B is y
    with pytest.raises(ExportError) as caught:
        validate_responses(bad)
    message = str(caught.value)
    assert "'acr_rating' must be an integer 1..5" in message
    assert "'preference_strength' must be an integer 1..3" in message
    assert "'qualification_passed' must be 0 or 1" in message
    assert "'acr_item' must be one of rating, gold, trap" in message
    assert "'preferred_condition' is not the condition of the answered slot" in message
    bad_answer = frame.assign(answer=["C", "4", pd.NA])
    with pytest.raises(ExportError, match="fit_preference 'answer' must be A or B"):
        validate_responses(bad_answer)


# --------------------------------------------------------------------------- end to end
SIM_TRUTH = Truth(
    fit_worth={"fits_video": np.log(4.0), "fits_loosely": 0.0, "mismatched": -1.0},
    acr_quality={"reference": 4.4, "good": 3.6, "poor": 2.0},
)


@pytest.fixture(scope="module")
def p808_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("p808_export")
    return simulate_export(
        out,
        participants=48,
        abx_trials=0,
        rating_trials=0,
        sources=4,
        truth=SIM_TRUTH,
        failed_screening_share=0.05,
        failed_catch_share=0.05,
        fit_preference_trials=12,
        acr_trials=12,
        acr_careless_share=0.1,
        seed=5,
    )


@pytest.fixture(scope="module")
def p808_report(p808_export, tmp_path_factory):
    responses, study = p808_export
    out = tmp_path_factory.mktemp("p808_report")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis",
            "report",
            "--responses",
            str(responses),
            "--study",
            str(study),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return out


NEW_TABLES = (
    "fit_preference_pairs",
    "fit_preference_pairs_no_exclusions",
    "fit_preference_bradley_terry",
    "acr_p808_screening",
    "acr_mos",
    "acr_mos_no_screening",
    "acr_mos_per_clip",
    "acr_mos_per_listener",
    "p808_qualification",
)


def test_report_writes_the_new_tables_and_figures(p808_report):
    report = json.loads((p808_report / "report.json").read_text(encoding="utf-8"))
    for name in NEW_TABLES:
        assert (p808_report / "tables" / f"{name}.csv").exists(), name
        assert report["tables"][name], name
    html = (p808_report / "report.html").read_text(encoding="utf-8")
    assert "Bradley-Terry" in html and "ACR MOS per condition" in html
    assert html.count("Plotly.newPlot") == 2  # the fit-preference and the ACR figure


def test_report_recovers_the_preference_truth(p808_report):
    pairs = pd.read_csv(p808_report / "tables" / "fit_preference_pairs.csv")
    pairs = pairs.set_index(["first", "second"])
    # Truth: fits_video is preferred to fits_loosely 80% of the time (log-worth gap log 4).
    row = pairs.loc[("fits_loosely", "fits_video")]
    assert row["pval"] < 0.01
    # A 95% interval covers the truth in 95% of studies: true for this seed (14 of seeds 0-14).
    assert row["ci_low"] < 0.2 < row["ci_high"]
    assert (pairs["pval_holm"] < 0.01).all()
    strengths = pd.read_csv(p808_report / "tables" / "fit_preference_bradley_terry.csv")
    strengths = strengths.set_index("item")
    assert strengths["log_worth"].idxmax() == "fits_video"
    assert strengths.index.tolist() == ["fits_video", "fits_loosely", "mismatched"]
    gap = strengths.loc["fits_video", "log_worth"] - strengths.loc["fits_loosely", "log_worth"]
    assert gap == pytest.approx(np.log(4.0), abs=0.5)
    assert strengths.loc["fits_video", "ci_low"] > strengths.loc["fits_loosely", "ci_high"]
    assert strengths["lr_pval"].iloc[0] < 1e-6
    # The choices are stronger when they go the true way.
    assert row["mean_strength_second"] > row["mean_strength_first"]


def test_report_recovers_the_quality_truth_and_drops_careless_listeners(p808_export, p808_report):
    tables = p808_report / "tables"
    quality = pd.read_csv(tables / "acr_mos.csv").set_index("condition")
    assert quality.loc["reference", "ci_low"] > quality.loc["good", "ci_high"]
    assert quality.loc["good", "ci_low"] > quality.loc["poor", "ci_high"]
    assert quality.loc["good", "mos"] == pytest.approx(3.6, abs=0.3)

    raw = pd.read_csv(p808_export[0], dtype=str, keep_default_na=False)
    acr = raw[raw["trial_type"] == "acr"]
    trap = acr[acr["acr_item"] == "trap"]
    failed_trap = set(trap.loc[trap["acr_rating"] != trap["correct_answer"], "participant"])
    assert failed_trap  # the simulation has careless listeners who fail the trap
    screening = pd.read_csv(tables / "acr_p808_screening.csv").set_index("participant")
    assert len(screening) == raw["participant"].nunique()
    assert screening.loc[sorted(failed_trap), "dropped"].all()
    assert not screening.loc[sorted(failed_trap), "in_mos"].any()
    # The independent recomputation agrees with the app's flag (simulated as the app sets it).
    assert (screening["dropped"] == screening["app_flag_failed_catch"]).all()
    listeners = pd.read_csv(tables / "acr_mos_per_listener.csv")
    assert not set(listeners["participant"]) & set(screening.index[screening["dropped"]])
    # No gold or trap row in any MOS: the counts are rated clips only.
    everyone = pd.read_csv(tables / "acr_mos_no_screening.csv")
    assert everyone["n"].sum() == (acr["acr_item"] == "rating").sum()
    assert quality["n"].sum() == pd.read_csv(tables / "acr_mos_per_clip.csv")["n"].sum()
    assert quality["n"].sum() == listeners["n"].sum()
    # Careless listeners rate at random, which pulls the conditions together.
    spread = quality.loc["reference", "mos"] - quality.loc["poor", "mos"]
    everyone = everyone.set_index("condition")
    assert spread > everyone.loc["reference", "mos"] - everyone.loc["poor", "mos"]
    qualification = pd.read_csv(tables / "p808_qualification.csv").set_index("listening_device")
    assert qualification.loc["all", "participants"] == raw["participant"].nunique()
    failed_screening = raw.loc[raw["flag_failed_screening"] == "1", "participant"].nunique()
    assert qualification.loc["all", "failed"] == failed_screening


def test_an_old_export_without_the_new_columns_still_reports(tmp_path):
    responses, study = simulate_export(
        tmp_path / "old", participants=12, abx_trials=6, rating_trials=10, sources=3, seed=4
    )
    header = responses.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert not {"acr_rating", "acr_item", "condition_a", "qualification_passed"} & set(header)
    config = ReportConfig(n_boot=50, n_permutations=50)
    summary = report_from_files(responses, study, tmp_path / "report", config)
    assert "realism" in summary["tables"] and "agreement" in summary["tables"]
    assert not set(NEW_TABLES) & set(summary["tables"])
    assert read_export(responses, study).responses["trial_type"].isin(["abx"]).any()


def test_a_failed_trap_hidden_by_a_row_exclusion_still_drops_the_listener():
    from analysis.load import apply_exclusions

    rows = acr_rows(
        [
            ("P1", "trap", "p808_trap", "trap1", 4, "2"),
            ("P1", "rating", "good", "good1", 5, None),
            ("P2", "trap", "p808_trap", "trap1", 2, "2"),
            ("P2", "rating", "good", "good1", 3, None),
        ]
    )
    # P1's failed trap was answered too fast, and (say) the app did not flag P1 as failing it.
    rows["flag_failed_screening"] = False
    rows["flag_failed_catch"] = False
    rows["flag_too_fast"] = [True, False, False, False]
    kept = apply_exclusions(rows).kept
    assert "trap" not in kept.loc[kept["participant"] == "P1", "acr_item"].tolist()
    tables = new_trial_type_tables(kept, rows)
    assert tables["acr_p808_screening"].set_index("participant")["dropped"].to_dict() == {
        "P1": True,
        "P2": False,
    }
    assert tables["acr_mos"]["mos"].tolist() == [3.0]
