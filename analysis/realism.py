"""Realism: can listeners tell a generated clip from the real recording in ABX trials?

Every function takes plain numbers or the tidy ABX rows from :func:`analysis.load.abx_trials`
(one row per answer, columns ``participant``, ``source``, ``condition``, ``correct``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

import sightsound_stats
from sightsound_stats.planning import LAPSE_SHARE

CHANCE = 0.5


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion: sightsound_stats', which the app's
    blinding audit uses too (checked against statsmodels ``proportion_confint``).

    Reference: Wilson (1927), JASA 22:209-212; Newcombe (1998), Stat Med 17:857-872, Table I.

    >>> [round(x, 4) for x in wilson_interval(81, 263)]
    [0.2553, 0.3662]
    """
    return sightsound_stats.wilson_interval(successes, trials, confidence)


def clopper_pearson_interval(
    successes: int, trials: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval from beta quantiles (wraps ``proportion_confint``).

    Reference: Clopper & Pearson (1934), Biometrika 26:404-413; Newcombe (1998), Table I.

    >>> [round(x, 4) for x in clopper_pearson_interval(81, 263)]
    [0.2527, 0.3676]
    """
    low, high = proportion_confint(successes, trials, alpha=1 - confidence, method="beta")
    return float(low), float(high)


def binomial_test(successes: int, trials: int, chance: float = CHANCE) -> float:
    """One-sided exact binomial test of "better than chance" (wraps ``scipy.stats.binomtest``).

    >>> round(binomial_test(9, 10), 6)  # P(X >= 9 | n=10, p=.5) = 11/1024
    0.010742
    """
    return float(stats.binomtest(successes, trials, chance, alternative="greater").pvalue)


def abx_proportion_correct(dprime: float | np.ndarray, model: str = "differencing") -> np.ndarray:
    """Proportion correct of an unbiased ABX observer with sensitivity ``dprime``.

    Differencing model (Macmillan & Creelman 2005, *Detection Theory*, 2nd ed., ch. 9;
    Kaplan, Macmillan & Creelman 1978)::

        p(c) = Phi(d'/sqrt 2) Phi(d'/sqrt 6) + Phi(-d'/sqrt 2) Phi(-d'/sqrt 6)

    Independent-observation model: the same with ``d'/2`` in place of ``d'/sqrt 6``.

    >>> round(float(abx_proportion_correct(2.0)), 4)
    0.7468
    """
    d = np.asarray(dprime, dtype=float)
    second = {"differencing": np.sqrt(6.0), "independent": 2.0}[model]
    phi = stats.norm.cdf
    return phi(d / np.sqrt(2)) * phi(d / second) + phi(-d / np.sqrt(2)) * phi(-d / second)


def dprime_abx(
    proportion_correct: float | np.ndarray, model: str = "differencing"
) -> float | np.ndarray:
    """Sensitivity d' for an unbiased ABX observer, inverting :func:`abx_proportion_correct`.

    ``p(c) = 0.5`` gives 0, ``p(c) = 1`` gives ``inf``; below chance the sign is flipped
    (``d'(p) = -d'(1 - p)``) so that a condition answered systematically wrong stays visible.

    Reference: Macmillan & Creelman (2005), *Detection Theory: A User's Guide*, 2nd ed., ch. 9
    (ABX, differencing model; Kaplan, Macmillan & Creelman 1978). Tested against the published
    table of the Palamedes toolbox (Prins & Kingdom; "2AFC match-to-sample", differencing).

    >>> round(dprime_abx(0.75), 3)
    2.02
    >>> round(dprime_abx(0.75, model="independent"), 3)
    1.79
    """
    values = np.asarray(proportion_correct, dtype=float)

    def solve(pc: float) -> float:
        if np.isnan(pc):
            return np.nan
        if pc < CHANCE:
            return -solve(1.0 - pc)
        if pc == CHANCE:
            return 0.0
        if pc >= 1.0:
            return np.inf
        return optimize.brentq(lambda d: float(abx_proportion_correct(d, model)) - pc, 0, 40)

    result = np.vectorize(solve, otypes=[float])(values)
    return float(result) if result.ndim == 0 else result


def tost_proportion(
    successes: int, trials: int, margin: float = 0.1, chance: float = CHANCE
) -> dict[str, float]:
    """Exact two one-sided tests (TOST) that accuracy lies within ``chance +- margin``.

    A small ``pval`` supports "listeners cannot tell it apart, within the margin". The two
    one-sided exact binomial tests are H0: p <= chance - margin and H0: p >= chance + margin;
    the TOST p-value is the larger of the two (Schuirmann 1987, J Pharmacokin Biopharm 15:657).

    >>> result = tost_proportion(100, 200)
    >>> round(result["pval"], 4)
    0.0026
    """
    low, high = chance - margin, chance + margin
    p_low = stats.binomtest(successes, trials, low, alternative="greater").pvalue
    p_high = stats.binomtest(successes, trials, high, alternative="less").pvalue
    return {"low": low, "high": high, "pval_low": float(p_low), "pval_high": float(p_high),
            "pval": float(max(p_low, p_high))}


def participant_accuracy(abx: pd.DataFrame, chance: float = CHANCE) -> pd.DataFrame:
    """Each participant's accuracy per condition, with a one-sided exact binomial p-value.

    >>> abx = pd.DataFrame({"participant": ["P1"] * 10 + ["P2"] * 10, "condition": "sys",
    ...                     "correct": [1] * 9 + [0] + [1] * 5 + [0] * 5})
    >>> table = participant_accuracy(abx)
    >>> table["accuracy"].tolist(), table["pval"].round(4).tolist()
    ([0.9, 0.5], [0.0107, 0.623])
    """
    grouped = abx.groupby(["condition", "participant"], observed=True)["correct"]
    table = grouped.agg(n="size", correct="sum").reset_index()
    table["accuracy"] = table["correct"] / table["n"]
    # binom.sf(k - 1) = P(X >= k): vectorised, same as binomtest(..., "greater").
    table["pval"] = stats.binom.sf(table["correct"] - 1, table["n"], chance)
    return table


def wald_interval(
    estimate: float | np.ndarray, se: float | np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wald interval ``estimate +- z * se`` (normal quantile ``z``), on the model's scale.

    Reference: Agresti (2013), *Categorical Data Analysis*, 3rd ed., sec. 1.3.3.

    >>> [round(float(x), 4) for x in wald_interval(0.4, 0.1)]
    [0.204, 0.596]
    """
    z = stats.norm.ppf(1 - (1 - confidence) / 2)
    est, err = np.asarray(estimate, dtype=float), np.asarray(se, dtype=float)
    return est - z * err, est + z * err


def wald_pval_greater(estimate: float | np.ndarray, se: float | np.ndarray) -> np.ndarray:
    """One-sided Wald z test of H0: coefficient <= 0 against H1: coefficient > 0.

    For a logit, H1 is "accuracy above 0.5". Reference: Agresti (2013), sec. 1.3.1.

    >>> round(float(wald_pval_greater(0.329, 0.2)), 4)  # z = 1.645
    0.05
    """
    return stats.norm.sf(np.asarray(estimate, dtype=float) / np.asarray(se, dtype=float))


def wald_tost(
    estimate: float | np.ndarray, se: float | np.ndarray, low: float, high: float
) -> np.ndarray:
    """TOST p-value that a coefficient lies within ``(low, high)``, from Wald z tests.

    The larger of the one-sided p-values of H0: coef <= low and H0: coef >= high; below
    alpha exactly when the ``1 - 2 alpha`` Wald interval lies inside the bounds
    (Schuirmann 1987, J Pharmacokin Biopharm 15:657).

    >>> round(float(wald_tost(0.1, 0.2, -0.4055, 0.4055)), 4)  # logit(0.4), logit(0.6)
    0.0633
    """
    est, err = np.asarray(estimate, dtype=float), np.asarray(se, dtype=float)
    return np.maximum(stats.norm.sf((est - low) / err), stats.norm.cdf((est - high) / err))


def mixed_logistic(
    abx: pd.DataFrame,
    unit: str = "source",
    margin: float = 0.1,
    alpha: float = 0.05,
    confidence: float = 0.95,
    lapse_share: float = LAPSE_SHARE,
) -> pd.DataFrame:
    """Verdicts per condition from the logistic mixed model fitted by lme4 (all participants).

    ``correct ~ 0 + condition`` with random effects for participant and stimulus ``unit``
    (source or segment), the structure chosen down :data:`analysis.lme4.ABX_LADDER`; Laplace
    maximum likelihood (``lme4::glmer``). Each condition's logit is the log-odds of a correct
    answer for a *typical* listener on a typical stimulus (random effects at 0). On it:

    * ``ci_low``/``ci_high``: 95% Wald interval on the logit scale, transformed to accuracy,
      with t quantiles on the degrees of freedom ``df`` of :func:`component_df` (Welch-
      Satterthwaite, at most the condition's sources - 1) in place of z (z undercovered with
      8-16 sources: see docs/analysis.md, Calibration design by design);
    * ``pval``: one-sided Wald t test of accuracy > 0.5 ("distinguishable"); ``pval_z`` is
      the plain Wald z p-value, for comparison;
    * ``tost_pval``: Wald t TOST that accuracy lies within ``tost_low``..``tost_high``, the
      margin shrunk by ``lapse_share``: ``0.5 +- margin x (1 - lapse_share)``
      ("indistinguishable within the margin, even if up to ``lapse_share`` of the listeners
      answered at random"), bounds transformed to the logit scale; the plain TOST at
      ``0.5 +- margin`` is ``tost_pval_all_listened`` (verdict ``equivalent_if_all_listened``);
      ``ci_low_lapses``/``ci_high_lapses`` widen the interval the same way (:func:`undo_lapses`);
    * ``dprime`` with ``dprime_low``/``dprime_high``: the ABX d' of the accuracy and of its
      interval's ends (d' is monotone in accuracy, so the interval carries over);
    * Holm across conditions for both tests (``pval_holm``, ``tost_pval_holm``).

    Averaging over listeners pulls accuracy towards 0.5, so the population-average accuracy
    (``marginal_accuracy``, Gauss-Hermite over the fitted variances, a point estimate) lies
    between 0.5 and ``accuracy``: equivalence for the typical listener implies it for the
    population average. Worked example with known truth: tests/analysis/test_analysis_lme4.py
    and the calibration in docs/analysis.md (a GLMM fit is too slow for a docstring).
    References: Baayen, Davidson & Bates (2008), J Mem Lang 59:390 (crossed random effects);
    Bates et al. (2015), J Stat Softw 67(1) (lme4).
    """
    from analysis import lme4

    job, conditions = lme4.abx_job(abx, unit=unit)
    fit = lme4.run_jobs([job])[0][None]
    if fit is None:
        raise RuntimeError("no random-effect structure of the realism GLMM could be fitted")
    return glmm_verdicts(fit, conditions, unit, margin, alpha, confidence,
                         lapse_share=lapse_share)


def glmm_verdicts(
    fit,
    conditions: list[str],
    unit: str = "source",
    margin: float = 0.1,
    alpha: float = 0.05,
    confidence: float = 0.95,
    chance: float = CHANCE,
    lapse_share: float = LAPSE_SHARE,
) -> pd.DataFrame:
    """Turn a fitted realism GLMM (:class:`analysis.lme4.MixedFit`) into the verdict table.

    Split from :func:`mixed_logistic` so that the calibration applies the very same rules
    to hundreds of simulated studies fitted in one R session.
    """
    from analysis import lme4

    estimates = condition_estimates(fit, conditions)
    logit, se, df = (estimates[column].to_numpy() for column in ("logit", "se", "df"))
    table = pd.concat([estimates[["condition"]],
                       logit_inference(logit, se, df, margin, confidence, chance, lapse_share)],
                      axis=1)
    table["pval_z"] = wald_pval_greater(logit, se)
    table["dprime"] = dprime_abx(table["accuracy"].to_numpy())
    table["dprime_low"] = dprime_abx(table["ci_low"].to_numpy())
    table["dprime_high"] = dprime_abx(table["ci_high"].to_numpy())
    table["marginal_accuracy"] = [
        _marginal_accuracy(value, _random_variance(fit, name, conditions))
        for value, name in zip(logit, table["condition"], strict=True)
    ]
    # sightsound_stats' Holm (equal to statsmodels' multipletests, tested), which unlike
    # multipletests does not run the garbage collector on every call: the planning tables
    # apply these rules to thousands of stored fits.
    holm = sightsound_stats.holm_adjust
    table["pval_holm"] = holm(table["pval"].tolist())
    table["tost_pval_holm"] = holm(table["tost_pval"].tolist())
    table["distinguishable"] = table["pval_holm"] < alpha
    table["equivalent"] = table["tost_pval_holm"] < alpha
    table["equivalent_if_all_listened"] = np.array(
        holm(table["tost_pval_all_listened"].tolist())) < alpha
    table["lapse_share"] = lapse_share
    # From the data when the chosen structure has no term for them (still analysed).
    table["participants"] = fit.groups.get("participant",
                                           fit.extra.get("data_participants", np.nan))
    table["units"] = fit.groups.get("unit", fit.extra.get("data_units", np.nan))
    table["answers"] = fit.extra.get("answers", np.nan)
    table["model"] = fit.model
    table["formula"] = lme4.formula_text(fit, "correct", unit)
    table["singular"] = fit.singular
    table["model_choice"] = fit.reason
    return table


def condition_estimates(fit, conditions: list[str]) -> pd.DataFrame:
    """Each condition's logit, its standard error and degrees of freedom
    (:func:`component_df`) from a fitted realism GLMM: all that :func:`logit_inference`
    needs, and what the planning tables store per simulated study (:mod:`analysis.power`)."""
    from analysis import lme4

    coefs = fit.coefficients.assign(
        condition=[lme4.term_condition(t, conditions) for t in fit.coefficients["term"]]
    ).dropna(subset=["condition"])
    logit, se = coefs["estimate"].to_numpy(), coefs["se"].to_numpy()
    names = coefs["condition"].tolist()
    df = [component_df(fit, name, conditions, s) for name, s in zip(names, se, strict=True)]
    return pd.DataFrame({"condition": names, "logit": logit, "se": se, "df": df})


def logit_inference(
    logit: np.ndarray,
    se: np.ndarray,
    df: np.ndarray,
    margin: float = 0.1,
    confidence: float = 0.95,
    chance: float = CHANCE,
    lapse_share: float = LAPSE_SHARE,
) -> pd.DataFrame:
    """The realism verdicts' tests and intervals from each condition's logit, its standard
    error and degrees of freedom: what :func:`glmm_verdicts` states per condition, and what
    the planning tables recompute from stored estimates (:mod:`analysis.power`) when only the
    margin or the lapse share changes. Columns as in :func:`mixed_logistic`, before Holm.

    >>> row = logit_inference(np.array([0.2]), np.array([0.1]), np.array([15.0])).iloc[0]
    >>> [round(float(row[name]), 4) for name in ("accuracy", "pval", "tost_pval")]
    [0.5498, 0.032, 0.1613]
    """
    logit, se, df = (np.asarray(x, dtype=float) for x in (logit, se, df))
    # t(df) in place of z: with 8-16 sources the stimulus variance, estimated from those few
    # sources, carries much of a logit's standard error; z intervals then covered the truth in
    # 90-92% of simulated studies (docs/analysis.md, Calibration design by design).
    quantile = stats.t.ppf(1 - (1 - confidence) / 2, df)

    def tost(half_width: float) -> np.ndarray:
        low, high = _logit(np.array([chance - half_width, chance + half_width]))
        return np.maximum(stats.t.sf((logit - low) / se, df), stats.t.cdf((logit - high) / se, df))

    # The equivalence verdict must survive listeners who answer at random: a share s of them
    # moves an accuracy p to (1 - s) p + s / 2, towards chance, so "within the margin for
    # the listeners who listened" needs the observed accuracy within (1 - s) x margin.
    robust_margin = margin * (1 - lapse_share)
    ci_low, ci_high = _expit(logit - quantile * se), _expit(logit + quantile * se)
    return pd.DataFrame({
        "logit": logit,
        "se": se,
        "df": df,
        "accuracy": _expit(logit),
        "ci_low": ci_low,
        "ci_high": ci_high,
        "ci_low_lapses": undo_lapses(ci_low, lapse_share, chance, side="low"),
        "ci_high_lapses": undo_lapses(ci_high, lapse_share, chance, side="high"),
        "pval": stats.t.sf(logit / se, df),
        "tost_low": chance - robust_margin,
        "tost_high": chance + robust_margin,
        "tost_pval": tost(robust_margin),
        "tost_pval_all_listened": tost(margin),
    })


def component_df(fit, condition: str, conditions: list[str], se: float) -> float:
    """Degrees of freedom of a GLMM condition logit: Welch-Satterthwaite, at most sources - 1.

    The squared standard error is split into the listener part ``v_p = (listener variances
    on this condition) / P``, the stimulus part ``v_u = (unit + clip variances) / U`` and the
    rest (binomial noise, treated as known); then ``df = se^4 / (v_p^2 / (P - 1) + v_u^2 /
    (U - 1))``, the Welch-Satterthwaite formula with each variance estimated on its number of
    levels minus one. That df is then capped at ``U_c - 1``, ``U_c`` the stimulus units the
    condition was heard on: a condition's accuracy generalises over its stimuli, and a mean
    over ``U_c`` of them has at most ``U_c - 1`` df (the between-cluster df of Li & Redden's
    between-within method, or SAS's containment df). The cap is needed because the fitted
    stimulus variance is the least reliable part: from 8-16 sources ML underestimates it or
    sets it to zero (a singular fit the ladder then drops), and Welch's df, fed with that
    estimate, grows as the estimate shrinks. In simulations of the planning designs (200
    studies each) Welch alone called a condition at chance "distinguishable" in 7-9 % of
    studies with 8-16 sources and 80-160 listeners (intervals covering in 90-92 %); with the
    cap 4.5-7 % (92-100 %); docs/analysis.md, Calibration design by design.
    References: Satterthwaite (1946), Biometrics Bull 2:110; Welch (1947), Biometrika 34:28;
    Li & Redden (2015), BMC Med Res Methodol 15:38.

    >>> from types import SimpleNamespace
    >>> fit = SimpleNamespace(groups={"participant": 60, "unit": 8}, extra={},
    ...     variance=pd.DataFrame({"grp": ["participant", "unit"], "var1": ["(Intercept)"] * 2,
    ...                            "var2": [None] * 2, "vcov": [0.25, 0.09]}))
    >>> round(component_df(fit, "sys", ["sys"], se=0.13), 1)  # Welch 15.5, capped at 8 - 1
    7.0
    """
    code = f"condition{_code(condition, conditions)}"
    people = fit.groups.get("participant", 0)
    units = fit.groups.get("unit", 0)
    v_people = v_units = 0.0
    for row in fit.variance.itertuples():
        if isinstance(row.var2, str) or row.var1 not in ("(Intercept)", code):
            continue  # a covariance, or another condition's variance
        if row.grp.startswith("participant") and people:
            v_people += float(row.vcov) / people
        elif row.grp.startswith("unit") and units:
            v_units += float(row.vcov) / units
    denominator = (v_people**2 / (people - 1) if people > 1 else 0.0) + (
        v_units**2 / (units - 1) if units > 1 else 0.0)
    welch = float(se**4 / denominator) if denominator > 0 else float("inf")
    heard_on = (fit.extra.get("data_units_by_condition") or {}).get(
        _code(condition, conditions), fit.extra.get("data_units") or units)
    return min(welch, float(heard_on - 1)) if heard_on and heard_on > 1 else welch


def undo_lapses(
    accuracy: float | np.ndarray, share: float, chance: float = CHANCE, side: str = "high"
) -> np.ndarray:
    """The end of an accuracy interval widened for up to ``share`` random responders.

    With a share ``s`` of listeners answering at random, the observed accuracy is
    ``(1 - s) p + s chance``; so the listeners who listened have ``p = chance + (observed -
    chance) / (1 - s)``, further from chance. Over every ``s`` from 0 to ``share`` an interval's
    upper end moves up only when above chance (``side="high"``) and its lower end down only
    when below (``side="low"``): the union of the intervals, clipped to [0, 1]. This is the
    lapse (guessing) correction of psychophysics (Wichmann & Hill 2001, Percept Psychophys
    63:1293, whose lapse rate moves the asymptote the same way) applied to whole listeners.

    >>> [round(float(x), 4) for x in undo_lapses(np.array([0.45, 0.59]), 0.15, side="high")]
    [0.45, 0.6059]
    >>> round(float(undo_lapses(0.45, 0.15, side="low")), 4)
    0.4412
    """
    value = np.asarray(accuracy, dtype=float)
    widened = chance + (value - chance) / (1 - share)
    moved = np.where(widened > value, widened, value) if side == "high" else np.where(
        widened < value, widened, value)
    return np.clip(moved, 0.0, 1.0)


def _code(condition: str, conditions: list[str]) -> str:
    return f"c{conditions.index(condition)}"


def _random_variance(fit, condition: str, conditions: list[str]) -> float:
    """Variance of the listener + stimulus random effects on one condition's logit."""
    code = _code(condition, conditions)
    total = 0.0
    for row in fit.variance.itertuples():
        if row.var2 is not None and isinstance(row.var2, str):
            continue  # a covariance, not a variance
        if row.var1 in ("(Intercept)", f"condition{code}"):
            total += float(row.vcov)
    return total


def _marginal_accuracy(logit: float, variance: float) -> float:
    """E[expit(logit + b)], b ~ N(0, variance): 40-point Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    return float(np.sum(weights * _expit(logit + np.sqrt(variance) * nodes)) / weights.sum())


def summarize(
    abx: pd.DataFrame,
    margin: float = 0.1,
    alpha: float = 0.05,
    confidence: float = 0.95,
    chance: float = CHANCE,
) -> pd.DataFrame:
    """Descriptive pooled statistics per generated condition: accuracy, intervals, d', listeners.

    Every answer is treated as independent, which listeners and stimuli that differ make
    false: in simulations the pooled binomial test called a truly-chance condition
    "distinguishable" in 17.5% of studies and the pooled TOST called a condition on the
    margin "equivalent" in 22% (issue 15). The verdicts therefore come from the mixed model
    (:func:`mixed_logistic`); the pooled tests stay as descriptives, named ``pooled_*``.
    ``pval`` (exact one-sided binomial) is Holm-corrected across conditions (``pval_holm``,
    statsmodels ``multipletests``), as is the TOST p-value (``tost_pval_holm``).
    ``share_above_chance`` is the share of listeners whose own answers beat chance at ``alpha``.
    """
    people = participant_accuracy(abx, chance)
    records = []
    for condition, rows in abx.groupby("condition", observed=True):
        n, k = len(rows), int(rows["correct"].sum())
        wilson = wilson_interval(k, n, confidence)
        exact = clopper_pearson_interval(k, n, confidence)
        tost = tost_proportion(k, n, margin, chance)
        listeners = people[people["condition"] == condition]
        records.append({
            "condition": condition,
            "n": n,
            "correct": k,
            "accuracy": k / n,
            "wilson_low": wilson[0],
            "wilson_high": wilson[1],
            "cp_low": exact[0],
            "cp_high": exact[1],
            "pval": binomial_test(k, n, chance),
            "dprime": dprime_abx(k / n),
            "tost_low": tost["low"],
            "tost_high": tost["high"],
            "tost_pval": tost["pval"],
            "participants": len(listeners),
            "mean_participant_accuracy": listeners["accuracy"].mean(),
            "share_above_chance": float((listeners["pval"] < alpha).mean()),
        })
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return table
    table["pval_holm"] = multipletests(table["pval"], alpha=alpha, method="holm")[1]
    table["tost_pval_holm"] = multipletests(table["tost_pval"], alpha=alpha, method="holm")[1]
    table["pooled_distinguishable"] = table["pval_holm"] < alpha
    table["pooled_equivalent"] = table["tost_pval_holm"] < alpha
    return table


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    return np.log(p / (1 - p))


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x)))
