"""Calibration: do the mixed-model verdicts keep their promises on studies with known truth?

:func:`simulate_studies` draws many studies from the model the verdicts assume (listener and
stimulus random effects, on the logit scale for ABX answers and on the rating scale for
ratings); :func:`calibrate` fits all of them through :mod:`analysis.lme4` (one R session,
studies split by a ``study`` column) and applies the report's own verdict rules
(:func:`analysis.realism.glmm_verdicts`, :func:`analysis.agreement.rating_shifts`).

The table it returns answers, per condition: how often the 95% interval covered the truth, how
often the condition was called distinguishable, equivalent within the margin, or shifted. The
promises: coverage near 95%; "distinguishable" at a truly-chance condition and "equivalent"
for a condition exactly on the margin at most alpha (5%); a null rating shift called
significant at most alpha. docs/analysis.md shows the table of a 300-study run.
Reference design (issue 15): 60 listeners x 8 sources.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import agreement, lme4, realism


@dataclass(frozen=True)
class CalibrationDesign:
    """Truth and design of the simulated studies (defaults: the issue-15 reference design).

    Every listener hears every (source, condition) cell ``abx_repeats`` times in ABX and rates
    every (source, condition) cell ``rating_repeats`` times. ABX logit for listener i, source
    s, condition c: ``logit(p_c) + a_i + b_ic + u_s + w_sc`` with ``a`` ~ N(0,
    participant_sd), ``b`` ~ N(0, participant_condition_sd), ``u`` ~ N(0, unit_sd), ``w`` ~
    N(0, clip_sd); ``p_c`` is therefore the accuracy of a typical listener on a typical clip,
    the quantity the GLMM estimates. Ratings: ``5 + shift_c + a_i + b_ic + u_s + w_sc + e``,
    rounded and clipped to 1-9 as listeners answer.
    """

    participants: int = 60
    sources: int = 8
    abx_repeats: int = 2
    rating_repeats: int = 1
    abx_accuracy: dict[str, float] = field(
        default_factory=lambda: {"at_chance": 0.5, "on_margin": 0.6, "clearly": 0.8}
    )
    participant_sd: float = 0.5
    participant_condition_sd: float = 0.3
    unit_sd: float = 0.3
    clip_sd: float = 0.2
    rating_shift: dict[str, float] = field(
        default_factory=lambda: {"reference": 0.0, "null_shift": 0.0, "shifted": 0.8}
    )
    rating_participant_sd: float = 0.8
    rating_participant_condition_sd: float = 0.3
    rating_unit_sd: float = 1.0
    rating_clip_sd: float = 0.3
    rating_noise_sd: float = 1.2
    # ABX sources each listener hears per condition (None: every source). The app's Latin
    # square gives each listener a share of the sources per condition, a different share per
    # listener; listener i hears condition c on sources (i + c * m + j) mod S, j < m, which
    # spreads the sources over listeners and conditions the same way.
    abx_sources_heard: int | None = None
    # The same for ratings (the reference is one of the rated conditions, as in the app).
    rating_sources_heard: int | None = None
    # Listeners who pass every screen but answer ABX trials at random (each answer a fair coin,
    # on every condition), and listeners who stop halfway (a random half of their ABX answers
    # kept): the unflagged inattention a real online study has (issue 21: 15 % and 20 %).
    random_responder_share: float = 0.0
    dropout_share: float = 0.0


def simulate_studies(
    design: CalibrationDesign, studies: int, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy ABX rows and rating rows of ``studies`` simulated studies (column ``study``).

    >>> abx, ratings = simulate_studies(CalibrationDesign(participants=4, sources=2), 3)
    >>> len(abx), len(ratings)  # 3 studies x 4 listeners x 2 sources x 3 conditions x 2 (x 1)
    (144, 72)
    """
    rng = np.random.default_rng(seed)
    abx_names = list(design.abx_accuracy)
    p = np.array([design.abx_accuracy[c] for c in abx_names])
    rating_names = list(design.rating_shift)
    shift = np.array([design.rating_shift[c] for c in rating_names])
    n_p, n_s = design.participants, design.sources

    def cells(n_conditions: int, repeats: int) -> tuple[np.ndarray, ...]:
        grid = np.indices((studies, n_p, n_s, n_conditions, repeats)).reshape(5, -1)
        return grid[0], grid[1], grid[2], grid[3]

    def effects(sd_p: float, sd_pc: float, sd_u: float, sd_w: float, n_c: int):
        return (rng.normal(0, sd_p, (studies, n_p)), rng.normal(0, sd_pc, (studies, n_p, n_c)),
                rng.normal(0, sd_u, (studies, n_s)), rng.normal(0, sd_w, (studies, n_s, n_c)))

    k, i, s, c = cells(len(abx_names), design.abx_repeats)
    a, b, u, w = effects(design.participant_sd, design.participant_condition_sd,
                         design.unit_sd, design.clip_sd, len(abx_names))
    logit = np.log(p / (1 - p))[c] + a[k, i] + b[k, i, c] + u[k, s] + w[k, s, c]
    draw = rng.random(k.size)
    # Inattention comes from a generator of its own: with both shares at 0 every study is
    # exactly what it was without them, and with them the attentive listeners' answers are the
    # same (common random numbers, so a table with and without inattention compares cleanly).
    inattention = np.random.default_rng([seed, 21])
    random_responder = inattention.random((studies, n_p)) < design.random_responder_share
    stops_halfway = inattention.random((studies, n_p)) < design.dropout_share
    accuracy = np.where(random_responder[k, i], 0.5, 1 / (1 + np.exp(-logit)))
    correct = (draw < accuracy).astype(int)
    keep = ~stops_halfway[k, i] | (inattention.random(k.size) < 0.5)
    abx = pd.DataFrame({"study": k, "participant": i, "source": s,
                        "condition": np.array(abx_names)[c], "correct": correct})
    if design.abx_sources_heard is not None:
        m = design.abx_sources_heard
        keep &= (s - i - c * m) % n_s < m
    abx = abx[keep].reset_index(drop=True)

    k, i, s, c = cells(len(rating_names), design.rating_repeats)
    a, b, u, w = effects(design.rating_participant_sd, design.rating_participant_condition_sd,
                         design.rating_unit_sd, design.rating_clip_sd, len(rating_names))
    value = 5 + shift[c] + a[k, i] + b[k, i, c] + u[k, s] + w[k, s, c]
    value = value + rng.normal(0, design.rating_noise_sd, k.size)
    ratings = pd.DataFrame({"study": k, "participant": i, "source": s,
                            "condition": np.array(rating_names)[c],
                            "valence": np.clip(np.rint(value), 1, 9)})
    if design.rating_sources_heard is not None:
        m = design.rating_sources_heard
        ratings = ratings[(s - i - c * m) % n_s < m].reset_index(drop=True)
    return abx, ratings


