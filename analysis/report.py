"""Build the study report: ``report.html`` (self-contained), ``tables/*.csv`` and ``report.json``.

Everything is computed twice, with the configured exclusions and with none, so a reader can see
whether the conclusions hang on them. The slower model fits (mixed models) run once, on the data
after exclusions.
"""

from __future__ import annotations

import html
import json
import math
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis import agreement, deviations, mos, mushra, preference, realism
from analysis.load import (
    ExclusionConfig,
    Export,
    abx_trials,
    apply_exclusions,
    rating_trials,
    read_export,
    trials_of_type,
)


@dataclass
class ReportConfig:
    """Analysis choices; every one is written into report.json."""

    exclusions: ExclusionConfig = field(default_factory=ExclusionConfig)
    equivalence_margin: float = 0.1
    alpha: float = 0.05
    unit: str = "source"
    n_boot: int = 2000
    n_permutations: int = 2000
    seed: int = 0
    # R processes for the mixed models (the realism GLMM and the two rating LMMs run side by
    # side). The models use every participant: no subsampling.
    r_cores: int = 2


def analyse(
    export: Export, config: ReportConfig | None = None, objective: pd.DataFrame | None = None
) -> dict[str, pd.DataFrame]:
    """Compute every table of the report; returns name -> DataFrame."""
    config = config or ReportConfig()
    tables: dict[str, pd.DataFrame] = {}
    excluded = apply_exclusions(export.responses, config.exclusions)
    abx = abx_trials(excluded.kept)
    ratings = rating_trials(excluded.kept)
    # The mixed models take most of the time: R fits them in the background while the
    # statistics below are computed here, and its tables keep their place in the report.
    with start_mixed_models(abx, ratings, config) as pending:
        tables["exclusions"] = excluded.table
        variants = {"": (abx, ratings),
                    "_no_exclusions": (abx_trials(export.responses),
                                       rating_trials(export.responses))}
        for suffix, (variant_abx, variant_ratings) in variants.items():
            if len(variant_abx):
                tables["realism" + suffix] = realism.summarize(
                    variant_abx, config.equivalence_margin, config.alpha
                )
            if len(variant_ratings):
                tables["agreement" + suffix] = agreement.summarize(
                    variant_ratings,
                    unit=config.unit,
                    n_boot=config.n_boot,
                    n_permutations=config.n_permutations,
                    alpha=config.alpha,
                    seed=config.seed,
                )
        later: dict[str, pd.DataFrame] = {}
        if len(abx):
            later["participants"] = realism.participant_accuracy(abx)
        if len(ratings):
            later["gems_kappa"] = agreement.gems_kappa_table(ratings, config.unit).reset_index()
            later["fit"] = agreement.fit_ratings(ratings)
            means = (
                ratings.groupby([config.unit, "condition"], observed=True)[
                    list(agreement.DIMENSIONS)]
                .mean()
                .astype(float)
            )
            later["unit_means"] = means.reset_index()
        if objective is not None and len(objective):
            later["objective_vs_listeners"] = objective_vs_listeners(objective, abx, ratings)
        if objective is not None and objective.attrs.get("mmd"):
            from analysis.objective import set_distance_table

            later["set_distances"] = set_distance_table(objective.attrs.get("frechet", {}),
                                                        objective.attrs["mmd"])
        later.update(new_trial_type_tables(excluded.kept, export.responses))
        tables.update(pending.tables())
    tables.update(later)
    tables["verdicts"] = verdict_table(tables, config)
    if export.preregistration is not None:  # As planned / Deviations (issue 22)
        tables["deviations"] = deviations.deviations(
            export.preregistration, export.study, export.responses, tables,
            alpha=config.alpha, margin=config.equivalence_margin, unit=config.unit,
            exclusion_rules=config.exclusions.active_rules(),
            analysed_participants=int(excluded.kept["participant"].nunique()))
        tables["verdicts"] = deviations.label_verdicts(tables["verdicts"],
                                                       export.preregistration)
    return tables


