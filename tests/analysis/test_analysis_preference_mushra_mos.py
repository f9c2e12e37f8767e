"""Analysis of the preference, MUSHRA, similarity and MOS trial types: Bradley-Terry (2AFC),
MUSHRA (BS.1534-3), MOS (P.808), and their export columns and report sections."""

import csv
import json

import numpy as np
import pandas as pd
import pytest
from agresti import BASEBALL, TEAMS

import export_contract
from analysis import mos, mushra, preference
from analysis.__main__ import main
from analysis.load import read_export, validate_responses

# --------------------------------------------------------------------------- Bradley-Terry
# Agresti (2002) Table 10.10 (tests/agresti.py: TEAMS, BASEBALL); Table 10.11 / section 10.6.2:
# fitted log-worths with Baltimore = 0, reported to two decimals; residual deviance 15.7 on df 15.
BASEBALL_PUBLISHED = {
    "Milwaukee": 1.58,
    "Detroit": 1.44,
    "Toronto": 1.29,
    "New York": 1.25,
    "Boston": 1.11,
    "Cleveland": 0.68,
    "Baltimore": 0.0,
}

# Stigler (1994) citations as in Agresti (2002) p. 448 and R's BradleyTerry2::citations: rows are
# the *cited* journal (winner), columns the *citing* journal (loser); the diagonal (self-citation)
# plays no part.
JOURNALS = ["Biometrika", "Comm Statist", "JASA", "JRSS-B"]
CITATIONS = [
    [714, 730, 498, 221],
    [33, 425, 68, 17],
    [320, 813, 1072, 142],
    [284, 276, 325, 188],
]
# BradleyTerry2 vignette (Turner & Firth 2012, JSS 48(9), section 2.1): BTm coefficients with
# Biometrika as reference, and residual deviance 4.293 on 3 df.
CITATIONS_PUBLISHED = {"Comm Statist": -2.9491, "JASA": -0.4796, "JRSS-B": 0.2690}


def _citations_matrix() -> pd.DataFrame:
    matrix = np.array(CITATIONS, dtype=float)
    np.fill_diagonal(matrix, 0.0)
    return pd.DataFrame(matrix, index=JOURNALS, columns=JOURNALS)


def test_bradley_terry_agresti_baseball_published_values():
    wins = pd.DataFrame(BASEBALL, index=TEAMS, columns=TEAMS)
    fit = preference.bradley_terry(wins, reference="Baltimore")
    for team, value in BASEBALL_PUBLISHED.items():
        assert fit.table.loc[team, "log_worth_ref"] == pytest.approx(value, abs=0.005)
    assert fit.deviance == pytest.approx(15.7, abs=0.05)
    assert fit.deviance_df == 15
    assert fit.lr_test["df"] == 6


def test_bradley_terry_citations_published_values():
    fit = preference.bradley_terry(_citations_matrix(), reference="Biometrika")
    for journal, value in CITATIONS_PUBLISHED.items():
        assert fit.table.loc[journal, "log_worth_ref"] == pytest.approx(value, abs=5e-5)
    assert fit.deviance == pytest.approx(4.293, abs=5e-4)
    assert fit.deviance_df == 3
    assert fit.table["worth"].sum() == pytest.approx(1.0)
    assert fit.table["log_worth"].mean() == pytest.approx(0.0, abs=1e-12)


def test_bradley_terry_matches_statsmodels_logit():
    """Independent check of estimates, SEs and the LR test: the same model as a binomial GLM
    without intercept (design +1 for the first item, -1 for the second, reference dropped)."""
    import statsmodels.api as sm

    wins = _citations_matrix().to_numpy()
    rows, successes, trials = [], [], []
    for i in range(4):
        for j in range(i + 1, 4):
            x = np.zeros(4)
            x[i], x[j] = 1.0, -1.0
            rows.append(x[1:])  # Biometrika (index 0) is the reference
            successes.append(wins[i, j])
            trials.append(wins[i, j] + wins[j, i])
    successes, trials = np.array(successes), np.array(trials)
    glm = sm.GLM(
        np.column_stack([successes, trials - successes]),
        np.array(rows),
        family=sm.families.Binomial(),
    ).fit()
    fit = preference.bradley_terry(_citations_matrix(), reference="Biometrika")
    ours = fit.table.loc[JOURNALS[1:]]
    np.testing.assert_allclose(ours["log_worth_ref"], glm.params, atol=1e-6)
    np.testing.assert_allclose(ours["se_ref"], glm.bse, rtol=1e-5)
    assert fit.deviance == pytest.approx(glm.deviance, rel=1e-6)
    null_deviance = 2 * np.sum(
        successes * np.log(successes / (trials / 2))
        + (trials - successes) * np.log((trials - successes) / (trials / 2))
    )
    assert fit.lr_test["g2"] == pytest.approx(null_deviance - glm.deviance, rel=1e-6)


