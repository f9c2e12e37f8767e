"""Our statistics against values published in the literature or in reference software docs."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels

from analysis import agreement, realism

# Shrout & Fleiss (1979), Psychol Bull 86:420-428, Table 2: six targets rated by four judges.
SHROUT_FLEISS = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9],
                 [6, 2, 4, 7]]


@pytest.fixture
def shrout_fleiss_icc() -> pd.DataFrame:
    long = pd.DataFrame(
        [(f"t{t}", f"j{j}", s) for t, row in enumerate(SHROUT_FLEISS) for j, s in enumerate(row)],
        columns=["target", "judge", "score"],
    )
    return agreement.intraclass_corr(long, "target", "judge", "score")


def test_icc_matches_shrout_fleiss_table_4(shrout_fleiss_icc):
    # Published (Shrout & Fleiss 1979, Table 4): .17 .29 .71 .44 .62 .91
    published = {"ICC1": 0.17, "ICC2": 0.29, "ICC3": 0.71, "ICC1k": 0.44, "ICC2k": 0.62,
                 "ICC3k": 0.91}
    assert list(shrout_fleiss_icc["Type"]) == list(published)
    for form, value in published.items():
        assert shrout_fleiss_icc.loc[form, "ICC"] == pytest.approx(value, abs=0.005)


def test_icc_f_tests_match_the_published_anova(shrout_fleiss_icc):
    # Shrout & Fleiss (1979) Table 2 mean squares: BMS 11.24, WMS 6.26, EMS 1.02, so
    # F(one-way) = BMS/WMS = 1.79 on (5, 18) df and F(two-way) = BMS/EMS = 11.03 on (5, 15).
    # p-values as printed by psych::ICC (Revelle) for this data: 0.16477 and 0.00013.
    icc = shrout_fleiss_icc
    assert icc.loc["ICC1", "F"] == pytest.approx(11.24 / 6.26, rel=0.005)
    assert icc.loc["ICC3", "F"] == pytest.approx(11.24 / 1.02, rel=0.005)
    assert (icc.loc["ICC1", "df1"], icc.loc["ICC1", "df2"]) == (5, 18)
    assert (icc.loc["ICC2", "df1"], icc.loc["ICC2", "df2"]) == (5, 15)
    assert icc.loc["ICC1", "pval"] == pytest.approx(0.16477, abs=5e-5)
    assert icc.loc["ICC3", "pval"] == pytest.approx(0.00013, abs=5e-6)


def test_icc_confidence_intervals_match_psych(shrout_fleiss_icc):
    # psych::ICC(SF) output (Revelle, psych package documentation for ICC), 95% bounds.
    published = {"ICC1": (-0.13, 0.72), "ICC2": (0.02, 0.76), "ICC3": (0.34, 0.95),
                 "ICC1k": (-0.88, 0.91), "ICC2k": (0.07, 0.93), "ICC3k": (0.68, 0.99)}
    for form, bounds in published.items():
        assert shrout_fleiss_icc.loc[form, "CI95"] == pytest.approx(bounds, abs=0.011)


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x
# 12 units, values 1-5, with missing data. Published: nominal .743, ordinal .815,
# interval .849, ratio .797.
KRIPPENDORFF_C = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, np.nan, np.nan, np.nan],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, np.nan, 3],
    [np.nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, np.nan],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, np.nan],
]


@pytest.mark.parametrize(
    ("level", "published"),
    [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)],
)
def test_krippendorff_alpha_matches_the_paper(level, published):
    assert agreement.krippendorff_alpha(KRIPPENDORFF_C, level) == pytest.approx(published,
                                                                                abs=0.0005)


@pytest.mark.parametrize(
    ("successes", "trials", "wilson", "exact"),
    [
        # Newcombe (1998), Stat Med 17:857-872, Table I (methods 3 and 5), 95% intervals.
        (81, 263, (0.2553, 0.3662), (0.2527, 0.3676)),
        (15, 148, (0.0624, 0.1605), (0.0578, 0.1617)),
        (0, 20, (0.0, 0.1611), (0.0, 0.1684)),
        (1, 29, (0.0061, 0.1718), (0.0009, 0.1776)),
    ],
)
def test_intervals_match_newcombe_table(successes, trials, wilson, exact):
    assert realism.wilson_interval(successes, trials) == pytest.approx(wilson, abs=5e-5)
    assert realism.clopper_pearson_interval(successes, trials) == pytest.approx(exact, abs=5e-5)


def test_exact_binomial_matches_r_documentation_example():
    # R's ?binom.test example (Conover 1971, Mendel's peas): 682 of 925 against p = 3/4:
    # two-sided p-value = 0.3825, 95% CI 0.7076683 0.7654066.
    from scipy import stats

    result = stats.binomtest(682, 925, 0.75)
    assert result.pvalue == pytest.approx(0.3825, abs=5e-5)
    assert realism.clopper_pearson_interval(682, 925) == pytest.approx(
        (0.7076683, 0.7654066), abs=5e-7)


def test_one_sided_binomial_is_the_exact_tail():
    # P(X >= 9 | n = 10, p = 1/2) = (10 + 1) / 2**10, from the binomial formula.
    assert realism.binomial_test(9, 10) == pytest.approx(11 / 1024, rel=1e-12)
    assert realism.binomial_test(5, 10) == pytest.approx(638 / 1024, rel=1e-12)


def test_dprime_abx_follows_the_differencing_model():
    # The closed form behind the published tables (M&C 2005, ch. 9; Kaplan, Macmillan &
    # Creelman 1978; the Palamedes table below): p(c) = Phi(d/sqrt2)Phi(d/sqrt6) +
    # Phi(-d/sqrt2)Phi(-d/sqrt6).
    from scipy.stats import norm

    for d in (0.5, 1.0, 2.0, 3.0):
        pc = norm.cdf(d / np.sqrt(2)) * norm.cdf(d / np.sqrt(6)) + norm.cdf(
            -d / np.sqrt(2)) * norm.cdf(-d / np.sqrt(6))
        assert realism.dprime_abx(pc) == pytest.approx(d, abs=1e-6)
    # Derived from the formula above (not a table): p(c) = .75 <-> d' = 2.020.
    assert realism.dprime_abx(0.75) == pytest.approx(2.020, abs=0.001)
    assert realism.dprime_abx(0.5) == 0.0
    assert realism.dprime_abx(0.25) == pytest.approx(-realism.dprime_abx(0.75))
    assert np.isinf(realism.dprime_abx(1.0))


# Proportion correct of an unbiased observer in ABX ("2AFC match-to-sample"), differencing
# model, as printed by the Palamedes toolbox (Prins & Kingdom 2009; Kingdom & Prins,
# Psychophysics: A Practical Introduction, 2nd ed. 2016, ch. 6) in the documented output of
# PAL_SDT_DPtoPCcomparison_Demo (d' = 0:.25:4, column "2AFCmatchSamp"; FK, September 2009).
PALAMEDES_ABX_DIFFERENCING = [
    (0.25, 0.5057), (0.50, 0.5223), (0.75, 0.5486), (1.00, 0.5825),
    (1.25, 0.6216), (1.50, 0.6635), (1.75, 0.7058), (2.00, 0.7468),
    (2.25, 0.7850), (2.50, 0.8196), (2.75, 0.8501), (3.00, 0.8765),
    (3.25, 0.8989), (3.50, 0.9178), (3.75, 0.9336), (4.00, 0.9467),
]  # fmt: skip


@pytest.mark.parametrize(("dprime", "proportion_correct"), PALAMEDES_ABX_DIFFERENCING)
def test_dprime_abx_matches_the_published_palamedes_table(dprime, proportion_correct):
    assert float(realism.abx_proportion_correct(dprime)) == pytest.approx(
        proportion_correct, abs=5e-5
    )
    # the table's p(c) is rounded to 4 decimals, which moves d' by at most about 1e-3
    assert realism.dprime_abx(proportion_correct) == pytest.approx(dprime, abs=1e-3)


def test_dprime_abx_agrees_with_a_simulated_observer():
    # Independent check of the closed form by simulating the observation model it describes:
    # the observer says "X = A" when X lies on A's side of the midpoint of A and B. Then
    # sign(A - B) is right with probability Phi(d/sqrt2) and sign(X - (A + B)/2) with
    # Phi(d/sqrt6) (variance 1 + 1/4 + 1/4), the two are uncorrelated, and the answer is
    # correct when both are right or both wrong.
    rng = np.random.default_rng(0)
    d, n = 1.5, 400_000
    a = rng.normal(d, 1, n)
    b = rng.normal(0, 1, n)
    x = rng.normal(d, 1, n)  # X presents A's stimulus again, with fresh noise
    correct = np.sign(a - b) == np.sign(x - (a + b) / 2)
    assert correct.mean() == pytest.approx(float(realism.abx_proportion_correct(d)), abs=0.003)


def _statsmodels_results(name: str) -> Path:
    return Path(statsmodels.__file__).parent / "regression" / "tests" / "results" / name


def test_mixed_model_reproduces_statsmodels_dietox_example():
    # statsmodels' documented MixedLM example (docs "Linear Mixed Effects Models";
    # Weight ~ Time, random intercept per Pig), which equals lme4's lmer fit:
    # Intercept 15.724, Time 6.943, Group Var 40.394, Scale 11.3669, log-likelihood -2404.7753.
    data = pd.read_csv(_statsmodels_results("dietox.csv"))
    result = agreement.fit_mixedlm(data, "Weight ~ Time", groups="Pig")
    assert result.fe_params["Intercept"] == pytest.approx(15.7235, abs=1e-3)
    assert result.fe_params["Time"] == pytest.approx(6.9425, abs=1e-3)
    assert result.bse["Intercept"] == pytest.approx(0.788, abs=1e-3)
    assert result.cov_re.iloc[0, 0] == pytest.approx(40.394, abs=1e-2)
    assert result.scale == pytest.approx(11.3669, abs=1e-3)
    assert result.llf == pytest.approx(-2404.7753, abs=1e-3)


def test_mixed_model_variance_components_reproduce_lme4_pastes():
    # Bates (2010), lme4: Mixed-effects modeling with R, ch. 2, Pastes data (nested effects):
    # strength ~ 1 + (1|batch) + (1|sample): intercept 60.0533 (SE 0.6769), batch variance 1.657,
    # sample variance 8.434, residual variance 0.678.
    data = pd.read_csv(_statsmodels_results("pastes.csv"))
    result = agreement.fit_mixedlm(data, "strength ~ 1", groups="batch", re_formula="1",
                                   vc_formula={"cask": "0 + cask"})
    assert result.fe_params.iloc[0] == pytest.approx(60.0533, abs=1e-3)
    assert result.bse.iloc[0] == pytest.approx(0.6769, abs=1e-3)
    assert result.cov_re.iloc[0, 0] == pytest.approx(1.657, abs=2e-3)
    assert result.vcomp[0] == pytest.approx(8.434, abs=5e-3)
    assert result.scale == pytest.approx(0.678, abs=1e-3)
