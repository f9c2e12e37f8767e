"""Semantic agreement: do listeners hear the same emotion in a generated clip as in the real one?

Ratings are the tidy emotion-rating rows from :func:`analysis.load.rating_trials`. For each
generated condition the unit of comparison is a source (or a segment): the mean rating of that
condition's clips against the mean rating of the reference clips of the same unit. The
``mismatched`` control (music that belongs to another performance) gives the agreement expected
from music that merely *sounds plausible*, and a permutation test asks whether each condition
beats it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis.load import GEMS_WORDS

REFERENCE = "reference"
CONTROL = "mismatched"
DIMENSIONS = ("valence", "arousal")


# --------------------------------------------------------------------------- reliability indices
def intraclass_corr(
    data: pd.DataFrame, targets: str, raters: str, ratings: str, confidence: float = 0.95
) -> pd.DataFrame:
    """Intraclass correlations, the six Shrout & Fleiss (1979) forms, as pingouin reports them.

    ``data`` is long: one row per (target, rater) rating. Targets with a missing rating are
    dropped (the ANOVA needs a complete table). ICC1: one-way random; ICC2: two-way random,
    absolute agreement; ICC3: two-way mixed, consistency; ``k`` forms are for the mean of the
    ``k`` raters. F tests and confidence intervals follow Shrout & Fleiss (1979) and McGraw &
    Wong (1996), Psychol Methods 1:30-46.

    Reference: Shrout & Fleiss (1979), Psychol Bull 86:420-428 (Table 2 data below).

    >>> scores = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8],
    ...           [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
    >>> long = pd.DataFrame([(t, j, s) for t, row in enumerate(scores)
    ...                      for j, s in enumerate(row)], columns=["t", "j", "s"])
    >>> icc = intraclass_corr(long, "t", "j", "s")
    >>> icc["ICC"].round(2).tolist()
    [0.17, 0.29, 0.71, 0.44, 0.62, 0.91]
    >>> icc["F"].round(2).tolist()[:3]
    [1.79, 11.03, 11.03]
    """
    wide = data.pivot_table(index=targets, columns=raters, values=ratings, aggfunc="mean")
    wide = wide.dropna()
    scores = wide.to_numpy(dtype=float)
    n, k = scores.shape
    if n < 2 or k < 2:
        raise ValueError("intraclass_corr needs at least 2 complete targets and 2 raters")
    grand = scores.mean()
    ss_targets = k * ((scores.mean(axis=1) - grand) ** 2).sum()
    ss_raters = n * ((scores.mean(axis=0) - grand) ** 2).sum()
    ss_total = ((scores - grand) ** 2).sum()
    ss_error = ss_total - ss_targets - ss_raters
    ms_targets = ss_targets / (n - 1)  # BMS
    ms_within = (ss_raters + ss_error) / (n * (k - 1))  # WMS
    ms_raters = ss_raters / (k - 1)  # JMS
    ms_error = ss_error / ((n - 1) * (k - 1))  # EMS

    icc1 = (ms_targets - ms_within) / (ms_targets + (k - 1) * ms_within)
    icc2 = (ms_targets - ms_error) / (
        ms_targets + (k - 1) * ms_error + k * (ms_raters - ms_error) / n
    )
    icc3 = (ms_targets - ms_error) / (ms_targets + (k - 1) * ms_error)
    icc1k = (ms_targets - ms_within) / ms_targets
    icc2k = (ms_targets - ms_error) / (ms_targets + (ms_raters - ms_error) / n)
    icc3k = (ms_targets - ms_error) / ms_targets

    df1, df2_one_way, df2_two_way = n - 1, n * (k - 1), (n - 1) * (k - 1)
    f1 = ms_targets / ms_within
    f3 = ms_targets / ms_error
    p1 = stats.f.sf(f1, df1, df2_one_way)
    p3 = stats.f.sf(f3, df1, df2_two_way)

    q = 1 - (1 - confidence) / 2
    f1_low = f1 / stats.f.ppf(q, df1, df2_one_way)
    f1_high = f1 * stats.f.ppf(q, df2_one_way, df1)
    f3_low = f3 / stats.f.ppf(q, df1, df2_two_way)
    f3_high = f3 * stats.f.ppf(q, df2_two_way, df1)
    ci1 = ((f1_low - 1) / (f1_low + k - 1), (f1_high - 1) / (f1_high + k - 1))
    ci3 = ((f3_low - 1) / (f3_low + k - 1), (f3_high - 1) / (f3_high + k - 1))
    # ICC2: Satterthwaite-style degrees of freedom (McGraw & Wong 1996, Table 7).
    f_raters = ms_raters / ms_error
    v_num = (k - 1) * (n - 1) * (k * icc2 * f_raters + n * (1 + (k - 1) * icc2) - k * icc2) ** 2
    v_den = (n - 1) * k**2 * icc2**2 * f_raters**2 + (n * (1 + (k - 1) * icc2) - k * icc2) ** 2
    v = v_num / v_den
    f2_high = stats.f.ppf(q, n - 1, v)
    f2_low = stats.f.ppf(q, v, n - 1)
    pooled = k * ms_raters + (k * n - k - n) * ms_error
    ci2 = (
        n * (ms_targets - f2_high * ms_error) / (f2_high * pooled + n * ms_targets),
        n * (f2_low * ms_targets - ms_error) / (pooled + n * f2_low * ms_targets),
    )
    ci1k = (1 - 1 / f1_low, 1 - 1 / f1_high)
    ci3k = (1 - 1 / f3_low, 1 - 1 / f3_high)
    ci2k = tuple(c * k / (1 + c * (k - 1)) for c in ci2)

    rows = [
        ("ICC1", "Single raters absolute", icc1, f1, df1, df2_one_way, p1, ci1),
        ("ICC2", "Single random raters", icc2, f3, df1, df2_two_way, p3, ci2),
        ("ICC3", "Single fixed raters", icc3, f3, df1, df2_two_way, p3, ci3),
        ("ICC1k", "Average raters absolute", icc1k, f1, df1, df2_one_way, p1, ci1k),
        ("ICC2k", "Average random raters", icc2k, f3, df1, df2_two_way, p3, ci2k),
        ("ICC3k", "Average fixed raters", icc3k, f3, df1, df2_two_way, p3, ci3k),
    ]
    table = pd.DataFrame(
        [(t, d, i, f, a, b, p, np.round(ci, 2)) for t, d, i, f, a, b, p, ci in rows],
        columns=["Type", "Description", "ICC", "F", "df1", "df2", "pval", "CI95"],
    )
    table.index = table["Type"].to_list()
    return table


def krippendorff_alpha(reliability_data: np.ndarray, level: str = "interval") -> float:
    """Krippendorff's alpha for a raters x units array (NaN = missing); wraps ``krippendorff``.

    ``level`` is ``nominal``, ``ordinal``, ``interval`` or ``ratio``.
    Reference: Krippendorff (2011), *Computing Krippendorff's Alpha-Reliability*, Annenberg
    School for Communication, University of Pennsylvania (example C below).

    >>> nan = np.nan
    >>> data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
    ...         [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
    ...         [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
    ...         [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]]
    >>> round(krippendorff_alpha(data, "nominal"), 3)
    0.743
    """
    import krippendorff

    array = np.asarray(reliability_data, dtype=float)
    return float(krippendorff.alpha(reliability_data=array, level_of_measurement=level))


def concordance_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Lin's concordance correlation coefficient: agreement with the identity line.

    ``rho_c = 2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2)`` with 1/n moments.
    Reference: Lin (1989), Biometrics 45:255-268.

    >>> concordance_correlation([1, 2, 3, 4], [1, 2, 3, 4])
    1.0
    >>> round(concordance_correlation([1, 2, 3, 4], [2, 3, 4, 5]), 4)  # r = 1, shifted by 1
    0.7143
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    covariance = ((a - a.mean()) * (b - b.mean())).mean()
    return float(2 * covariance / (a.var() + b.var() + (a.mean() - b.mean()) ** 2))


def bootstrap_correlations(
    x: Sequence[float],
    y: Sequence[float],
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Pearson and Spearman correlations with percentile bootstrap intervals (units resampled).

    All resamples are drawn at once as an index matrix, so this is a few array operations.
    Reference: Efron & Tibshirani (1993), *An Introduction to the Bootstrap*, ch. 13.

    >>> result = bootstrap_correlations([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5], seed=1)
    >>> round(result["pearson"], 4), round(result["spearman"], 4)
    (0.8286, 0.8286)
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(a), size=(n_boot, len(a)))
    tail = (1 - confidence) / 2

    def rowwise_pearson(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        u = u - u.mean(axis=1, keepdims=True)
        v = v - v.mean(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (u * v).sum(axis=1) / np.sqrt((u * u).sum(axis=1) * (v * v).sum(axis=1))

    pearson_boot = rowwise_pearson(a[index], b[index])
    spearman_boot = rowwise_pearson(
        stats.rankdata(a[index], axis=1), stats.rankdata(b[index], axis=1)
    )
    result = {
        "pearson": float(stats.pearsonr(a, b)[0]) if a.std() and b.std() else np.nan,
        "spearman": float(stats.spearmanr(a, b)[0]) if a.std() and b.std() else np.nan,
    }
    for name, boot in (("pearson", pearson_boot), ("spearman", spearman_boot)):
        boot = boot[np.isfinite(boot)]
        low, high = np.quantile(boot, [tail, 1 - tail]) if boot.size else (np.nan, np.nan)
        result[f"{name}_low"], result[f"{name}_high"] = float(low), float(high)
    return result


def mean_difference(
    generated: Sequence[float], reference: Sequence[float], confidence: float = 0.95
) -> dict[str, float]:
    """Mean paired difference (generated - reference) with a t interval over units.

    >>> result = mean_difference([5, 6, 7], [4, 6, 5])
    >>> result["mean_diff"], round(result["ci_low"], 3), round(result["ci_high"], 3)
    (1.0, -1.484, 3.484)
    """
    diff = np.asarray(generated, dtype=float) - np.asarray(reference, dtype=float)
    n = len(diff)
    half = stats.t.ppf(1 - (1 - confidence) / 2, n - 1) * diff.std(ddof=1) / np.sqrt(n)
    return {"mean_diff": float(diff.mean()), "ci_low": float(diff.mean() - half),
            "ci_high": float(diff.mean() + half)}


# --------------------------------------------------------------------------- per-unit tables
def unit_means(ratings: pd.DataFrame, unit: str = "source") -> pd.DataFrame:
    """Mean valence and arousal of each condition's clips per unit (wide: unit x condition)."""
    return ratings.groupby([unit, "condition"], observed=True)[list(DIMENSIONS)].mean().astype(
        float
    )


def paired_means(
    ratings: pd.DataFrame, condition: str, dimension: str, unit: str = "source"
) -> pd.DataFrame:
    """Units rated in both ``condition`` and ``reference``: columns ``generated``, ``reference``."""
    means = ratings.groupby([unit, "condition"], observed=True)[dimension].mean().unstack()
    if condition not in means or REFERENCE not in means:
        return pd.DataFrame(columns=["generated", "reference"], dtype=float)
    pairs = means[[condition, REFERENCE]].dropna().astype(float)
    pairs.columns = ["generated", "reference"]
    return pairs


def gems_agreement(
    ratings: pd.DataFrame, condition: str, unit: str = "source", threshold: float = 0.5
) -> dict[str, object]:
    """Agreement of GEMS-9 words between a condition's clips and the reference, per unit.

    A word *characterises* a unit's clip when at least ``threshold`` of its ratings chose it.
    Returns the mean Jaccard index of the characteristic word sets over units, and per word the
    Cohen's kappa between "characteristic of the reference" and "of the generated clip" across
    units (NaN when a word is constant in both, where kappa is undefined).
    References: Zentner, Grandjean & Scherer (2008), Emotion 8:494 (GEMS); Cohen (1960).
    >>> ratings = pd.DataFrame({
    ...     "source": ["s1"] * 3 + ["s2"] * 3 + ["s3"] * 3,
    ...     "condition": ["reference", "sys", "mismatched"] * 3,
    ...     "valence": [2, 2, 8, 5, 5, 2, 8, 7, 5], "arousal": [3, 3, 7, 6, 5, 3, 8, 8, 2],
    ...     "gems": ["sadness", "sadness", "power", "tenderness", "tenderness;wonder",
    ...              "sadness", "power", "power", "tenderness"],
    ...     "fit": [6, 5, 2, 6, 6, 3, 7, 6, 2]})
    >>> round(gems_agreement(ratings, "sys")["jaccard"], 4)  # s2 adds "wonder": 1, 1/2, 1
    0.8333
    """
    chosen = _gems_indicators(ratings)
    shares = chosen.groupby([ratings[unit], ratings["condition"]], observed=True).mean()
    if condition not in shares.index.get_level_values(1) or REFERENCE not in (
        shares.index.get_level_values(1)
    ):
        return {"jaccard": np.nan, "kappa": {}, "units": 0}
    generated = shares.xs(condition, level=1) >= threshold
    reference = shares.xs(REFERENCE, level=1) >= threshold
    common = generated.index.intersection(reference.index)
    generated, reference = generated.loc[common], reference.loc[common]
    union = (generated | reference).sum(axis=1)
    inter = (generated & reference).sum(axis=1)
    jaccard = np.where(union > 0, inter / union.where(union > 0, 1), 1.0)
    kappas = {word: cohen_kappa(reference[word], generated[word]) for word in GEMS_WORDS}
    return {"jaccard": float(np.mean(jaccard)) if len(common) else np.nan, "kappa": kappas,
            "units": len(common)}


def cohen_kappa(first: Sequence[bool], second: Sequence[bool]) -> float:
    """Cohen's kappa for two binary ratings of the same units. Reference: Cohen (1960).

    >>> round(cohen_kappa([1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 0]), 4)
    0.6667
    """
    a = np.asarray(first, dtype=bool)
    b = np.asarray(second, dtype=bool)
    observed = float((a == b).mean())
    expected = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return np.nan if expected == 1 else (observed - expected) / (1 - expected)


def fit_ratings(ratings: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Mean fit-to-video rating (1-7) per condition with a t interval over ratings.
    >>> ratings = pd.DataFrame({
    ...     "source": ["s1"] * 3 + ["s2"] * 3 + ["s3"] * 3,
    ...     "condition": ["reference", "sys", "mismatched"] * 3,
    ...     "valence": [2, 2, 8, 5, 5, 2, 8, 7, 5], "arousal": [3, 3, 7, 6, 5, 3, 8, 8, 2],
    ...     "gems": ["sadness", "sadness", "power", "tenderness", "tenderness;wonder",
    ...              "sadness", "power", "power", "tenderness"],
    ...     "fit": [6, 5, 2, 6, 6, 3, 7, 6, 2]})
    >>> fit_ratings(ratings).round(3).to_dict("records")[2]
    {'condition': 'sys', 'n': 3, 'mean_fit': 5.667, 'ci_low': 4.232, 'ci_high': 7.101}
    """
    rows = ratings.dropna(subset=["fit"])
    records = []
    for condition, values in rows.groupby("condition", observed=True)["fit"]:
        values = values.astype(float)
        n = len(values)
        half = (
            stats.t.ppf(1 - (1 - confidence) / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
            if n > 1 else np.nan
        )
        records.append({"condition": condition, "n": n, "mean_fit": values.mean(),
                        "ci_low": values.mean() - half, "ci_high": values.mean() + half})
    return pd.DataFrame.from_records(
        records, columns=["condition", "n", "mean_fit", "ci_low", "ci_high"]
    )


# --------------------------------------------------------------------------- models and tests
def fit_mixedlm(
    data: pd.DataFrame,
    formula: str,
    groups: str,
    re_formula: str | None = None,
    vc_formula: dict[str, str] | None = None,
    reml: bool = True,
):
    """Fit a linear mixed model with statsmodels ``MixedLM`` (thin wrapper; returns its result).

    Reference: statsmodels' MixedLM documentation; Lindstrom & Bates (1988), JASA 83:1014.
    """
    import warnings

    import statsmodels.formula.api as smf
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    model = smf.mixedlm(formula, data, groups=data[groups], re_formula=re_formula,
                        vc_formula=vc_formula)
    with warnings.catch_warnings():
        # Non-convergence is reported through ``result.converged`` instead of a warning flood.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(reml=reml)


def rating_mixed_model(
    ratings: pd.DataFrame,
    dimension: str,
    unit: str = "source",
    reml: bool = True,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Shift of each condition's ratings against ``reference``, listeners and stimuli random.

    ``rating ~ condition`` (treatment contrasts against ``reference``) with crossed random
    effects for participant and stimulus ``unit`` (source or segment) and, where the data
    support them, for each listener's and each clip's (unit x condition) own shift; the
    structure is chosen down :data:`analysis.lme4.RATING_LADDER`. Fitted by lme4 on all
    participants, REML by default (``reml=False``: maximum likelihood). Tests and intervals
    use t with Satterthwaite degrees of freedom from lmerTest (Kuznetsova, Brockhoff &
    Christensen 2017, J Stat Softw 82(13)); with 8 sources a Wald z would call null shifts
    significant too often, because the clip variance is estimated from few clips.
    Leaving stimulus variance out treats the particular clips as the population and makes
    shifts look surer than they are (Judd, Westfall & Kenny 2012, JPSP 103:54; Barr, Levy,
    Scheepers & Tily 2013, J Mem Lang 68:255).

    Returns one row per condition: ``coef`` (shift), ``se``, ``df``, ``t``, two-sided
    ``pval``, ``ci_low``/``ci_high``, and the model fitted and why. Worked example with known
    truth: tests/analysis/test_analysis_lme4.py (an R fit is too slow for a docstring).
    """
    return rating_mixed_models(ratings, [dimension], unit, reml, confidence)


def rating_mixed_models(
    ratings: pd.DataFrame,
    dimensions: Sequence[str] = DIMENSIONS,
    unit: str = "source",
    reml: bool = True,
    confidence: float = 0.95,
    cores: int = 2,
) -> pd.DataFrame:
    """:func:`rating_mixed_model` for several dimensions, fitted side by side in one R run."""
    from analysis import lme4

    jobs, names = [], []
    for dimension in dimensions:
        job, conditions = lme4.rating_job(ratings, dimension, unit=unit, reference=REFERENCE,
                                          reml=reml)
        jobs.append(job)
        names.append(conditions)
    fits = lme4.run_jobs(jobs, cores=cores)
    tables = [
        rating_shifts(result[None], conditions, dimension, unit, confidence)
        for result, conditions, dimension in zip(fits, names, dimensions, strict=True)
    ]
    return pd.concat(tables, ignore_index=True)


def shift_inference(
    coef: np.ndarray, se: np.ndarray, df: np.ndarray, confidence: float = 0.95
) -> dict[str, np.ndarray]:
    """A rating shift's two-sided t test and interval from its estimate, standard error and
    (Satterthwaite) degrees of freedom, as lmerTest states them: what :func:`rating_shifts`
    reports per condition, and what the rating planning tables recompute from stored
    estimates (:mod:`analysis.power`).

    >>> out = shift_inference(np.array([0.5]), np.array([0.2]), np.array([28.0]))
    >>> [round(float(out[k][0]), 4) for k in ("t", "pval", "ci_low", "ci_high")]
    [2.5, 0.0186, 0.0903, 0.9097]
    """
    coef, se, df = (np.asarray(x, dtype=float) for x in (coef, se, df))
    half = stats.t.ppf(1 - (1 - confidence) / 2, df) * se
    t = coef / se
    return {"coef": coef, "se": se, "df": df, "t": t, "pval": 2 * stats.t.sf(np.abs(t), df),
            "ci_low": coef - half, "ci_high": coef + half}


def rating_shifts(
    fit, conditions: list[str], dimension: str, unit: str = "source", confidence: float = 0.95
) -> pd.DataFrame:
    """The table of :func:`rating_mixed_model` from a fitted :class:`analysis.lme4.MixedFit`."""
    from analysis import lme4

    if fit is None:
        raise RuntimeError(f"no random-effect structure of the {dimension} model could be fitted")
    coefs = fit.coefficients.assign(
        condition=[lme4.term_condition(t, conditions) for t in fit.coefficients["term"]]
    ).dropna(subset=["condition"])
    return pd.DataFrame({
        "dimension": dimension,
        "condition": coefs["condition"].to_numpy(),
        **shift_inference(coefs["estimate"], coefs["se"], coefs["df"], confidence),
        # From the data when the chosen structure has no term for them (still analysed).
        "participants": fit.groups.get("participant", fit.extra.get("data_participants", np.nan)),
        "units": fit.groups.get("unit", fit.extra.get("data_units", np.nan)),
        "estimation": "REML" if fit.reml else "ML",
        "model": fit.model,
        "formula": lme4.formula_text(fit, dimension, unit),
        "singular": fit.singular,
        "model_choice": fit.reason,
    })


def permutation_test_vs_control(
    ratings: pd.DataFrame,
    condition: str,
    control: str = CONTROL,
    unit: str = "source",
    n_permutations: int = 10000,
    seed: int = 0,
) -> dict[str, float]:
    """Does ``condition`` carry the reference's emotion better than the ``control``?

    Statistic: Lin's CCC between the condition's and the reference's unit means, minus the same
    for the control, averaged over valence and arousal.

    Permutation scheme: under H0 the condition and the control are two draws from the same
    process as far as agreement goes, so within each unit their labels can be swapped. Whole
    units are swapped (not single ratings): the question is about the systems, and with many
    ratings per clip a rating-level shuffle would "detect" any two different clips, even two
    equally unrelated ones. With at most 2^13 patterns all are enumerated (exact test);
    otherwise ``n_permutations`` random patterns are drawn (seeded).
    One-sided p = share of patterns with a statistic >= the observed one (the identity included).

    Why CCC and not the distance between means: a condition whose clips all sound "average"
    sits closer to every reference than real music of another performance does, so a distance
    rewards blandness; the CCC of bland music is near 0, like that of a mismatched control.
    Reference: Good (2005), *Permutation, Parametric and Bootstrap Tests of Hypotheses*, ch. 3.
    >>> ratings = pd.DataFrame({
    ...     "source": ["s1"] * 3 + ["s2"] * 3 + ["s3"] * 3,
    ...     "condition": ["reference", "sys", "mismatched"] * 3,
    ...     "valence": [2, 2, 8, 5, 5, 2, 8, 7, 5], "arousal": [3, 3, 7, 6, 5, 3, 8, 8, 2],
    ...     "gems": ["sadness", "sadness", "power", "tenderness", "tenderness;wonder",
    ...              "sadness", "power", "power", "tenderness"],
    ...     "fit": [6, 5, 2, 6, 6, 3, 7, 6, 2]})
    >>> result = permutation_test_vs_control(ratings, "sys")
    >>> round(result["statistic"], 3), result["pval"], result["n_permutations"]
    (1.586, 0.125, 8)
    """
    means = unit_means(ratings, unit)
    table = means.unstack("condition")
    needed = [(d, c) for d in DIMENSIONS for c in (REFERENCE, condition, control)]
    if any(column not in table.columns for column in needed):
        return {"statistic": np.nan, "pval": np.nan, "units": 0, "n_permutations": 0}
    table = table[needed].dropna()
    units = len(table)
    if units < 3:
        return {"statistic": np.nan, "pval": np.nan, "units": units, "n_permutations": 0}

    def stack(name: str) -> np.ndarray:
        return np.column_stack([table[(d, name)].to_numpy() for d in DIMENSIONS])  # (U, 2)

    target, ours, theirs = stack(REFERENCE), stack(condition), stack(control)
    observed = float(_ccc_gap(ours, theirs, target))
    if units <= 13:
        patterns = (np.arange(2**units)[:, None] >> np.arange(units)) & 1
    else:
        patterns = np.random.default_rng(seed).integers(0, 2, (n_permutations, units))
        patterns[0] = 0  # the observed labelling
    swap = patterns.astype(bool)[:, :, None]
    permuted = _ccc_gap(np.where(swap, theirs, ours), np.where(swap, ours, theirs), target)
    pval = float(np.mean(permuted >= observed - 1e-12))
    return {"statistic": observed, "pval": pval, "units": units,
            "n_permutations": len(patterns)}


def _ccc_gap(ours: np.ndarray, theirs: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean over dimensions of CCC(ours, target) - CCC(theirs, target); units on axis -2."""
    def ccc(x: np.ndarray) -> np.ndarray:
        x_centred = x - x.mean(axis=-2, keepdims=True)
        t_centred = target - target.mean(axis=0)
        covariance = (x_centred * t_centred).mean(axis=-2)
        gap = (x.mean(axis=-2) - target.mean(axis=0)) ** 2
        return 2 * covariance / (x.var(axis=-2) + target.var(axis=0) + gap)

    return (ccc(ours) - ccc(theirs)).mean(axis=-1)


def summarize(
    ratings: pd.DataFrame,
    control: str = CONTROL,
    unit: str = "source",
    n_boot: int = 2000,
    n_permutations: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (generated condition, dimension): agreement of unit means with the reference.

    Columns: units, mean difference with CI, Pearson and Spearman with bootstrap CIs, Lin's CCC,
    ICC2 (absolute agreement) and ICC3 (consistency) with the reference and the condition as two
    "raters" of each unit, Krippendorff's alpha (interval, ordinal), GEMS Jaccard, and the
    permutation test against ``control`` (Holm-corrected across conditions, per dimension pair).
    """
    conditions = sorted(c for c in ratings["condition"].unique() if c != REFERENCE)
    permutation = {
        condition: permutation_test_vs_control(ratings, condition, control, unit,
                                               n_permutations, seed)
        for condition in conditions if condition != control
    }
    records = []
    for condition in conditions:
        gems = gems_agreement(ratings, condition, unit)
        for dimension in DIMENSIONS:
            pairs = paired_means(ratings, condition, dimension, unit)
            record: dict[str, object] = {"condition": condition, "dimension": dimension,
                                         "units": len(pairs)}
            if len(pairs) >= 3:
                gen, ref = pairs["generated"], pairs["reference"]
                record.update(mean_difference(gen, ref))
                record.update(bootstrap_correlations(gen, ref, n_boot, seed=seed))
                record["ccc"] = concordance_correlation(gen, ref)
                long = pairs.reset_index(names="unit").melt(id_vars="unit", var_name="rater")
                icc = intraclass_corr(long, "unit", "rater", "value")
                record["icc2"] = icc.loc["ICC2", "ICC"]
                record["icc3"] = icc.loc["ICC3", "ICC"]
                reliability = pairs[["reference", "generated"]].to_numpy().T
                record["alpha_interval"] = krippendorff_alpha(reliability, "interval")
                record["alpha_ordinal"] = krippendorff_alpha(reliability, "ordinal")
            record["gems_jaccard"] = gems["jaccard"]
            if condition in permutation:
                record["perm_statistic"] = permutation[condition]["statistic"]
                record["perm_pval"] = permutation[condition]["pval"]
            records.append(record)
    table = pd.DataFrame.from_records(records)
    if "perm_pval" in table and table["perm_pval"].notna().any():
        tested = table.drop_duplicates("condition").dropna(subset=["perm_pval"])
        adjusted = multipletests(tested["perm_pval"], alpha=alpha, method="holm")[1]
        table["perm_pval_holm"] = table["condition"].map(dict(zip(tested["condition"], adjusted,
                                                                  strict=True)))
        table["beats_control"] = table["perm_pval_holm"] < alpha
    return table


def gems_kappa_table(ratings: pd.DataFrame, unit: str = "source") -> pd.DataFrame:
    """Cohen's kappa per GEMS word (rows) and generated condition (columns)."""
    conditions = sorted(c for c in ratings["condition"].unique() if c != REFERENCE)
    columns = {c: gems_agreement(ratings, c, unit)["kappa"] for c in conditions}
    return pd.DataFrame(columns, index=list(GEMS_WORDS)).rename_axis("word")


def _gems_indicators(ratings: pd.DataFrame) -> pd.DataFrame:
    """One 0/1 column per GEMS word: did the rating's ``;``-joined answer choose it?

    An export has few distinct answers (word combinations) among many rows, so each distinct
    answer is split once and the rows take their answer's row (a regex per word and row took
    2.5 s of the report on 1,000 listeners).
    """
    codes, answers = pd.factorize(ratings["gems"].fillna("").astype(str))
    words = [set(str(answer).split(";")) for answer in answers]
    chosen = np.array([[word in each for word in GEMS_WORDS] for each in words],
                      dtype=float).reshape(len(words), len(GEMS_WORDS))
    return pd.DataFrame(chosen[codes], columns=list(GEMS_WORDS), index=ratings.index)