def test_bradley_terry_long_table_equals_matrix_and_two_item_closed_form():
    pairs = pd.DataFrame({"winner": ["a"] * 3 + ["b"], "loser": ["b"] * 3 + ["a"]})
    fit = preference.bradley_terry(pairs, reference="b")
    assert fit.table.loc["a", "log_worth_ref"] == pytest.approx(np.log(3))
    assert fit.table.loc["a", "se_ref"] == pytest.approx(np.sqrt(1 / (4 * 0.75 * 0.25)))
    assert fit.table.loc["a", "worth"] == pytest.approx(0.75)
    counted = pd.DataFrame({"winner": ["a", "b"], "loser": ["b", "a"], "n": [3, 1]})
    assert preference.bradley_terry(counted, reference="b").table.equals(fit.table)
    # equal strengths: no evidence against H0
    tie = preference.bradley_terry(np.array([[0, 2], [2, 0]]), labels=["x", "y"])
    assert tie.lr_test["g2"] == pytest.approx(0.0, abs=1e-12)
    assert tie.lr_test["pval"] == pytest.approx(1.0)


def test_bradley_terry_refuses_items_that_never_lose():
    with pytest.raises(ValueError, match="strongly connected"):
        preference.bradley_terry(np.array([[0, 3], [0, 0]]))


def test_choices_to_pairs_feeds_bradley_terry():
    rows = pd.DataFrame(
        {
            "condition_a": ["x", "y", "x", "z", "y", "z"],
            "condition_b": ["y", "x", "z", "x", "z", "y"],
            "answer": ["A", "B", "A", "A", "B", "B"],
        }
    )
    pairs = preference.choices_to_pairs(rows)
    assert pairs["winner"].tolist() == ["x", "x", "x", "z", "z", "y"]
    table = preference.preference_table(preference.bradley_terry(pairs))
    assert table["item"].tolist()[0] == "x"
    assert {"lr_g2", "lr_pval", "se"} <= set(table.columns)


# --------------------------------------------------------------------------- MUSHRA
def test_post_screening_flag_rule():
    # BS.1534-3 4.1.2: hidden reference < 90 in MORE than 15 % of the screens.
    assert mushra.post_screening_flag([100] * 6 + [80]) is False  # 1/7 = 14.3 %
    assert mushra.post_screening_flag([100] * 5 + [80]) is True  # 1/6 = 16.7 %
    assert mushra.post_screening_flag([89.9]) is True
    assert mushra.post_screening_flag([90]) is False
    assert mushra.post_screening_flag([]) is False
    assert mushra.post_screening_flag([100, 80], max_fraction=0.5) is False


def _mushra_rows() -> pd.DataFrame:
    """Three listeners, two screens each: hidden reference, a 3.5 kHz anchor and two systems.
    P3 rates the hidden reference 70 on one of two screens (50 % > 15 %): flagged."""
    records = []
    scores = {
        "P1": {"reference": 100, "anchor_lp35": 20, "good": 80, "bad": 40},
        "P2": {"reference": 95, "anchor_lp35": 30, "good": 70, "bad": 30},
        "P3": {"reference": 70, "anchor_lp35": 90, "good": 10, "bad": 90},
    }
    for person, by_condition in scores.items():
        for screen in (0, 1):
            for condition, score in by_condition.items():
                role = {"reference": "hidden_reference", "anchor_lp35": "anchor"}.get(
                    condition, "condition"
                )
                if person == "P3" and screen == 0 and condition == "reference":
                    score = 100
                records.append(
                    {
                        "participant": person,
                        "trial_index": screen,
                        "segment": f"seg{screen}",
                        "condition": condition,
                        "stimulus_role": role,
                        "mushra_score": score - screen,
                    }
                )
    return pd.DataFrame.from_records(records)


