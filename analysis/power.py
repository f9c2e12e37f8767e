"""Power planning: how many participants x trials a study needs.

Two questions, each answered analytically and by simulating the design:

* ABX: detect that listeners beat chance when their mean accuracy is ``accuracy``.
  Listeners differ, so trials of one listener are correlated; the analytic answer uses the
  design effect ``1 + (trials - 1) * icc`` (Kish 1965) on the pooled-proportion z test, the
  simulation draws each listener's accuracy from a logit-normal distribution and tests the
  listeners' accuracies against 0.5 with a one-sided t test (valid under that clustering).
  The two agree when ``icc`` matches the listener spread: a logit SD ``s`` around accuracy
  ``p`` gives roughly ``icc = s**2 * p * (1 - p)`` (0.038 for s = 0.4, p = 0.6).
* Ratings: detect a mean rating difference ``difference`` between a condition and the
  reference, each listener rating ``trials`` clips of each; paired t test over listeners.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def abx_power(
    accuracy: float, participants: int, trials: int, icc: float = 0.05, alpha: float = 0.05
) -> float:
    """Analytic power of the one-sided test "accuracy > 0.5" with clustered answers.

    Reference: normal approximation to the binomial (Chow, Shao & Wang 2008, *Sample Size
    Calculations in Clinical Research*, sec. 4.1) with Kish's (1965) design effect.

    >>> round(abx_power(0.6, participants=30, trials=20), 3)
    0.971
    """
    deff = 1 + (trials - 1) * icc
    n_effective = participants * trials / deff
    z_alpha = stats.norm.ppf(1 - alpha)
    spread = np.sqrt(accuracy * (1 - accuracy))
    z = ((accuracy - 0.5) * np.sqrt(n_effective) - z_alpha * 0.5) / spread
    return float(stats.norm.cdf(z))


def abx_participants_needed(
    accuracy: float, trials: int, power: float = 0.8, icc: float = 0.05, alpha: float = 0.05
) -> int:
    """Smallest number of participants reaching ``power`` (analytic, see :func:`abx_power`).

    >>> abx_participants_needed(0.6, trials=20)
    15
    """
    for participants in range(2, 100_000):
        if abx_power(accuracy, participants, trials, icc, alpha) >= power:
            return participants
    raise ValueError("more than 100,000 participants needed")


def simulate_abx_power(
    accuracy: float,
    participants: int,
    trials: int,
    participant_sd: float = 0.4,
    alpha: float = 0.05,
    n_simulations: int = 2000,
    seed: int = 0,
) -> float:
    """Power by simulating the design: logit-normal listeners, one-sided t test over listeners.

    ``participant_sd`` is the SD of listeners' logit accuracy around ``logit(accuracy)``.
    All simulated studies are drawn at once (arrays of n_simulations x participants).
    """
    rng = np.random.default_rng(seed)
    logit = np.log(accuracy / (1 - accuracy))
    skill = logit + rng.normal(0, participant_sd, (n_simulations, participants))
    correct = rng.binomial(trials, 1 / (1 + np.exp(-skill))) / trials
    t, p_two = stats.ttest_1samp(correct, 0.5, axis=1)
    p_one = np.where(t > 0, p_two / 2, 1 - p_two / 2)
    return float(np.mean(np.nan_to_num(p_one, nan=1.0) < alpha))


def rating_power(
    difference: float,
    participants: int,
    trials: int,
    rating_sd: float = 1.5,
    interaction_sd: float = 0.5,
    alpha: float = 0.05,
) -> float:
    """Analytic power of a two-sided paired t test on listeners' mean rating differences.

    A listener's difference of means has SD ``sqrt(2 * rating_sd**2 / trials + interaction_sd**2)``
    (``interaction_sd``: listeners disagree about the condition's effect). Power from the
    noncentral t distribution (Cohen 1988, *Statistical Power Analysis*, ch. 2).

    >>> round(rating_power(0.5, participants=40, trials=6), 3)
    0.869
    """
    sd = np.sqrt(2 * rating_sd**2 / trials + interaction_sd**2)
    df = participants - 1
    noncentrality = difference / sd * np.sqrt(participants)
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df,
                                                                            noncentrality))


def rating_participants_needed(
    difference: float, trials: int, power: float = 0.8, rating_sd: float = 1.5,
    interaction_sd: float = 0.5, alpha: float = 0.05,
) -> int:
    """Smallest number of participants for :func:`rating_power` to reach ``power``."""
    for participants in range(3, 100_000):
        if rating_power(difference, participants, trials, rating_sd, interaction_sd,
                        alpha) >= power:
            return participants
    raise ValueError("more than 100,000 participants needed")


def simulate_rating_power(
    difference: float,
    participants: int,
    trials: int,
    rating_sd: float = 1.5,
    interaction_sd: float = 0.5,
    participant_sd: float = 1.0,
    alpha: float = 0.05,
    n_simulations: int = 2000,
    seed: int = 0,
) -> float:
    """Power by simulating 9-point ratings (rounded and clipped, as listeners answer).

    Each listener has a bias (``participant_sd``) shared by both conditions and their own view of
    the condition's effect (``interaction_sd``); every rating adds noise (``rating_sd``).
    """
    rng = np.random.default_rng(seed)
    shape = (n_simulations, participants)
    bias = 5 + rng.normal(0, participant_sd, shape)
    effect = difference + rng.normal(0, interaction_sd, shape)

    def ratings(centre: np.ndarray) -> np.ndarray:
        noise = rng.normal(0, rating_sd, (*shape, trials))
        return np.clip(np.rint(centre[..., None] + noise), 1, 9).mean(axis=2)

    diff = ratings(bias + effect) - ratings(bias)
    _, pval = stats.ttest_1samp(diff, 0.0, axis=1)
    return float(np.mean(np.nan_to_num(pval, nan=1.0) < alpha))


def power_grid(
    accuracy: float,
    participants: list[int],
    trials: list[int],
    participant_sd: float = 0.4,
    icc: float = 0.05,
    alpha: float = 0.05,
    n_simulations: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """ABX power over a grid of participants x trials, analytic and simulated side by side."""
    records = [
        {"participants": n, "trials": m,
         "power_analytic": abx_power(accuracy, n, m, icc, alpha),
         "power_simulated": simulate_abx_power(accuracy, n, m, participant_sd, alpha,
                                               n_simulations, seed)}
        for n in participants for m in trials
    ]
    return pd.DataFrame.from_records(records)


def simulate_glmm_power(
    accuracy: float,
    participants: int,
    sources: int = 8,
    repeats: int = 2,
    margin: float = 0.1,
    alpha: float = 0.05,
    n_simulations: int = 100,
    seed: int = 0,
    cores: int = 2,
    **variability: float,
) -> dict[str, float]:
    """Power of the report's realism verdicts, by simulating and refitting the mixed model.

    The approach of R's simr (Green & MacLeod 2016, Methods Ecol Evol 7:493): draw studies from
    the GLMM with the given truth (:class:`analysis.calibration.CalibrationDesign`; keyword
    ``variability`` overrides its SDs, e.g. ``participant_sd=0.7``), fit each with lme4 down the
    same ladder as the report, and count the verdicts. One condition at ``accuracy`` (of a
    typical listener) heard by ``participants`` listeners, ``repeats`` times per source.
    Returns the share of studies called distinguishable and called equivalent within
    ``margin``, with the Monte Carlo standard error of a share. Slow (an R fit per study), so
    no worked example here; see tests/analysis/test_analysis_lme4.py.
    """
    from analysis import lme4, realism
    from analysis.calibration import CalibrationDesign, simulate_studies

    design = CalibrationDesign(participants=participants, sources=sources, abx_repeats=repeats,
                               abx_accuracy={"target": accuracy}, **variability)
    abx, _ = simulate_studies(design, n_simulations, seed)
    job, conditions = lme4.abx_job(abx, unit="source", by="study")
    fits = [f for f in lme4.run_jobs([job], cores=cores)[0].values() if f is not None]
    verdicts = pd.concat([realism.glmm_verdicts(f, conditions, "source", margin, alpha)
                          for f in fits])
    n = len(fits)
    share = {"distinguishable": float(verdicts["distinguishable"].mean()),
             "equivalent": float(verdicts["equivalent"].mean())}
    return {"power_distinguishable": share["distinguishable"],
            "power_equivalent": share["equivalent"],
            "mc_se": float(np.sqrt(0.25 / n)), "simulations": n,
            "failed_fits": n_simulations - n}