class PendingMixedModels:
    """The report's mixed models, fitting in R; :meth:`tables` waits and builds their tables.

    Leaving a ``with`` block stops R if the tables were never asked for (an error elsewhere).
    """

    def __init__(self, abx: pd.DataFrame, ratings: pd.DataFrame, config: ReportConfig) -> None:
        from analysis import lme4

        self.config = config
        self.labels: list[tuple[str, list[str], str | None]] = []
        self.answers = len(abx)
        jobs = []
        if len(abx):
            job, conditions = lme4.abx_job(abx, unit=config.unit)
            jobs.append(job)
            self.labels.append(("abx", conditions, None))
        if len(ratings):
            for dimension in agreement.DIMENSIONS:
                job, conditions = lme4.rating_job(ratings, dimension, unit=config.unit,
                                                  reference=agreement.REFERENCE)
                # The GLMM's ladder is the longest chain of fits (about 10 s on 1,000
                # listeners against 4 s per rating model): the rating models run at a lower
                # priority, so that the GLMM keeps a core while they share the other with the
                # Python statistics.
                job.nice = 10 if len(abx) else 0
                jobs.append(job)
                self.labels.append(("rating", conditions, dimension))
        self.jobs = jobs
        self.fits: list[dict] = []
        self.pending = lme4.start_jobs(jobs, cores=config.r_cores) if jobs else None

    def tables(self) -> dict[str, pd.DataFrame]:
        """Wait for R; ``realism_glmm``: the verdicts per condition
        (:func:`analysis.realism.glmm_verdicts`); ``rating_mixed_model``: shifts against the
        reference per dimension (:func:`analysis.agreement.rating_shifts`), Holm across
        conditions within a dimension."""
        if self.pending is None:
            return {}
        results = self.pending.result()
        self.fits = results  # the raw fits, every attempt with its seconds (bench_analysis.py)
        config = self.config
        tables: dict[str, pd.DataFrame] = {}
        shifts = []
        for (kind, conditions, dimension), result in zip(self.labels, results, strict=True):
            fit = result[None]
            if kind == "abx":
                if fit is None:
                    raise RuntimeError(
                        "no random-effect structure of the realism GLMM could be fitted")
                fit.extra["answers"] = self.answers
                tables["realism_glmm"] = realism.glmm_verdicts(
                    fit, conditions, config.unit, config.equivalence_margin, config.alpha
                )
            else:
                table = agreement.rating_shifts(fit, conditions, dimension, config.unit)
                table.insert(table.columns.get_loc("pval") + 1, "pval_holm",
                             multipletests(table["pval"], method="holm")[1])
                shifts.append(table)
        if shifts:
            tables["rating_mixed_model"] = pd.concat(shifts, ignore_index=True)
        return tables

    def __enter__(self) -> PendingMixedModels:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pending is not None:
            self.pending.cancel()


def start_mixed_models(
    abx: pd.DataFrame, ratings: pd.DataFrame, config: ReportConfig
) -> PendingMixedModels:
    """Start the realism GLMM and the rating LMMs in one background R run."""
    return PendingMixedModels(abx, ratings, config)


def new_trial_type_tables(
    responses: pd.DataFrame, unexcluded: pd.DataFrame | None = None
) -> dict[str, pd.DataFrame]:
    """Tables for the later trial types (MUSHRA, similarity, fit rating, fit preference, ACR,
    P.808 qualification), only when their rows exist: an export without them gets no new table.

    ``responses`` are the rows kept after exclusions; ``unexcluded`` all rows of the export (for
    the ``_no_exclusions`` / ``_no_screening`` variants and the P.808 screening table, which
    must see the listeners that the flags remove). Without it, ``responses`` stands for both.
    """
    unexcluded = responses if unexcluded is None else unexcluded
    tables: dict[str, pd.DataFrame] = {}
    mushra_rows = mushra.mushra_trials(responses)
    if len(mushra_rows) and "stimulus_role" in mushra_rows:
        tables["mushra_post_screening"] = mushra.post_screening(mushra_rows)
        tables["mushra"] = mushra.mushra_scores(mushra_rows, post_screen=True)
        tables["mushra_no_post_screening"] = mushra.mushra_scores(mushra_rows, post_screen=False)
        tables["mushra_mixed_model"] = mushra.mushra_mixed_model(mushra_rows)
    for trial_type, column in (("similarity", "similarity"), ("fit_rating", "fit")):
        if column not in responses:
            continue
        rows = trials_of_type(responses, trial_type)
        rows = rows[rows[column].notna()]
        if len(rows):
            tables[trial_type] = mos.mos_per_condition(rows, rating=column)
            if "clip" in rows:
                tables[f"{trial_type}_clips"] = mos.mos_per_clip(rows, rating=column)
    tables.update(fit_preference_tables(responses, unexcluded))
    tables.update(acr_tables(responses, unexcluded))
    tables.update(p808_qualification_tables(unexcluded))
    return tables


