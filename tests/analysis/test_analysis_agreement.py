"""Agreement functions beyond the published-value checks."""

import numpy as np
import pytest

from analysis import agreement
from analysis.load import apply_exclusions, rating_trials


@pytest.fixture(scope="module")
def ratings(simulated_export):
    return rating_trials(apply_exclusions(simulated_export.responses).kept)


def test_segment_units_use_sampled_permutations(ratings):
    # 24 segments > 13, so the permutation test draws random swap patterns (seeded).
    first = agreement.permutation_test_vs_control(ratings, "keeps_emotion", unit="segment",
                                                  n_permutations=999, seed=5)
    again = agreement.permutation_test_vs_control(ratings, "keeps_emotion", unit="segment",
                                                  n_permutations=999, seed=5)
    assert first == again
    assert first["units"] == 24 and first["n_permutations"] == 999
    assert first["pval"] < 0.01
    table = agreement.summarize(ratings, unit="segment", n_boot=200, n_permutations=200)
    assert (table["units"] == 24).all()


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = x + rng.normal(scale=0.5, size=30)
    first = agreement.bootstrap_correlations(x, y, n_boot=500, seed=9)
    assert first == agreement.bootstrap_correlations(x, y, n_boot=500, seed=9)
    assert first["pearson_low"] < first["pearson"] < first["pearson_high"]
    assert first["spearman_low"] < first["spearman"] < first["spearman_high"]


def test_concordance_penalises_shift_and_scale_but_pearson_does_not():
    x = np.arange(1.0, 10.0)
    assert agreement.concordance_correlation(x, x) == pytest.approx(1.0)
    assert agreement.concordance_correlation(x, 2 * x) < 0.8
    assert agreement.bootstrap_correlations(x, 2 * x, n_boot=50)["pearson"] == pytest.approx(1.0)


def test_intraclass_corr_drops_incomplete_targets_and_needs_two():
    import pandas as pd

    data = pd.DataFrame({"t": [1, 1, 2, 2, 3], "r": ["a", "b", "a", "b", "a"],
                         "s": [1.0, 2.0, 3.0, 5.0, 5.0]})
    with pytest.raises(ValueError, match="at least 2 complete targets"):
        agreement.intraclass_corr(data[data["t"] == 1], "t", "r", "s")
    assert agreement.intraclass_corr(data, "t", "r", "s").loc["ICC1", "df1"] == 1
