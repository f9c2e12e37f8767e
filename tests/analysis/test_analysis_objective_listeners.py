"""The report's "objective metrics vs listeners": cue differences against rating differences."""

import numpy as np
import pandas as pd
import pytest

from analysis.report import objective_vs_listeners


def ratings_for(segments, condition, valence, arousal, tension_share, raters=10):
    """`raters` rows per segment with the given mean valence/arousal and share choosing tension."""
    rows = []
    for i, segment in enumerate(segments):
        for r in range(raters):
            chosen = r < round(tension_share[i] * raters)
            rows.append({"participant": f"p{r}", "segment": segment, "condition": condition,
                         "valence": valence[i], "arousal": arousal[i],
                         "gems": "tension;power" if chosen else ("" if r % 2 else None)})
    return rows


@pytest.fixture
def tables():
    segments = [f"s{i}" for i in range(8)]
    rng = np.random.default_rng(0)
    faster = rng.normal(0, 0.5, 8)   # tempo_log2_ratio of condition "a"
    brighter = rng.normal(0, 0.5, 8)  # mode_strength_diff of condition "b"
    rows = ratings_for(segments, "reference", [5.0] * 8, [5.0] * 8, [0.2] * 8)
    # condition a: arousal follows tempo exactly; b: valence follows mode, tension is inverse
    rows += ratings_for(segments, "a", [5.0] * 8, 5.0 + faster, [0.2] * 8)
    rows += ratings_for(segments, "b", 5.0 + brighter, [5.0] * 8, 0.5 - 0.5 * brighter / 2)
    ratings = pd.DataFrame(rows)
    objective = pd.DataFrame({
        "segment": segments * 2, "condition": ["a"] * 8 + ["b"] * 8,
        "tempo_log2_ratio": np.concatenate([faster, rng.normal(0, 0.5, 8)]),
        "mode_strength_diff": np.concatenate([rng.normal(0, 0.5, 8), brighter]),
        "key": ["C major"] * 16,  # text columns are not metrics
    })
    return objective_vs_listeners(objective, pd.DataFrame(), ratings)


def test_rows_per_cue_and_outcome_with_columns_per_condition(tables):
    assert set(tables["metric"]) == {"tempo_log2_ratio", "mode_strength_diff"}
    assert set(tables["outcome"]) == {"rating_distance", "valence_diff", "arousal_diff",
                                      "tension_diff"}
    assert {"spearman_a", "pval_a", "clips_a", "spearman_b", "clips_b"} <= set(tables.columns)
    assert (tables["clips"] == 16).all() and (tables["clips_a"] == 8).all()


def test_known_relations_are_found_within_their_condition(tables):
    row = tables.set_index(["metric", "outcome"])
    assert row.loc[("tempo_log2_ratio", "arousal_diff"), "spearman_a"] == pytest.approx(1.0)
    assert row.loc[("mode_strength_diff", "valence_diff"), "spearman_b"] == pytest.approx(1.0)
    assert row.loc[("mode_strength_diff", "tension_diff"), "spearman_b"] < -0.9
    # within b, valence does not move with tempo: nothing to correlate in a's arousal there
    assert np.isnan(row.loc[("tempo_log2_ratio", "arousal_diff"), "spearman_b"])
