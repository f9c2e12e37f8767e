"""Realism: can listeners tell a generated clip from the real recording in ABX trials?

Every function takes plain numbers or the tidy ABX rows from :func:`analysis.load.abx_trials`
(one row per answer, columns ``participant``, ``source``, ``condition``, ``correct``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, sparse, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

CHANCE = 0.5


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (wraps statsmodels ``proportion_confint``).

    Reference: Wilson (1927), JASA 22:209-212; Newcombe (1998), Stat Med 17:857-872, Table I.

    >>> [round(x, 4) for x in wilson_interval(81, 263)]
    [0.2553, 0.3662]
    """
    low, high = proportion_confint(successes, trials, alpha=1 - confidence, method="wilson")
    return float(low), float(high)


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


def mixed_logistic(
    abx: pd.DataFrame, max_participants: int | None = 300, seed: int = 0
) -> pd.DataFrame:
    """Logistic mixed model: correct ~ 0 + condition, random participant and source intercepts.

    Fitted with statsmodels' ``BinomialBayesMixedGLM`` (variational Bayes, Gaussian priors),
    because statsmodels has no maximum-likelihood GLMM with *crossed* random effects; both
    effects are variance components of one design, so participant and source are crossed.
    The summary is the posterior mean and standard deviation of each condition's logit; ``pval``
    is the one-sided normal tail of mean/sd (logit > 0 means better than chance), an approximate
    counterpart to the Wald test of a frequentist GLMM.

    The fit scales poorly with participants (about 2 s for 100, 5 s for 200, 20 s for 400 and
    minutes for 1,000 on a 2-core machine), so above ``max_participants`` (default 300) a
    seeded random subset of participants is used; ``participants_used`` says how many.
    Worked example with known truth: tests/analysis/test_analysis_simulated_study.py (too slow for a
    docstring).
    Reference: Baayen, Davidson & Bates (2008), J Mem Lang 59:390 (crossed random effects).
    """
    from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

    people = np.sort(abx["participant"].unique())
    if max_participants is not None and len(people) > max_participants:
        people = np.random.default_rng(seed).choice(people, max_participants, replace=False)
        abx = abx[abx["participant"].isin(people)]
    conditions = sorted(abx["condition"].unique())
    condition_codes = pd.Categorical(abx["condition"], categories=conditions).codes
    exog = np.eye(len(conditions))[condition_codes]
    participant_codes, participant_names = pd.factorize(abx["participant"])
    source_codes, source_names = pd.factorize(abx["source"])
    rows = np.arange(len(abx))
    ones = np.ones(len(abx))
    # Indicator columns, built sparse: a dense formula design would be rows x participants.
    exog_vc = sparse.hstack([
        sparse.csr_array((ones, (rows, codes)), shape=(len(abx), len(names)))
        for codes, names in ((participant_codes, participant_names), (source_codes, source_names))
    ]).tocsr()
    ident = np.r_[np.zeros(len(participant_names), int), np.ones(len(source_names), int)]
    model = BinomialBayesMixedGLM(
        abx["correct"].to_numpy(float), exog, exog_vc, ident, vcp_p=1.0, fe_p=2.0,
        fep_names=conditions, vcp_names=["participant", "source"],
    )
    fit = model.fit_vb()
    mean, sd = fit.fe_mean, fit.fe_sd
    z = stats.norm.ppf(0.975)
    return pd.DataFrame({
        "condition": conditions,
        "logit": mean,
        "logit_sd": sd,
        "accuracy": _expit(mean),
        "ci_low": _expit(mean - z * sd),
        "ci_high": _expit(mean + z * sd),
        "pval": stats.norm.sf(mean / sd),
        "participant_sd": float(np.exp(fit.vcp_mean[0])),
        "source_sd": float(np.exp(fit.vcp_mean[1])),
        "participants_used": abx["participant"].nunique(),
    })


def summarize(
    abx: pd.DataFrame,
    margin: float = 0.1,
    alpha: float = 0.05,
    confidence: float = 0.95,
    chance: float = CHANCE,
) -> pd.DataFrame:
    """One row per generated condition: accuracy, intervals, tests, d', TOST, listeners.

    ``pval`` (exact one-sided binomial, pooled answers) is Holm-corrected across conditions
    (``pval_holm``, statsmodels ``multipletests``), as is the TOST p-value (``tost_pval_holm``).
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
    table["distinguishable"] = table["pval_holm"] < alpha
    table["equivalent"] = table["tost_pval_holm"] < alpha
    return table


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x)))
