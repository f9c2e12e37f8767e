"""sightsound_stats (shared by the app's blinding audit and the analysis) agrees with statsmodels
and with published values."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from sightsound_stats import holm_adjust, wilson_interval


@pytest.mark.parametrize(
    ("successes", "trials", "confidence"),
    [(81, 263, 0.95), (0, 10, 0.95), (10, 10, 0.95), (50, 100, 0.95), (3, 7, 0.9), (1, 1, 0.99)],
)
def test_wilson_matches_statsmodels(successes, trials, confidence):
    expected = proportion_confint(successes, trials, alpha=1 - confidence, method="wilson")
    assert wilson_interval(successes, trials, confidence) == pytest.approx(expected, abs=1e-12)


def test_wilson_matches_newcombe_table_1():
    """Newcombe (1998), Stat Med 17:857-872, Table I, method 3 (score): 81/263 and 15/148."""
    assert [round(x, 4) for x in wilson_interval(81, 263)] == [0.2553, 0.3662]
    assert [round(x, 4) for x in wilson_interval(15, 148)] == [0.0624, 0.1605]


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(7)
    for size in (1, 2, 5, 30):
        p_values = list(rng.uniform(0, 0.2, size))
        expected = multipletests(p_values, method="holm")[1]
        assert holm_adjust(p_values) == pytest.approx(list(expected), abs=1e-15)
    assert holm_adjust([]) == []