def fit_preference_tables(
    responses: pd.DataFrame, unexcluded: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    """``fit_preference`` (2AFC audio-video fit) rows: per-pair exact binomial tests after
    exclusions and without them, and Bradley-Terry strengths after exclusions."""
    tables: dict[str, pd.DataFrame] = {}
    choices = preference.preference_choices(trials_of_type(responses, "fit_preference"))
    everyone = preference.preference_choices(trials_of_type(unexcluded, "fit_preference"))
    if not len(choices) and not len(everyone):
        return tables
    tables["fit_preference_pairs"] = preference.pair_preferences(choices)
    tables["fit_preference_pairs_no_exclusions"] = preference.pair_preferences(everyone)
    tables["fit_preference_bradley_terry"] = bradley_terry_table(choices)
    return tables


def bradley_terry_table(choices: pd.DataFrame, reference: str = "reference") -> pd.DataFrame:
    """Bradley-Terry strengths (log-worth with 95% Wald intervals) of the choices' conditions.

    The reference item is ``reference`` when it was compared, else the first condition by
    name. When no finite fit exists (fewer than two conditions, or one that never won or never
    lost) the table lists each condition's wins and comparisons and says why in ``note``.
    """
    items = sorted(set(choices["winner"].astype(str)) | set(choices["loser"].astype(str)))
    try:
        fit = preference.bradley_terry(
            choices[["winner", "loser"]].astype(str),
            reference=reference if reference in items else None,
        )
    except ValueError as error:
        wins = choices["winner"].astype(str).value_counts()
        losses = choices["loser"].astype(str).value_counts()
        return pd.DataFrame(
            {
                "item": items,
                "wins": [float(wins.get(i, 0)) for i in items],
                "comparisons": [float(wins.get(i, 0) + losses.get(i, 0)) for i in items],
                "note": str(error) if items else "no fit_preference choices",
            },
            columns=["item", "wins", "comparisons", "note"],
        )
    return preference.preference_table(fit)


def acr_tables(responses: pd.DataFrame, unexcluded: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``acr`` (ITU-T P.808 absolute category rating) rows: the P.808 screening per listener and
    MOS per condition, clip and listener.

    The gold / trap rules are applied to *all* ACR rows of the export (so a too-fast flag on a
    failed trap cannot hide it, and the table lists the listeners the flags remove too); MOS
    use the rated clips left after the configured exclusions, without the dropped listeners.
    ``acr_mos_no_screening`` uses every rated clip: no exclusions, no screening.
    """
    column = mos.ACR_RATING
    if column not in unexcluded or "trial_type" not in unexcluded:
        return {}
    everyone = unexcluded[unexcluded["trial_type"] == "acr"]
    if not len(everyone):
        return {}
    screened_all = mos.p808_acr_screen(everyone)
    listeners = screened_all.listeners
    dropped = set(listeners.loc[listeners["dropped"], "participant"])
    kept = mos.p808_acr_screen(responses[responses["trial_type"] == "acr"]).kept
    kept = kept[~kept["participant"].astype(str).isin(dropped) & kept[column].notna()]
    rated_all = everyone[~mos.p808_catch_items(everyone) & everyone[column].notna()]

    person = everyone["participant"].astype(str)
    if "flag_failed_catch" in everyone:
        flagged = everyone["flag_failed_catch"].astype("boolean").fillna(False).groupby(person)
        listeners["app_flag_failed_catch"] = listeners["participant"].map(flagged.any())
    qualification = _qualification_by_listener(unexcluded)
    if qualification is not None:
        listeners["qualification_passed"] = listeners["participant"].map(qualification)
    in_mos = set(kept["participant"].astype(str))
    listeners["in_mos"] = listeners["participant"].isin(in_mos)
    return {
        "acr_p808_screening": listeners,
        "acr_mos": mos.mos_per_condition(kept, rating=column),
        "acr_mos_no_screening": mos.mos_per_condition(rated_all, rating=column),
        "acr_mos_per_clip": mos.mos_per_clip(kept, rating=column),
        "acr_mos_per_listener": mos.mos_per_listener(kept, rating=column),
    }


def _qualification_by_listener(responses: pd.DataFrame) -> pd.Series | None:
    if "qualification_passed" not in responses or "trial_type" not in responses:
        return None
    rows = responses[responses["trial_type"] == "p808_qualification"]
    if not len(rows):
        return None
    passed = rows["qualification_passed"].astype("boolean")
    return passed.groupby(rows["participant"].astype(str)).all()


def p808_qualification_tables(responses: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``p808_qualification`` rows (one per participant, before any exclusion): participants,
    passed, failed, reported normal hearing and mean tone-count errors per listening device,
    and over all devices (``all``)."""
    if "qualification_passed" not in responses or "trial_type" not in responses:
        return {}
    rows = responses[responses["trial_type"] == "p808_qualification"]
    if not len(rows):
        return {}
    device = (
        rows["listening_device"].astype("string").fillna("(not given)")
        if "listening_device" in rows
        else pd.Series("(not given)", index=rows.index, dtype="string")
    )
    data = pd.DataFrame(
        {
            "participant": rows["participant"].astype(str),
            "device": device.astype(str),
            "passed": rows["qualification_passed"].astype("boolean").astype(float),
            "hearing": rows["hearing_reported_normal"].astype("boolean").astype(float)
            if "hearing_reported_normal" in rows
            else np.nan,
            "errors": pd.to_numeric(rows["tone_count_errors"], errors="coerce").astype(float)
            if "tone_count_errors" in rows
            else np.nan,
        }
    )
    records = []
    groups = [(str(name), part) for name, part in data.groupby("device", sort=True)]
    for name, part in [*groups, ("all", data)]:
        records.append(
            {
                "listening_device": name,
                "participants": int(part["participant"].nunique()),
                "passed": int((part["passed"] == 1).sum()),
                "failed": int((part["passed"] == 0).sum()),
                "hearing_reported_normal": int((part["hearing"] == 1).sum()),
                "mean_tone_count_errors": float(part["errors"].mean()),
            }
        )
    return {"p808_qualification": pd.DataFrame.from_records(records)}


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


def write_report(
    export: Export,
    out_dir: str | Path,
    config: ReportConfig | None = None,
    objective: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Write report.html, tables/*.csv and report.json into ``out_dir``; return the JSON data."""
    config = config or ReportConfig()
    started = time.perf_counter()
    tables = analyse(export, config, objective)
    out = Path(out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(out / "tables" / f"{name}.csv", index=False)
    summary = {
        "format": "sightsound-report/1",
        "study": export.study.get("study", {}),
        "config": _jsonable(asdict(config)),
        "counts": {
            "rows": len(export.responses),
            "participants": int(export.responses["participant"].nunique()),
        },
        "tables": {
            name: json.loads(table.to_json(orient="records", default_handler=str))
            for name, table in tables.items()
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
    (out / "report.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (out / "report.html").write_text(_html(export, tables, config), encoding="utf-8")
    return summary


def report_from_files(
    responses: str | Path,
    study: str | Path,
    out_dir: str | Path,
    config: ReportConfig | None = None,
    objective_csv: str | Path | None = None,
) -> dict[str, Any]:
    export = read_export(responses, study)
    objective = pd.read_csv(objective_csv) if objective_csv else None
    # the set distances (MMD, Frechet, FAD-inf) are in the objective.json written beside it
    beside = Path(objective_csv).with_name("objective.json") if objective_csv else None
    if objective is not None and beside is not None and beside.exists():
        saved = json.loads(beside.read_text(encoding="utf-8"))
        objective.attrs.update({key: saved[key] for key in ("frechet", "mmd") if key in saved})
    return write_report(export, out_dir, config, objective)


# --------------------------------------------------------------------------- html


def _error_bars(table: pd.DataFrame, centre: str) -> dict[str, Any]:
    """Plotly's asymmetric error bars from a table's ``ci_low`` / ``ci_high`` around ``centre``."""
    return {
        "type": "data",
        "symmetric": False,
        "array": table["ci_high"] - table[centre],
        "arrayminus": table[centre] - table["ci_low"],
    }


def _figures(tables: dict[str, pd.DataFrame], config: ReportConfig) -> list[tuple[str, Any]]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figures = []
    if "realism_glmm" in tables:
        table = tables["realism_glmm"]
        figure = go.Figure(
            go.Bar(x=table["condition"], y=table["accuracy"],
                   error_y=_error_bars(table, "accuracy"))
        )
        margin = config.equivalence_margin
        figure.add_hrect(
            y0=0.5 - margin, y1=0.5 + margin, opacity=0.15, line_width=0, fillcolor="green"
        )
        figure.add_hline(y=0.5, line_dash="dash")
        figure.update_layout(
            title="ABX accuracy of a typical listener (mixed model, 95% Wald CI; shaded: "
            "equivalence margin)",
            yaxis_range=[0, 1],
            yaxis_title="accuracy",
        )
        figures.append(("ABX accuracy", figure))
    if "participants" in tables:
        people = tables["participants"]
        figure = go.Figure(
            [
                go.Box(x=rows["accuracy"], name=str(condition), boxpoints="all")
                for condition, rows in people.groupby("condition")
            ]
        )
        figure.update_layout(title="Per-participant ABX accuracy", xaxis_title="accuracy")
        figures.append(("Listeners", figure))
    if "unit_means" in tables:
        means = tables["unit_means"]
        reference = means[means["condition"] == agreement.REFERENCE].set_index(config.unit)
        figure = make_subplots(rows=1, cols=2, subplot_titles=list(agreement.DIMENSIONS))
        for col, dimension in enumerate(agreement.DIMENSIONS, start=1):
            for condition, rows in means[means["condition"] != agreement.REFERENCE].groupby(
                "condition"
            ):
                figure.add_trace(
                    go.Scatter(
                        x=reference[dimension].reindex(rows[config.unit]),
                        y=rows[dimension],
                        mode="markers",
                        name=str(condition),
                        legendgroup=str(condition),
                        showlegend=col == 1,
                        text=rows[config.unit],
                    ),
                    row=1,
                    col=col,
                )
            figure.add_trace(
                go.Scatter(
                    x=[1, 9],
                    y=[1, 9],
                    mode="lines",
                    showlegend=False,
                    line={"dash": "dash", "color": "grey"},
                ),
                row=1,
                col=col,
            )
        figure.update_layout(title=f"Mean rating per {config.unit}: generated (y) vs reference (x)")
        figures.append(("Semantic agreement", figure))
    if "fit" in tables:
        fit = tables["fit"]
        figure = go.Figure(
            go.Bar(
                x=fit["condition"],
                y=fit["mean_fit"],
                error_y=_error_bars(fit, "mean_fit"),
            )
        )
        figure.update_layout(title="Fit to the video (1-7, 95% CI)", yaxis_range=[1, 7])
        figures.append(("Fit to video", figure))
    if "mushra" in tables:
        table = tables["mushra"]
        labels = table["condition"].astype(str)
        figure = go.Figure(
            go.Bar(
                x=labels,
                y=table["mean"],
                error_y=_error_bars(table, "mean"),
            )
        )
        figure.update_layout(
            title="MUSHRA score per condition (95% t CI, after post-screening)",
            yaxis_range=[0, 100],
            yaxis_title="score",
        )
        figures.append(("MUSHRA", figure))
    if (
        "fit_preference_bradley_terry" in tables
        and "log_worth" in tables["fit_preference_bradley_terry"]
    ):
        table = tables["fit_preference_bradley_terry"]
        figure = go.Figure(
            go.Scatter(
                x=table["item"].astype(str),
                y=table["log_worth"],
                mode="markers",
                marker={"size": 10},
                error_y=_error_bars(table, "log_worth"),
            )
        )
        figure.add_hline(y=0, line_dash="dash")
        figure.update_layout(
            title="Fit to the video, pairwise preference: Bradley-Terry log-worth (centred, "
            "95% Wald CI)",
            yaxis_title="log-worth",
        )
        figures.append(("Fit preference", figure))
    if "acr_mos" in tables:
        figure = go.Figure()
        for name, label in (
            ("acr_mos", "after P.808 screening"),
            ("acr_mos_no_screening", "no screening, no exclusions"),
        ):
            table = tables.get(name)
            if table is None or not len(table):
                continue
            figure.add_trace(
                go.Bar(
                    name=label,
                    x=table["condition"].astype(str),
                    y=table["mos"],
                    error_y=_error_bars(table, "mos"),
                )
            )
        figure.update_layout(
            title="ACR MOS per condition (1 = bad ... 5 = excellent; 95% t CI)",
            yaxis_range=[1, 5],
            yaxis_title="MOS",
            barmode="group",
        )
        figures.append(("ACR quality (P.808)", figure))
    for _, figure in figures:
        figure.update_layout(title=_figure_title(figure.layout.title.text or ""))
    return figures


# Characters per title line: 40 at 14 px fit a 390 px phone screen (issue 21: plotly never
# wraps a title, so longer ones were cut at the right edge).
TITLE_CHARACTERS = 40


def _figure_title(text: str) -> dict[str, Any]:
    """A figure title broken into lines that fit a phone's width, with room made for them."""
    lines = textwrap.wrap(text, TITLE_CHARACTERS, break_on_hyphens=False)
    text = "<br>".join(html.escape(line, quote=False) for line in lines)
    # Hung from the top of the figure and growing down, the margin made as tall as the lines:
    # plotly centres a title on a fixed line otherwise, and its first lines leave the figure.
    # 20 px above it: plotly lifts a title of several lines by about 10 px (measured).
    return {"text": text, "font": {"size": 14}, "automargin": True, "yref": "container",
            "y": 1, "yanchor": "top", "pad": {"t": 20}}


TABLE_TITLES = {
    "exclusions": "Exclusions",
    "verdicts": "Verdicts",
    "realism_glmm": "Realism verdicts: logistic mixed model (lme4, all participants)",
    "realism": "Realism (ABX), pooled answers: descriptive only (answers treated as "
    "independent), after exclusions",
    "realism_no_exclusions": "Realism (ABX), pooled answers, descriptive, no exclusions",
    "agreement": "Semantic agreement with the reference, after exclusions",
    "agreement_no_exclusions": "Semantic agreement, no exclusions",
    "rating_mixed_model": "Rating shifts against the reference: linear mixed model with "
    "listeners and stimuli as random effects (lme4 + lmerTest)",
    "gems_kappa": "GEMS words: Cohen's kappa with the reference per word",
    "fit": "Fit to video",
    "objective_vs_listeners": "Objective metrics vs listeners (Spearman per clip)",
    "set_distances": "Each condition's clips against the reference clips (embeddings): the "
    "MMD^2 permutation test is the between-set test (unbiased at any number of clips); the "
    "Frechet distance is biased upwards for small sets (flag), FAD-inf removes that bias "
    "where the sets are large enough to extrapolate",
    "mushra_post_screening": "MUSHRA post-screening (BS.1534-3: hidden reference < 90 in "
    "more than 15% of screens)",
    "mushra": "MUSHRA scores (0-100, 95% t CI), after post-screening",
    "mushra_no_post_screening": "MUSHRA scores, no post-screening",
    "mushra_mixed_model": "MUSHRA: linear mixed model, contrasts against the hidden reference",
    "similarity": "Similarity to the reference (1-7): MOS per condition",
    "similarity_clips": "Similarity to the reference: MOS per clip",
    "fit_rating": "Audio-video fit (1-7): MOS per condition",
    "fit_rating_clips": "Audio-video fit: MOS per clip",
    "fit_preference_pairs": "Fit preference (2AFC): per pair, share preferring the first-named "
    "condition, exact binomial test (after exclusions)",
    "fit_preference_pairs_no_exclusions": "Fit preference (2AFC) per pair, no exclusions",
    "fit_preference_bradley_terry": "Fit preference: Bradley-Terry strengths (after exclusions)",
    "acr_p808_screening": "ACR: P.808 screening per listener (gold within +-1, trap exact; "
    "all listeners, before exclusions)",
    "acr_mos": "ACR MOS per condition (1-5, 95% t CI), after exclusions and P.808 screening",
    "acr_mos_no_screening": "ACR MOS per condition, no P.808 screening and no exclusions",
    "acr_mos_per_clip": "ACR MOS per clip, after exclusions and P.808 screening",
    "acr_mos_per_listener": "ACR MOS per listener, after exclusions and P.808 screening",
    "p808_qualification": "P.808 qualification per listening device (all participants)",
}


# Columns shown in the HTML (all columns are in tables/*.csv and report.json). Tables not
# listed here are shown in slices of at most MAX_COLUMNS columns.
DISPLAY_COLUMNS = {
    "realism_glmm": ["condition", "accuracy", "ci_low", "ci_high", "dprime", "dprime_low",
                     "dprime_high", "pval_holm", "tost_pval_holm", "marginal_accuracy"],
    "realism": ["condition", "n", "participants", "accuracy", "cp_low", "cp_high", "pval_holm",
                "tost_pval_holm", "dprime", "share_above_chance"],
    "realism_no_exclusions": ["condition", "n", "participants", "accuracy", "cp_low", "cp_high",
                              "pval_holm", "tost_pval_holm", "dprime"],
    "rating_mixed_model": ["dimension", "condition", "coef", "ci_low", "ci_high", "df", "pval",
                           "pval_holm", "participants", "units"],
    "agreement": ["condition", "dimension", "units", "mean_diff", "pearson", "ccc", "icc2",
                  "alpha_interval", "gems_jaccard", "perm_pval_holm"],
    "agreement_no_exclusions": ["condition", "dimension", "units", "mean_diff", "pearson",
                                "ccc", "icc2", "perm_pval_holm"],
}
MAX_COLUMNS = 10
MAX_ROWS = 60
COLUMN_LEGEND = {
    "condition": "generated condition",
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
    "dimension": "rating scale (valence or arousal, 1-9)",
    "accuracy": "proportion of correct ABX answers (mixed model: of a typical listener on a "
    "typical stimulus)",
    "ci_low": "lower end of the 95% interval",
    "ci_high": "upper end of the 95% interval",
    "dprime": "ABX sensitivity d' (differencing model) implied by the accuracy",
    "dprime_low": "d' at the lower end of the accuracy interval",
    "dprime_high": "d' at the upper end of the accuracy interval",
    "pval": "p-value of the test (see the table's title)",
    "pval_holm": "p-value, Holm-corrected across conditions (realism: one-sided, accuracy > "
    "0.5; ratings: two-sided, shift = 0, within a dimension)",
    "tost_pval_holm": "equivalence (TOST) p-value that accuracy lies within 0.5 +- margin, "
    "Holm-corrected",
    "marginal_accuracy": "population-average accuracy over listeners and stimuli (point "
    "estimate; closer to 0.5 than a typical listener's)",
    "n": "answers",
    "participants": "listeners in the analysis",
    "units": "stimulus units (sources or segments)",
    "cp_low": "exact Clopper-Pearson 95% interval, lower end (pooled answers)",
    "cp_high": "exact Clopper-Pearson 95% interval, upper end (pooled answers)",
    "share_above_chance": "share of listeners individually above chance (one-sided exact test)",
    "coef": "shift of the condition's mean rating from the reference (scale points)",
    "df": "degrees of freedom of the t test (ratings: Satterthwaite, lmerTest; realism: "
    "Welch-Satterthwaite approximation from the variance components)",
    "mean_diff": "mean over units of (condition - reference) unit means",
    "pearson": "Pearson correlation of unit means with the reference's",
    "ccc": "Lin's concordance correlation with the reference",
    "icc2": "ICC(2,1), absolute agreement with the reference",
    "alpha_interval": "Krippendorff's alpha (interval)",
    "gems_jaccard": "mean Jaccard index of the characteristic GEMS words",
    "perm_pval_holm": "permutation p-value, condition carries the reference's emotion better "
    "than the mismatched control (Holm)",
    "rule": "exclusion rule (export flag)",
    "reason": "what the rule means",
    "level": "participant: all their rows go; row: only that answer goes",
    "rows": "rows the rule removes on its own (rules overlap; 'any' is the union)",
}


def verdict_table(tables: dict[str, pd.DataFrame], config: ReportConfig) -> pd.DataFrame:
    """One plain sentence per condition and question, from the mixed models.

    Realism: "distinguishable" (one-sided Wald test of the GLMM logit > 0, Holm) and
    "equivalent within +-margin" (Wald TOST on the GLMM, Holm). Ratings: a shift against
    the reference (Satterthwaite t, Holm within a dimension). Semantic agreement: the
    permutation test against the mismatched control, when the study has one.
    """
    margin = config.equivalence_margin
    records = []
    glmm = tables.get("realism_glmm")
    if glmm is not None:
        for row in glmm.itertuples():
            numbers = (f"accuracy {row.accuracy:.2f}, 95 % CI {row.ci_low:.2f}-{row.ci_high:.2f}; "
                       f"d' {row.dprime:.2f} ({row.dprime_low:.2f} to {row.dprime_high:.2f})")
            if row.distinguishable and row.equivalent:
                text = (f"listeners could tell it from the real recording, but only slightly "
                        f"({numbers}; above chance, Holm p {_p(row.pval_holm)}, yet within "
                        f"+/-{margin:.2f} of chance)")
            elif row.distinguishable:
                text = (f"listeners could tell it from the real recording ({numbers}; Holm "
                        f"p {_p(row.pval_holm)})")
            elif row.equivalent:
                text = (f"listeners could not tell it from the real recording ({numbers}; "
                        f"equivalent within +/-{margin:.2f}, Holm TOST p "
                        f"{_p(row.tost_pval_holm)})")
            else:
                text = (f"inconclusive: neither shown distinguishable from the real recording "
                        f"nor shown equivalent within +/-{margin:.2f} ({numbers})")
            records.append({"question": "realism (ABX)", "condition": row.condition,
                            "verdict": f"{row.condition}: {text}."})
    shifts = tables.get("rating_mixed_model")
    if shifts is not None:
        for row in shifts.itertuples():
            numbers = (f"{row.coef:+.2f} points, 95 % CI {row.ci_low:+.2f} to "
                       f"{row.ci_high:+.2f}")
            if row.pval_holm < config.alpha:
                direction = "higher" if row.coef > 0 else "lower"
                text = (f"rated {direction} in {row.dimension} than the reference ({numbers}; "
                        f"Holm p {_p(row.pval_holm)})")
            else:
                text = f"no shift in {row.dimension} shown against the reference ({numbers})"
            records.append({"question": f"rating shift ({row.dimension})",
                            "condition": row.condition, "verdict": f"{row.condition}: {text}."})
    agree = tables.get("agreement")
    if agree is not None and "perm_pval_holm" in agree:
        tested = agree.drop_duplicates("condition").dropna(subset=["perm_pval_holm"])
        for row in tested.itertuples():
            if row.perm_pval_holm < config.alpha:
                text = ("carries the emotion of the real recording better than music of another "
                        "performance")
            else:
                text = ("not shown to carry the emotion of the real recording better than music "
                        "of another performance")
            records.append({"question": "semantic agreement", "condition": row.condition,
                            "verdict": f"{row.condition}: {text} (permutation test, Holm p "
                                       f"{_p(row.perm_pval_holm)}, {row.units} units)."})
    return pd.DataFrame.from_records(records, columns=["question", "condition", "verdict"])


def sample_sizes(export: Export, tables: dict[str, pd.DataFrame]) -> list[str]:
    """Sentences: enrolled (study.json), in the export, analysed, and each exclusion rule.

    The exclusion rules are read from the exclusions table, so rules added to
    :mod:`analysis.load` appear here without a change.
    """
    study = export.study.get("study", {})
    in_export = export.responses["participant"].nunique()
    lines = []
    started, completed = study.get("participants_started"), study.get("participants_completed")
    if started is not None or completed is not None:
        lines.append(f"Enrolled (study.json): {started} started, {completed} completed.")
    lines.append(f"In the export: {in_export} participants, {len(export.responses)} rows.")
    glmm = tables.get("realism_glmm")
    if glmm is not None and len(glmm):
        lines.append(f"Analysed in the realism model: {int(glmm['participants'].iloc[0])} "
                     f"participants, {int(glmm['answers'].iloc[0])} ABX answers, "
                     f"{int(glmm['units'].iloc[0])} stimulus units.")
    shifts = tables.get("rating_mixed_model")
    if shifts is not None and len(shifts):
        lines.append(f"Analysed in the rating models: {int(shifts['participants'].iloc[0])} "
                     f"participants, {int(shifts['units'].iloc[0])} stimulus units.")
    exclusions = tables.get("exclusions")
    if exclusions is not None:
        parts = [f"{row.rule} ({row.reason}): {row.participants} participants, {row.rows} rows"
                 for row in exclusions.itertuples()]
        lines.append("Exclusions: " + "; ".join(parts) + ".")
    return lines


def model_descriptions(tables: dict[str, pd.DataFrame]) -> list[str]:
    """Fitted formulas, how they were fitted, and why that random-effect structure."""
    lines = []
    glmm = tables.get("realism_glmm")
    if glmm is not None and len(glmm):
        row = glmm.iloc[0]
        lines.append(
            f"Realism: <code>{html.escape(row['formula'])}</code>, binomial (logit), Laplace "
            "maximum likelihood (lme4::glmer), all participants; intervals and tests are Wald "
            "on the logit scale with t quantiles on approximate (Welch-Satterthwaite) degrees "
            f"of freedom (here {row['df']:.0f}), the interval transformed to accuracy and d'. "
            "Random-effect "
            f"structure: {html.escape(row['model'])}. Why: {html.escape(row['model_choice'])}."
        )
    shifts = tables.get("rating_mixed_model")
    if shifts is not None and len(shifts):
        for _, row in shifts.drop_duplicates("dimension").iterrows():
            lines.append(
                f"Ratings ({html.escape(row['dimension'])}): <code>"
                f"{html.escape(row['formula'])}</code>, {row['estimation']} (lme4::lmer), "
                "treatment contrasts against the reference; t tests with Satterthwaite df "
                f"(lmerTest). Random-effect structure: {html.escape(row['model'])}. Why: "
                f"{html.escape(row['model_choice'])}."
            )
    return lines


def _plan_html(export: Export, tables: dict[str, pd.DataFrame]) -> str:
    """The "As planned / Deviations" section (right after the verdicts), or, for an export
    without a plan, one line saying so inside the verdicts section."""
    record = export.preregistration
    if record is None:
        return f"<p id='no-preregistration'>{html.escape(deviations.NO_PLAN_LINE)}</p>"
    table = tables["deviations"]
    parts = ["<section id='preregistration'><h2>As planned / Deviations</h2>",
             f"<p>{html.escape(deviations.summary_line(record, table))}</p>"]
    # Deviations first, then the amendments, then what went as planned.
    for status, heading in ((deviations.DEVIATION, "Deviations"),
                            (deviations.AMENDMENT, "Amendments"),
                            (deviations.AS_PLANNED, "As planned")):
        rows = table[table["status"] == status]
        if not len(rows) and status != deviations.DEVIATION:
            continue
        parts.append(f"<h3>{heading}</h3><ul>")
        if not len(rows):
            parts.append("<li>None.</li>")
        for row in rows.itertuples():
            text = (f"{row.item}: {row.analysed}" if status == deviations.AMENDMENT else
                    f"{row.item}: planned {row.planned}; analysed {row.analysed}")
            parts.append(f"<li class='{status.replace(' ', '-')}'>{html.escape(text)}"
                         + (f" ({html.escape(row.note)})" if row.note else "") + "</li>")
        parts.append("</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def _p(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"= {value:.3f}"


def _table_html(name: str, table: pd.DataFrame) -> str:
    """A table that fits the page: chosen columns (or slices of MAX_COLUMNS), then a legend."""
    shown = [c for c in DISPLAY_COLUMNS.get(name, []) if c in table]
    frames = [table[shown]] if shown else []
    if not shown:
        keys = [c for c in table.columns[:2] if table[c].dtype == object
                or str(table[c].dtype) == "string"][:1]
        rest = [c for c in table.columns if c not in keys]
        step = MAX_COLUMNS - len(keys)
        frames = [table[keys + rest[i:i + step]] for i in range(0, max(len(rest), 1), step)]
    parts = []
    for frame in frames:
        body = frame.head(MAX_ROWS)
        parts.append("<div class='tablebox'>" + body.to_html(
            index=False, float_format=_format_number, na_rep="") + "</div>")
    if len(table) > MAX_ROWS:
        parts.append(f"<p class='note'>First {MAX_ROWS} of {len(table)} rows; all in "
                     f"tables/{html.escape(name)}.csv.</p>")
    if shown and len(shown) < len(table.columns):
        parts.append(f"<p class='note'>{len(table.columns) - len(shown)} more columns in "
                     f"tables/{html.escape(name)}.csv.</p>")
    columns = list(dict.fromkeys(c for f in frames for c in f.columns))
    legend = [f"<b>{html.escape(str(c))}</b>: {html.escape(COLUMN_LEGEND[c])}"
              for c in columns if c in COLUMN_LEGEND]
    unknown = [str(c) for c in columns if c not in COLUMN_LEGEND]
    if unknown:
        legend.append(f"{html.escape(', '.join(unknown))}: see docs/analysis.md")
    parts.append("<p class='legend'>" + "; ".join(legend) + "</p>")
    return "\n".join(parts)


def _html(export: Export, tables: dict[str, pd.DataFrame], config: ReportConfig) -> str:
    """The page: one ``<section>`` per part, the verdicts first.

    Sized to read at 1280 px (and narrower) without sideways scrolling: long words (formulas,
    column names, condition ids) may break, wide tables scroll inside their own box rather
    than widening the page, and figures take the width of the column.
    """
    title = html.escape(str(export.study.get("study", {}).get("title", "SightSound study")))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{title}: report</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
        "<section id='verdicts'><h2>Verdicts</h2><ul>",
    ]
    verdicts = tables.get("verdicts")
    if verdicts is not None:
        parts.extend(f"<li>{html.escape(v)}</li>" for v in verdicts["verdict"])
    parts.append("</ul><p>Equivalence margin &plusmn;" f"{config.equivalence_margin}; alpha "
                 f"{config.alpha}; Holm correction across conditions; seed {config.seed}.</p>")
    parts.append(_plan_html(export, tables) + "</section>" if export.preregistration is None
                 else "</section>" + _plan_html(export, tables))
    parts.append("<section id='analysed'><h2>Who was analysed</h2><ul>")
    parts.extend(f"<li>{html.escape(line)}</li>" for line in sample_sizes(export, tables))
    parts.append("</ul></section><section id='models'><h2>Models fitted</h2><ul>")
    parts.extend(f"<li>{line}</li>" for line in model_descriptions(tables))
    parts.append("</ul></section>")
    for index, (name, figure) in enumerate(_figures(tables, config)):
        parts.append(f"<section class='figure'><h2>{html.escape(name)}</h2>")
        # plotly.js is inlined once, with the first figure, so the file works offline;
        # responsive: the figure follows the column's width instead of plotly's 700 px.
        parts.append(figure.to_html(full_html=False, include_plotlyjs=index == 0,
                                    config={"responsive": True}))
        parts.append("</section>")
    for name, table in tables.items():
        if name in ("participants", "unit_means", "verdicts", "deviations"):
            continue
        parts.append(f"<section class='table' id='table-{html.escape(name)}'>"
                     f"<h2>{html.escape(TABLE_TITLES.get(name, name))}</h2>")
        parts.append(_table_html(name, table))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


# Plain, readable at 1280 px: a text column of at most 1200 px, tables that scroll inside
# their own box if they must, words that break rather than widen the page.
STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:0 16px;"
    "line-height:1.4;overflow-wrap:anywhere}"
    "h1{margin-bottom:4px}section{margin:0 0 18px}"
    ".tablebox{max-width:100%;overflow-x:auto}"
    "table{border-collapse:collapse;font-size:12px;margin-top:6px}td,th{border:1px solid "
    "#ccc;padding:2px 6px;text-align:right;overflow-wrap:normal}"
    ".legend,.note{font-size:11px;color:#444}li{margin:4px 0}"
    "code{font-size:12px}"
)


def _format_number(value: float) -> str:
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