def calibrate(
    design: CalibrationDesign | None = None,
    studies: int = 300,
    margin: float = 0.1,
    alpha: float = 0.05,
    seed: int = 0,
    cores: int = 2,
    chunk: int = 25,
    log: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit ``studies`` simulated studies and summarise how the verdicts behave.

    Returns ``(summary, per_study)``: one row per condition (``coverage``,
    ``called_distinguishable``, ``called_equivalent``, ``called_shifted``, mean estimate,
    models used) and the per-study verdict rows it was computed from.
    """
    design = design or CalibrationDesign()
    abx, ratings = simulate_studies(design, studies, seed)
    started = time.perf_counter()
    glmm_fits: dict = {}
    lmm_fits: dict = {}
    # Chunks of studies, one R session each: bounded memory, and a slow chunk shows in `log`.
    for first in range(0, studies, chunk):
        part = range(first, min(first + chunk, studies))
        glmm, abx_conditions = lme4.abx_job(abx[abx["study"].isin(part)], unit="source",
                                            by="study")
        lmm, rating_conditions = lme4.rating_job(ratings[ratings["study"].isin(part)],
                                                 "valence", unit="source", by="study")
        chunk_glmm, chunk_lmm = lme4.run_jobs([glmm, lmm], cores=cores)
        glmm_fits.update(chunk_glmm)
        lmm_fits.update(chunk_lmm)
        if log is not None:
            log(f"studies {first}-{part[-1]}: {time.perf_counter() - started:.0f} s")
    seconds = time.perf_counter() - started

    rows = []
    for key, fit in glmm_fits.items():
        if fit is None:
            continue
        table = realism.glmm_verdicts(fit, abx_conditions, "source", margin, alpha)
        truth = table["condition"].map(design.abx_accuracy)
        rows.append(pd.DataFrame({
            "study": key, "outcome": "abx", "condition": table["condition"], "truth": truth,
            "estimate": table["accuracy"],
            "covered": (table["ci_low"] <= truth) & (truth <= table["ci_high"]),
            "distinguishable": table["distinguishable"], "equivalent": table["equivalent"],
            "shifted": np.nan, "model": fit.model,
        }))
    for key, fit in lmm_fits.items():
        if fit is None:
            continue
        table = agreement.rating_shifts(fit, rating_conditions, "valence", "source")
        truth = table["condition"].map(design.rating_shift)
        rows.append(pd.DataFrame({
            "study": key, "outcome": "rating shift", "condition": table["condition"],
            "truth": truth, "estimate": table["coef"],
            "covered": (table["ci_low"] <= truth) & (truth <= table["ci_high"]),
            "distinguishable": np.nan, "equivalent": np.nan,
            "shifted": table["pval"] < alpha, "model": fit.model,
        }))
    per_study = pd.concat(rows, ignore_index=True)
    grouped = per_study.groupby(["outcome", "condition", "truth"], sort=False)
    summary = grouped.agg(
        studies=("covered", "size"),
        mean_estimate=("estimate", "mean"),
        coverage=("covered", "mean"),
        called_distinguishable=("distinguishable", "mean"),
        called_equivalent=("equivalent", "mean"),
        called_shifted=("shifted", "mean"),
        models=("model", lambda m: "; ".join(f"{k} x{v}" for k, v in m.value_counts().items())),
    ).reset_index()
    summary.attrs["seconds"] = seconds
    summary.attrs["failed_fits"] = sum(f is None for f in glmm_fits.values()) + sum(
        f is None for f in lmm_fits.values())
    return summary, per_study
