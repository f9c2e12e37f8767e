"""Owns the report's objective-metrics section: set distances of each condition's clips from the
reference clips (MMD, Frechet, FAD-inf) and how the per-clip metrics predict listeners, from the
table of ``python -m analysis objective`` given to the report (``--objective``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis import agreement
from analysis.rows import abx_trials, rating_trials
from analysis.sections import Context, Section, Tables, register


@register
class Objective(Section):
    name = "objective"
    order = 30
    titles = {
        "objective_vs_listeners": "Objective metrics vs listeners (Spearman per clip)",
        "set_distances": "Each condition's clips against the reference clips (embeddings): the "
        "MMD^2 permutation test is the between-set test (unbiased at any number of clips); the "
        "Frechet distance is biased upwards for small sets (flag), FAD-inf removes that bias "
        "where the sets are large enough to extrapolate",
    }
    legend = {
        "mmd2": "unbiased MMD^2 (Gaussian kernel, median-distance bandwidth); 0 in expectation "
        "for equal distributions, can be negative",
        "mmd2_ci_low": "lower end of the MMD^2 95% interval (permutation null, jackknife-scaled)",
        "mmd2_ci_high": "upper end of the MMD^2 95% interval",
        "mmd_pval": "permutation p-value of MMD^2 = 0 (clips permuted between the sets)",
        "mmd_pval_holm": "the MMD p-value, Holm-corrected across conditions",
        "frechet_distance": "Frechet distance of the embeddings' Gaussians, all clips (biased "
        "upwards for small sets)",
        "frechet_bias_warning": "true when small-set bias is a large share of the Frechet "
        "distance (over 20% by FAD-inf, or too few samples to tell)",
        "fad_inf": "FAD-inf: Frechet distance extrapolated to infinitely many clips",
        "fad_inf_ci_low": "lower end of FAD-inf's 95% jackknife interval",
        "fad_inf_ci_high": "upper end of FAD-inf's 95% jackknife interval",
        "fad_inf_extrapolable": "false when half of a set has no more samples than dimensions: "
        "FAD-inf then keeps much of the bias",
        "reference_clips": "reference clips in the comparison",
    }

    def tables(self, context: Context) -> Tables:
        objective = context.objective
        tables: Tables = {}
        if objective is not None and len(objective):
            tables["objective_vs_listeners"] = objective_vs_listeners(
                objective, abx_trials(context.kept), rating_trials(context.kept))
        if objective is not None and objective.attrs.get("mmd"):
            from analysis.objective import set_distance_table

            tables["set_distances"] = set_distance_table(objective.attrs.get("frechet", {}),
                                                         objective.attrs["mmd"])
        return tables


def objective_vs_listeners(
    objective: pd.DataFrame, abx: pd.DataFrame, ratings: pd.DataFrame
) -> pd.DataFrame:
    """How well each objective metric or cue predicts listeners, clip by clip (Spearman's rho).

    Listener outcomes per generated clip (segment x condition), each against the reference clip
    of its segment: ABX accuracy; ``rating_distance``, the distance in (valence, arousal) between
    the mean ratings; ``valence_diff`` and ``arousal_diff``, the signed differences of the mean
    ratings (generated minus reference); ``tension_diff``, the difference in the share of
    ratings choosing the GEMS word "tension" (Zentner, Grandjean & Scherer 2008). The cue
    columns of ``python -m analysis objective`` are signed the same way (generated minus
    reference), so a positive rho says a clip that is e.g. faster than its reference is also
    heard as more aroused than it (Juslin & Laukka 2003).

    One row per metric x outcome: ``clips``, ``spearman``, ``pval`` over all conditions'
    clips, then ``spearman_<condition>``, ``pval_<condition>`` and ``clips_<condition>`` within
    each condition (a condition's clips share a generator, so pooled and within-condition
    correlations can differ in sign: Simpson's paradox). Spearman needs 3 clips and two
    distinct values in each column, else NaN.
    """
    keys = ["segment", "condition"]
    listeners = pd.DataFrame()
    if len(abx):
        listeners = abx.groupby(keys, observed=True)["correct"].mean().rename("abx_accuracy")
        listeners = listeners.to_frame()
    if len(ratings):
        frame = ratings.copy()
        dimensions = list(agreement.DIMENSIONS)
        if "gems" in frame:
            # an empty GEMS cell is an answer (no word chosen), so it counts as "not tension"
            words = frame["gems"].fillna("").astype(str).str.split(";")
            frame["tension"] = words.map(lambda chosen: float("tension" in chosen))
            dimensions.append("tension")
        means = frame.groupby(keys, observed=True)[dimensions].mean()
        means = means.astype(float).reset_index()
        reference = means[means["condition"] == agreement.REFERENCE].set_index("segment")
        generated = means[means["condition"] != agreement.REFERENCE]
        delta = (
            generated[dimensions].to_numpy()
            - reference.reindex(generated["segment"])[dimensions].to_numpy()
        )
        index = pd.MultiIndex.from_frame(generated[keys])
        outcomes = pd.DataFrame(
            {f"{name}_diff": delta[:, i] for i, name in enumerate(dimensions)}, index=index
        )
        outcomes.insert(
            0,
            "rating_distance",
            np.sqrt((delta[:, : len(agreement.DIMENSIONS)] ** 2).sum(axis=1)),
        )
        listeners = listeners.join(outcomes, how="outer") if len(listeners) else outcomes
    objective = objective.copy()
    objective[keys] = objective[keys].astype(str)
    listeners = listeners.reset_index()
    listeners[keys] = listeners[keys].astype(str)
    outcome_names = [c for c in listeners.columns if c not in keys]
    merged = objective.merge(listeners, on=keys, how="inner")
    metrics = [
        c for c in objective.select_dtypes("number").columns
        if c not in keys and c not in outcome_names
    ]
    conditions = sorted(merged["condition"].unique())

    def spearman(part: pd.DataFrame, metric: str, outcome: str) -> tuple[int, float, float]:
        pair = part[[metric, outcome]].dropna()
        if len(pair) >= 3 and pair[metric].nunique() > 1 and pair[outcome].nunique() > 1:
            rho, pval = stats.spearmanr(pair[metric], pair[outcome])
            return len(pair), float(rho), float(pval)
        return len(pair), math.nan, math.nan

    records = []
    for metric in metrics:
        for outcome in outcome_names:
            clips, rho, pval = spearman(merged, metric, outcome)
            record: dict[str, Any] = {
                "metric": metric, "outcome": outcome, "clips": clips, "spearman": rho,
                "pval": pval,
            }
            for condition in conditions:
                n, rho_c, pval_c = spearman(
                    merged[merged["condition"] == condition], metric, outcome
                )
                record[f"spearman_{condition}"] = rho_c
                record[f"pval_{condition}"] = pval_c
                record[f"clips_{condition}"] = n
            records.append(record)
    columns = ["metric", "outcome", "clips", "spearman", "pval"] + [
        f"{name}_{condition}" for condition in conditions for name in ("spearman", "pval", "clips")
    ]
    return pd.DataFrame.from_records(records, columns=columns)
