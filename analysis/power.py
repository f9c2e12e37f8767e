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

from analysis.calibration import CalibrationDesign, simulate_studies


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


def fit_simulated_studies(
    design: CalibrationDesign, outcome: str, n_simulations: int, seed: int, cores: int = 2,
) -> tuple[list[str], list]:
    """Draw ``n_simulations`` studies of ``design`` and fit each as the report does: the ABX
    answers (``outcome`` "abx") by the realism GLMM's ladder, or one rating dimension
    (``"valence"``) by the rating LMM's, all in one R run. Returns the condition order of the
    fits and the :class:`analysis.lme4.MixedFit` of every study that could be fitted (a study
    whose every rung failed is left out: the callers count it as a failed fit)."""
    from analysis import lme4

    abx, ratings = simulate_studies(design, n_simulations, seed)
    if outcome == "abx":
        job, conditions = lme4.abx_job(abx, unit="source", by="study")
    else:
        job, conditions = lme4.rating_job(ratings, outcome, unit="source", by="study")
    fits = [f for f in lme4.run_jobs([job], cores=cores)[0].values() if f is not None]
    return conditions, fits


def simulated_realism_verdicts(
    design: CalibrationDesign, n_simulations: int, seed: int, margin: float = 0.1,
    alpha: float = 0.05, cores: int = 2,
) -> tuple[pd.DataFrame, int]:
    """Draw ``n_simulations`` studies of ``design`` and fit each as the report does.

    Returns the report's realism verdict rows of every study that could be fitted (raw
    ``pval``, ``tost_pval``, intervals) and the number of studies fitted: the shared step of
    the realism power functions below (simr's approach, Green & MacLeod 2016).
    """
    from analysis import realism

    conditions, fits = fit_simulated_studies(design, "abx", n_simulations, seed, cores)
    verdicts = pd.concat([realism.glmm_verdicts(f, conditions, "source", margin, alpha)
                          for f in fits])
    return verdicts, len(fits)


def simulated_rating_shifts(
    design: CalibrationDesign, n_simulations: int, seed: int, cores: int = 2,
) -> tuple[pd.DataFrame, int]:
    """The rating counterpart of :func:`simulated_realism_verdicts`: the valence shift rows
    (against the reference) of every simulated study the report's rating ladder could fit."""
    from analysis import agreement

    conditions, fits = fit_simulated_studies(design, "valence", n_simulations, seed, cores)
    shifts = pd.concat([agreement.rating_shifts(f, conditions, "valence", "source")
                        for f in fits])
    return shifts, len(fits)


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
    design = CalibrationDesign(participants=participants, sources=sources, abx_repeats=repeats,
                               abx_accuracy={"target": accuracy}, **variability)
    verdicts, n = simulated_realism_verdicts(design, n_simulations, seed, margin, alpha, cores)
    return {"power_distinguishable": float(verdicts["distinguishable"].mean()),
            "power_equivalent": float(verdicts["equivalent"].mean()),
            "mc_se": float(np.sqrt(0.25 / n)), "simulations": n,
            "failed_fits": n_simulations - n}


def simulate_lmm_power(
    shift: float,
    participants: int,
    sources: int = 8,
    repeats: int = 1,
    alpha: float = 0.05,
    n_simulations: int = 100,
    seed: int = 0,
    cores: int = 2,
    **variability: float,
) -> dict[str, float]:
    """Power of the report's rating-shift test, by simulating and refitting the crossed LMM.

    The counterpart of :func:`simulate_glmm_power` for ratings (simr's approach, Green &
    MacLeod 2016): studies are drawn from the linear mixed model of
    :class:`analysis.calibration.CalibrationDesign` (listener, listener x condition, source and
    clip random effects, residual noise; 1-9 ratings rounded and clipped), one generated
    condition shifted by ``shift`` points against the reference, every listener rating every
    (source, condition) cell ``repeats`` times; keyword ``variability`` overrides the SDs
    (``rating_unit_sd=0.5``, ``rating_clip_sd=0.6``, ...). Each study is refitted by lme4 down
    the report's :data:`analysis.lme4.RATING_LADDER` (REML, Satterthwaite t), in one R session.

    :func:`simulate_rating_power` (paired t over listeners) ignores the clip variance, which a
    shift has to generalise over: with few sources this simulation gives the lower, honest
    power. Returns the share of studies whose two-sided test has p < ``alpha``
    (``power_shifted``), the share also in the true direction (``power_right_direction``),
    the coverage of the 95% intervals and the mean estimate (both checks of the model), the
    Monte Carlo SE of a share (at most ``sqrt(0.25 / n)``), and the numbers of simulations and
    failed fits. Slow (an R fit per study), so no worked example here; see
    tests/analysis/test_analysis_power.py.
    """
    design = CalibrationDesign(participants=participants, sources=sources,
                               rating_repeats=repeats, abx_repeats=1,
                               abx_accuracy={"unused": 0.5},
                               rating_shift={"reference": 0.0, "target": shift}, **variability)
    shifts, n = simulated_rating_shifts(design, n_simulations, seed, cores)
    significant = shifts["pval"] < alpha
    right_way = np.sign(shifts["coef"]) == np.sign(shift) if shift else significant
    return {"power_shifted": float(significant.mean()),
            "power_right_direction": float((significant & right_way).mean()),
            "coverage": float(((shifts["ci_low"] <= shift) & (shift <= shifts["ci_high"])).mean()),
            "mean_estimate": float(shifts["coef"].mean()),
            "mc_se": float(np.sqrt(0.25 / n)), "simulations": n,
            "failed_fits": n_simulations - n}