def test_post_screening_table_and_mushra_scores_by_hand():
    rows = _mushra_rows()
    table = mushra.post_screening(rows).set_index("participant")
    assert table["flagged"].to_dict() == {"P1": False, "P2": False, "P3": True}
    assert table.loc["P3", "below"] == 1 and table.loc["P3", "screens"] == 2
    scores = mushra.mushra_scores(rows, by="condition").set_index("condition")
    # after dropping P3, "good" is P1: 80, 79 and P2: 70, 69
    good = [80, 79, 70, 69]
    assert scores.loc["good", "n"] == 4 and scores.loc["good", "listeners"] == 2
    assert scores.loc["good", "mean"] == pytest.approx(np.mean(good))
    assert scores.loc["good", "sd"] == pytest.approx(np.std(good, ddof=1))
    half = 3.182446305284263 * np.std(good, ddof=1) / 2  # t(0.975, 3) * s / sqrt(4)
    assert scores.loc["good", "ci_low"] == pytest.approx(np.mean(good) - half)
    assert scores.loc["good", "median"] == pytest.approx(74.5)
    unscreened = mushra.mushra_scores(rows, by="condition", post_screen=False)
    assert unscreened.set_index("condition").loc["good", "n"] == 6
    by_role = mushra.mushra_scores(rows)
    assert set(by_role["stimulus_role"]) == {"hidden_reference", "anchor", "condition"}


def test_mushra_mixed_model_contrasts():
    rows = _mushra_rows()
    fit = mushra.mushra_mixed_model(rows).set_index("term")
    # balanced, screened (P1, P2): contrasts are differences of means against the hidden reference
    assert fit.loc["good", "estimate"] == pytest.approx((80 + 70) / 2 - (100 + 95) / 2, abs=1e-4)
    assert fit.loc["bad", "estimate"] == pytest.approx((40 + 30) / 2 - (100 + 95) / 2, abs=1e-4)
    assert "anchor_lp35" not in fit.index
    assert fit.loc["good", "baseline"] == "reference"
    assert fit.loc["good", "listeners"] == 2


# --------------------------------------------------------------------------- MOS
def test_mos_tables_by_hand():
    df = pd.DataFrame(
        {
            "participant": ["P1", "P2", "P3", "P1", "P2", "P3"],
            "condition": ["a", "a", "a", "b", "b", "b"],
            "clip": ["a1", "a1", "a2", "b1", "b1", "b1"],
            "rating": [3, 4, 5, 1, 2, 3],
        }
    )
    table = mos.mos_per_condition(df).set_index("condition")
    assert table.loc["a", "mos"] == pytest.approx(4.0)
    assert table.loc["a", "ci_low"] == pytest.approx(4 - 4.302652729911275 / np.sqrt(3))
    assert table.loc["b", "ci_high"] == pytest.approx(2 + 4.302652729911275 / np.sqrt(3))
    clips = mos.mos_per_clip(df).set_index("clip")
    assert clips.loc["a1", "mos"] == pytest.approx(3.5) and clips.loc["a2", "n"] == 1
    assert np.isnan(clips.loc["a2", "ci_low"])
    people = mos.listener_mos(df).set_index(["participant", "condition"])
    assert people.loc[("P3", "a"), "mos"] == 5.0


def test_p808_screening_drops_failed_gold_items():
    df = pd.DataFrame(
        {
            "participant": ["P1", "P1", "P2", "P2", "P3"],
            "is_catch": [True, False, True, False, False],
            "correct": [False, pd.NA, True, pd.NA, pd.NA],
            "condition": ["a"] * 5,
            "rating": [1, 2, 5, 4, 3],
        }
    )
    result = mos.p808_screen(df)
    assert sorted(result.kept["participant"]) == ["P2", "P3"]
    assert not result.kept["is_catch"].any()
    assert result.listeners.set_index("participant")["dropped"].to_dict() == {
        "P1": True,
        "P2": False,
        "P3": False,
    }
    lenient = mos.p808_screen(df, max_failures=1)
    assert sorted(lenient.kept["participant"]) == ["P1", "P2", "P3"]
    no_columns = mos.p808_screen(df.drop(columns=["is_catch", "correct"]))
    assert len(no_columns.kept) == 5


# --------------------------------------------------------------------------- export end to end
# export_contract's columns: those every export has, then the MUSHRA and similarity ones.
BASE_COLUMNS = [column.name for column in export_contract.COLUMNS if not column.optional]
NEW_COLUMNS = [
    column.name
    for column in export_contract.COLUMNS
    if column.optional and set(column.trial_types or ()) & {"mushra", "similarity"}
]


