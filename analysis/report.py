"""Build the study report: ``report.html`` (self-contained), ``tables/*.csv`` and ``report.json``.

Everything is computed twice, with the configured exclusions and with none, so a reader can see
whether the conclusions hang on them. The slower model fits (mixed models) run once, on the data
after exclusions.
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis import agreement, mos, mushra, preference, realism
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
    glmm_max_participants: int | None = 300
    lmm_max_participants: int | None = 1000
    seed: int = 0


def analyse(
    export: Export, config: ReportConfig | None = None, objective: pd.DataFrame | None = None
) -> dict[str, pd.DataFrame]:
    """Compute every table of the report; returns name -> DataFrame."""
    config = config or ReportConfig()
    tables: dict[str, pd.DataFrame] = {}
    excluded = apply_exclusions(export.responses, config.exclusions)
    tables["exclusions"] = excluded.table
    variants = {"": excluded.kept, "_no_exclusions": export.responses}
    for suffix, responses in variants.items():
        abx = abx_trials(responses)
        ratings = rating_trials(responses)
        if len(abx):
            tables["realism" + suffix] = realism.summarize(
                abx, config.equivalence_margin, config.alpha
            )
        if len(ratings):
            tables["agreement" + suffix] = agreement.summarize(
                ratings,
                unit=config.unit,
                n_boot=config.n_boot,
                n_permutations=config.n_permutations,
                alpha=config.alpha,
                seed=config.seed,
            )

    abx = abx_trials(excluded.kept)
    ratings = rating_trials(excluded.kept)
    if len(abx):
        tables["participants"] = realism.participant_accuracy(abx)
        tables["realism_glmm"] = realism.mixed_logistic(
            abx, config.glmm_max_participants, config.seed
        )
    if len(ratings):
        tables["rating_mixed_model"] = pd.concat(
            [
                agreement.rating_mixed_model(
                    ratings, d, max_participants=config.lmm_max_participants, seed=config.seed
                )
                for d in agreement.DIMENSIONS
            ],
            ignore_index=True,
        )
        tables["gems_kappa"] = agreement.gems_kappa_table(ratings, config.unit).reset_index()
        tables["fit"] = agreement.fit_ratings(ratings)
        means = (
            ratings.groupby([config.unit, "condition"], observed=True)[list(agreement.DIMENSIONS)]
            .mean()
            .astype(float)
        )
        tables["unit_means"] = means.reset_index()
    if objective is not None and len(objective):
        tables["objective_vs_listeners"] = objective_vs_listeners(objective, abx, ratings)
    tables.update(new_trial_type_tables(excluded.kept, export.responses))
    return tables


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
    """How well each objective metric predicts listeners, clip by clip (Spearman's rho).

    Listener outcomes per generated clip (segment x condition): ABX accuracy, and the distance
    in (valence, arousal) between its mean rating and the reference clip's mean rating.
    ``objective`` is the per-clip table written by ``python -m analysis objective``.
    """
    keys = ["segment", "condition"]
    listeners = pd.DataFrame()
    if len(abx):
        listeners = abx.groupby(keys, observed=True)["correct"].mean().rename("abx_accuracy")
        listeners = listeners.to_frame()
    if len(ratings):
        means = ratings.groupby(keys, observed=True)[list(agreement.DIMENSIONS)].mean()
        means = means.astype(float).reset_index()
        reference = means[means["condition"] == agreement.REFERENCE].set_index("segment")
        generated = means[means["condition"] != agreement.REFERENCE]
        delta = (
            generated[list(agreement.DIMENSIONS)].to_numpy()
            - reference.reindex(generated["segment"])[list(agreement.DIMENSIONS)].to_numpy()
        )
        distance = pd.Series(
            np.sqrt((delta**2).sum(axis=1)),
            index=pd.MultiIndex.from_frame(generated[keys]),
            name="rating_distance",
        )
        listeners = listeners.join(distance, how="outer") if len(listeners) else distance.to_frame()
    objective = objective.copy()
    objective[keys] = objective[keys].astype(str)
    listeners = listeners.reset_index()
    listeners[keys] = listeners[keys].astype(str)
    merged = objective.merge(listeners, on=keys, how="inner")
    metrics = [c for c in objective.select_dtypes("number").columns if c not in keys]
    records = []
    for metric in metrics:
        for outcome in ("abx_accuracy", "rating_distance"):
            if outcome not in merged:
                continue
            pair = merged[[metric, outcome]].dropna()
            rho, pval = (
                stats.spearmanr(pair[metric], pair[outcome])
                if len(pair) >= 3 and pair[metric].nunique() > 1 and pair[outcome].nunique() > 1
                else (np.nan, np.nan)
            )
            records.append(
                {
                    "metric": metric,
                    "outcome": outcome,
                    "clips": len(pair),
                    "spearman": float(rho),
                    "pval": float(pval),
                }
            )
    return pd.DataFrame.from_records(
        records, columns=["metric", "outcome", "clips", "spearman", "pval"]
    )


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
    if "realism" in tables:
        table = tables["realism"]
        figure = go.Figure(
            go.Bar(
                x=table["condition"],
                y=table["accuracy"],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": table["cp_high"] - table["accuracy"],
                    "arrayminus": table["accuracy"] - table["cp_low"],
                },
            )
        )
        margin = config.equivalence_margin
        figure.add_hrect(
            y0=0.5 - margin, y1=0.5 + margin, opacity=0.15, line_width=0, fillcolor="green"
        )
        figure.add_hline(y=0.5, line_dash="dash")
        figure.update_layout(
            title="ABX accuracy per condition (95% Clopper-Pearson; shaded: equivalence margin)",
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
    return figures


TABLE_TITLES = {
    "exclusions": "Exclusions",
    "realism": "Realism (ABX), after exclusions",
    "realism_no_exclusions": "Realism (ABX), no exclusions",
    "realism_glmm": "Realism: logistic mixed model (participant and source random intercepts)",
    "agreement": "Semantic agreement with the reference, after exclusions",
    "agreement_no_exclusions": "Semantic agreement, no exclusions",
    "rating_mixed_model": "Ratings: linear mixed model, contrasts against reference",
    "gems_kappa": "GEMS words: Cohen's kappa with the reference per word",
    "fit": "Fit to video",
    "objective_vs_listeners": "Objective metrics vs listeners (Spearman per clip)",
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


def _html(export: Export, tables: dict[str, pd.DataFrame], config: ReportConfig) -> str:
    title = html.escape(str(export.study.get("study", {}).get("title", "SightSound study")))
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{title}: report</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:right}</style></head><body>",
        f"<h1>{title}</h1>",
        f"<p>{len(export.responses)} responses from "
        f"{export.responses['participant'].nunique()} participants. Equivalence margin "
        f"&plusmn;{config.equivalence_margin}; alpha {config.alpha}; Holm correction across "
        f"conditions; seed {config.seed}.</p>",
    ]
    for index, (name, figure) in enumerate(_figures(tables, config)):
        parts.append(f"<h2>{html.escape(name)}</h2>")
        # plotly.js is inlined once, with the first figure, so the file works offline.
        parts.append(figure.to_html(full_html=False, include_plotlyjs=index == 0))
    for name, table in tables.items():
        if name in ("participants", "unit_means"):
            continue
        parts.append(f"<h2>{html.escape(TABLE_TITLES.get(name, name))}</h2>")
        parts.append(table.to_html(index=False, float_format=_format_number, na_rep=""))
    parts.append("</body></html>")
    return "\n".join(parts)


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