# The truths a planning table is simulated at: a condition listeners cannot tell from the real
# recording (equivalence power; its "distinguishable" share is the false-positive rate), one
# on the default equivalence margin, and a clearly audible one.
PLANNING_ACCURACIES = (0.5, 0.6, 0.7)
# The true valence shifts (scale points, against the reference) a rating table is simulated
# at: none (its "shifted" share is the false-positive rate), moderate and large for a 1-9 scale.
PLANNING_SHIFTS = (0.0, 0.5, 1.0)


def realism_truth(accuracies: tuple[float, ...] = PLANNING_ACCURACIES) -> dict[str, float]:
    """The simulated conditions' names and true accuracies, as the planning fits name them.

    >>> realism_truth((0.5, 0.6))
    {'acc50': 0.5, 'acc60': 0.6}
    """
    return {f"acc{round(100 * a):02d}": a for a in accuracies}


def rating_truth(shifts: tuple[float, ...] = PLANNING_SHIFTS) -> dict[str, float]:
    """The simulated rating conditions' names and true valence shifts, as the fits name them.

    >>> rating_truth((0.0, 0.5))
    {'shift000': 0.0, 'shift050': 0.5}
    """
    return {f"shift{round(100 * d):03d}": d for d in shifts}


def realism_planning_fits(
    participants: int,
    sources: int,
    sources_heard: int,
    repeats: int = 1,
    accuracies: tuple[float, ...] = PLANNING_ACCURACIES,
    n_simulations: int = 100,
    seed: int = 0,
    cores: int = 2,
    **variability: float,
) -> tuple[dict[str, float], list[str], list]:
    """Simulate one planning design and fit every study by lme4 down the report's ladder.

    Returns ``(truth, conditions, fits)``: the true accuracy per condition name, the condition
    order of the fits and the :class:`analysis.lme4.MixedFit` of every study that could be
    fitted. The slow half of :func:`glmm_power_table`, kept apart so that the planning table
    can be recomputed from stored fits when only the verdict rules change
    (scripts/build_power_table.py keeps them in ``.cache/power``).
    """
    names = realism_truth(accuracies)
    design = CalibrationDesign(participants=participants, sources=sources, abx_repeats=repeats,
                               abx_sources_heard=sources_heard, abx_accuracy=names,
                               **variability)
    return names, *fit_simulated_studies(design, "abx", n_simulations, seed, cores)


def realism_estimates(conditions: list[str], fits: list) -> pd.DataFrame:
    """Each fitted study's condition estimates as the verdicts use them: one row per study and
    condition with ``study`` (the fit's position), ``condition``, ``logit``, ``se`` and ``df``
    (:func:`analysis.realism.condition_estimates`). Everything
    :func:`glmm_power_rows_from_estimates` counts is a function of these, so a planning table
    can be recomputed from them for another margin or lapse share without refitting
    (scripts/build_power_table.py stores them beside the table).
    """
    from analysis import realism

    frames = [realism.condition_estimates(fit, conditions).assign(study=study)
              for study, fit in enumerate(fits)]
    columns = ["study", "condition", "logit", "se", "df"]
    return pd.concat(frames)[columns] if frames else pd.DataFrame(columns=columns)