def _write_export(tmp_path):
    rows = []

    def add(person, index, trial_type, **values):
        row = dict.fromkeys(BASE_COLUMNS + NEW_COLUMNS, "")
        row.update(
            study="s",
            participant=person,
            assignment_index=person[1:],
            list_index="0",
            block=trial_type,
            block_index="0",
            trial_type=trial_type,
            trial_index=str(index),
            trial_in_block=str(index),
            is_catch="0",
            source="src1",
            rt_ms="9000",
            flag_failed_screening="0",
            flag_failed_catch="0",
            flag_too_fast="0",
            excluded="0",
            presented_at="2026-11-25T10:00:00.000Z",
            answered_at="2026-11-25T10:00:09.000Z",
        )
        row.update({k: str(v) for k, v in values.items()})
        rows.append(row)

    mushra_rows = _mushra_rows()
    flags = {"P1": 0, "P2": 0, "P3": 1}
    for record in mushra_rows.to_dict("records"):
        add(
            record["participant"],
            record["trial_index"],
            "mushra",
            segment=record["segment"],
            condition=record["condition"],
            conditions="reference|good|bad",
            clip=f"{record['segment']}_{record['condition']}",
            stimulus_role=record["stimulus_role"],
            stimulus_slot="s1",
            mushra_score=record["mushra_score"],
            mushra_post_screen_flag=flags[record["participant"]],
            plays=1,
            clip_duration=5.0,
        )
    for person, (good, bad) in {"P1": (6, 2), "P2": (5, 3), "P3": (7, 1)}.items():
        for index, (condition, value) in enumerate((("good", good), ("bad", bad)), start=10):
            add(
                person,
                index,
                "similarity",
                segment="seg0",
                condition=condition,
                conditions=f"reference|{condition}",
                clip=f"seg0_{condition}",
                similarity=value,
                plays=1,
                plays_ref=1,
                clip_duration=5.0,
            )
            add(
                person,
                index + 2,
                "fit_rating",
                segment="seg0",
                condition=condition,
                conditions=condition,
                clip=f"seg0_{condition}",
                fit=value,
                video_shown=1,
                plays=1,
                clip_duration=5.0,
            )
    responses = tmp_path / "responses.csv"
    with open(responses, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=BASE_COLUMNS + NEW_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    study = tmp_path / "study.json"
    study.write_text(
        json.dumps(
            {
                "format": "sightsound-export/1",
                "study": {"slug": "s", "title": "New types"},
                "design": {},
                "manifest": {},
            }
        ),
        encoding="utf-8",
    )
    return responses, study


def test_export_with_mushra_and_similarity_columns_loads_and_types_them(tmp_path):
    export = read_export(*_write_export(tmp_path))
    frame = export.responses
    assert str(frame["mushra_score"].dtype) == "Int64"
    assert str(frame["similarity"].dtype) == "Int64"
    assert str(frame["mushra_post_screen_flag"].dtype) == "boolean"
    assert frame.loc[frame["trial_type"] == "mushra", "mushra_score"].notna().all()


def test_mushra_score_out_of_range_is_reported():
    from analysis.load import ExportError

    frame = pd.DataFrame({c: ["0"] for c in BASE_COLUMNS})
    frame["participant"] = "P1"
    frame[["valence", "arousal", "fit", "confidence", "tempo"]] = "1"
    frame["gems"] = ""
    frame["mushra_score"] = "101"
    with pytest.raises(ExportError, match="mushra_score"):
        validate_responses(frame)


def test_report_cli_writes_mushra_similarity_and_fit_sections(tmp_path, capsys):
    responses, study = _write_export(tmp_path)
    out = tmp_path / "report"
    assert (
        main(["report", "--responses", str(responses), "--study", str(study), "--out", str(out)])
        == 0
    )
    tables = json.loads((out / "report.json").read_text())["tables"]
    for name in (
        "mushra",
        "mushra_post_screening",
        "mushra_mixed_model",
        "similarity",
        "fit_rating",
        "similarity_clips",
    ):
        assert (out / "tables" / f"{name}.csv").exists(), name
        assert name in tables
    screened = {r["participant"]: r["flagged"] for r in tables["mushra_post_screening"]}
    assert screened == {"P1": False, "P2": False, "P3": True}
    good = [r for r in tables["mushra"] if r["condition"] == "good"][0]
    assert good["mean"] == pytest.approx(74.5)
    similarity = {r["condition"]: r["mos"] for r in tables["similarity"]}
    assert similarity == {"bad": pytest.approx(2.0), "good": pytest.approx(6.0)}
    html = (out / "report.html").read_text()
    assert "MUSHRA scores" in html and "Similarity to the reference" in html


def test_report_of_abx_and_emotion_only_has_no_mushra_or_similarity_tables(simulated_tables):
    assert not {"mushra", "similarity", "fit_rating", "mushra_mixed_model"} & set(simulated_tables)


def test_mushra_tables_when_every_listener_is_screened_out():
    rows = _mushra_rows()
    only_p3 = rows[rows["participant"] == "P3"]
    assert mushra.mushra_scores(only_p3).empty
    assert mushra.mushra_mixed_model(only_p3).empty
    assert len(mushra.mushra_scores(only_p3, post_screen=False)) == 4