def glmm_power_rows_from_estimates(
    truth: dict[str, float],
    estimates: pd.DataFrame,
    n_simulations: int,
    margin: float = 0.1,
    alpha: float = 0.05,
    max_conditions: int = 6,
    lapse_share: float | None = None,
) -> pd.DataFrame:
    """The verdict shares of :func:`glmm_power_table` from stored estimates
    (:func:`realism_estimates`).

    Per true accuracy: ``distinguishable_k`` and ``equivalent_k`` (the report's verdicts at
    Bonferroni's ``alpha / k``; "equivalent" is the lapse-robust TOST of
    :func:`analysis.realism.glmm_verdicts`), ``equivalent_all_listened_1`` (the plain TOST),
    the coverage of the 95 % interval (``coverage``) and of the interval widened for lapses
    (``coverage_lapses``), the mean estimate, the Monte Carlo SE of a share and the failed fits.
    """
    from analysis import realism

    share = realism.LAPSE_SHARE if lapse_share is None else lapse_share
    verdicts = pd.concat(
        [estimates[["condition"]].reset_index(drop=True),
         realism.logit_inference(estimates["logit"], estimates["se"], estimates["df"], margin,
                                 lapse_share=share)], axis=1)
    studies = estimates["study"].nunique() if len(estimates) else 0
    rows = []
    for name, accuracy in truth.items():
        rows_of = verdicts[verdicts["condition"] == name]
        row = {"accuracy": accuracy}
        for k in range(1, max_conditions + 1):
            row[f"distinguishable_{k}"] = float((rows_of["pval"] < alpha / k).mean())
            row[f"equivalent_{k}"] = float((rows_of["tost_pval"] < alpha / k).mean())
        row["equivalent_all_listened_1"] = float((rows_of["tost_pval_all_listened"]
                                                  < alpha).mean())
        row["coverage"] = float(((rows_of["ci_low"] <= accuracy)
                                 & (accuracy <= rows_of["ci_high"])).mean())
        row["coverage_lapses"] = float(((rows_of["ci_low_lapses"] <= accuracy)
                                        & (accuracy <= rows_of["ci_high_lapses"])).mean())
        row["mean_accuracy"] = float(rows_of["accuracy"].mean())
        row["simulations"] = len(rows_of)
        row["failed_fits"] = n_simulations - studies
        row["mc_se"] = float(np.sqrt(0.25 / max(len(rows_of), 1)))
        rows.append(row)
    return pd.DataFrame(rows)


def glmm_power_table(
    participants: int,
    sources: int,
    sources_heard: int,
    repeats: int = 1,
    accuracies: tuple[float, ...] = PLANNING_ACCURACIES,
    margin: float = 0.1,
    alpha: float = 0.05,
    max_conditions: int = 6,
    n_simulations: int = 100,
    seed: int = 0,
    cores: int = 2,
    **variability: float,
) -> pd.DataFrame:
    """One design's rows of the planning table: realism verdict power per true accuracy.

    Simulates the design the study app schedules (each listener hears ``sources_heard`` of
    the ``sources`` per condition, ``repeats`` times, a different share per listener; see
    :attr:`analysis.calibration.CalibrationDesign.abx_sources_heard`), one condition per
    entry of ``accuracies``, and fits every study by lme4 down the report's ladder
    (:func:`realism_planning_fits`); the shares come from
    :func:`glmm_power_rows_from_estimates`. The
    report corrects across its conditions by Holm; a study with ``k`` generated conditions is
    planned with Bonferroni's ``alpha / k``, Holm's first step and so a lower bound on Holm's
    power (columns ``distinguishable_k``, ``equivalent_k`` for k = 1 .. ``max_conditions``).
    Keyword ``variability`` overrides the design's SDs or adds inattentive listeners
    (``random_responder_share=0.15, dropout_share=0.2``).

    Returns one row per accuracy with the design, those shares, the interval coverage (a
    check of the model on this design), the Monte Carlo SE of a share and the failed fits.
    """
    truth, conditions, fits = realism_planning_fits(
        participants, sources, sources_heard, repeats, accuracies, n_simulations, seed, cores,
        **variability)
    rows = glmm_power_rows_from_estimates(truth, realism_estimates(conditions, fits),
                                          n_simulations, margin, alpha, max_conditions)
    design = {"participants": participants, "sources": sources,
              "sources_heard": sources_heard, "repeats": repeats}
    return pd.concat([pd.DataFrame([design] * len(rows)), rows], axis=1)


def rating_planning_fits(
    participants: int,
    sources: int,
    sources_heard: int,
    shifts: tuple[float, ...] = PLANNING_SHIFTS,
    n_simulations: int = 100,
    seed: int = 0,
    cores: int = 2,
    **variability: float,
) -> tuple[dict[str, float], list[str], list]:
    """The rating counterpart of :func:`realism_planning_fits`: ``(truth, conditions, fits)``
    of one design's simulated studies, each fitted down the report's rating ladder."""
    names = rating_truth(shifts)
    design = CalibrationDesign(participants=participants, sources=sources,
                               rating_sources_heard=sources_heard, rating_repeats=1,
                               abx_repeats=1, abx_accuracy={"unused": 0.5},
                               rating_shift={"reference": 0.0, **names}, **variability)
    return names, *fit_simulated_studies(design, "valence", n_simulations, seed, cores)


def rating_estimates(conditions: list[str], fits: list) -> pd.DataFrame:
    """Each fitted study's valence shifts as the rating verdicts use them: one row per study
    and condition with ``study`` (the fit's position), ``condition``, ``coef``, ``se`` and
    ``df`` (lmerTest's Satterthwaite). The rating counterpart of :func:`realism_estimates`:
    :func:`lmm_power_rows_from_estimates` needs nothing else, so a rating table can be
    recomputed without R (scripts/build_power_table.py stores them beside the table)."""
    from analysis import agreement

    frames = [agreement.rating_shifts(fit, conditions, "valence", "source").assign(study=study)
              for study, fit in enumerate(fits)]
    columns = ["study", "condition", "coef", "se", "df"]
    return pd.concat(frames)[columns] if frames else pd.DataFrame(columns=columns)


def lmm_power_rows_from_estimates(
    truth: dict[str, float],
    estimates: pd.DataFrame,
    n_simulations: int,
    alpha: float = 0.05,
    max_conditions: int = 6,
) -> pd.DataFrame:
    """The shares of :func:`lmm_power_table` from stored estimates (:func:`rating_estimates`):
    per true shift, ``shifted_k`` (two-sided p < ``alpha / k``), the 95 % interval's coverage,
    the Monte Carlo SE of a share and the failed fits."""
    from analysis import agreement

    table = pd.DataFrame({"condition": estimates["condition"].to_numpy(),
                          **agreement.shift_inference(estimates["coef"], estimates["se"],
                                                      estimates["df"])})
    studies = estimates["study"].nunique() if len(estimates) else 0
    rows = []
    for name, shift in truth.items():
        rows_of = table[table["condition"] == name]
        row = {"shift": shift}
        for k in range(1, max_conditions + 1):
            row[f"shifted_{k}"] = float((rows_of["pval"] < alpha / k).mean())
        row["coverage"] = float(((rows_of["ci_low"] <= shift)
                                 & (shift <= rows_of["ci_high"])).mean())
        row["simulations"] = len(rows_of)
        row["failed_fits"] = n_simulations - studies
        row["mc_se"] = float(np.sqrt(0.25 / max(len(rows_of), 1)))
        rows.append(row)
    return pd.DataFrame(rows)


def lmm_power_rows(
    truth: dict[str, float],
    conditions: list[str],
    fits: list,
    n_simulations: int,
    alpha: float = 0.05,
    max_conditions: int = 6,
) -> pd.DataFrame:
    """The shares of :func:`lmm_power_table` from already fitted studies."""
    return lmm_power_rows_from_estimates(truth, rating_estimates(conditions, fits),
                                         n_simulations, alpha, max_conditions)


def lmm_power_table(
    participants: int,
    sources: int,
    sources_heard: int,
    shifts: tuple[float, ...] = PLANNING_SHIFTS,
    alpha: float = 0.05,
    max_conditions: int = 6,
    n_simulations: int = 100,
    seed: int = 0,
    cores: int = 2,
    **variability: float,
) -> pd.DataFrame:
    """One design's rows of the rating planning table: shift-test power per true shift.

    The counterpart of :func:`glmm_power_table` for the report's rating LMM: each listener
    rates ``sources_heard`` of the ``sources`` per condition (the reference is one of the
    conditions, as in the app's emotion-rating block), one condition per entry of ``shifts``
    plus the reference; each study is refitted by lme4 down the report's rating ladder (REML,
    Satterthwaite t; :func:`rating_planning_fits`, :func:`lmm_power_rows`). Columns
    ``shifted_k``: share of studies whose two-sided test has ``p < alpha / k`` (Bonferroni for
    k generated conditions, a lower bound on Holm's power).
    """
    truth, conditions, fits = rating_planning_fits(participants, sources, sources_heard,
                                                   shifts, n_simulations, seed, cores,
                                                   **variability)
    rows = lmm_power_rows(truth, conditions, fits, n_simulations, alpha, max_conditions)
    design = {"participants": participants, "sources": sources,
              "sources_heard": sources_heard}
    return pd.concat([pd.DataFrame([design] * len(rows)), rows], axis=1)
