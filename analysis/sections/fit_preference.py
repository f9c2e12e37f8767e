"""Owns the report's fit preference section (``fit_preference`` rows, 2AFC audio-video fit):
per-pair exact binomial tests after exclusions and without them, Bradley-Terry strengths after
exclusions, and the Bradley-Terry figure."""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis import preference
from analysis.config import ReportConfig
from analysis.figures import error_bars
from analysis.rows import trials_of_type
from analysis.sections import Context, Section, Tables, register


@register
class FitPreference(Section):
    name = "fit_preference"
    order = 70
    trial_types = ("fit_preference",)
    titles = {
        "fit_preference_pairs": "Fit preference (2AFC): per pair, share preferring the "
        "first-named condition, exact binomial test (after exclusions)",
        "fit_preference_pairs_no_exclusions": "Fit preference (2AFC) per pair, no exclusions",
        "fit_preference_bradley_terry": "Fit preference: Bradley-Terry strengths (after "
        "exclusions)",
    }

    def tables(self, context: Context) -> Tables:
        return fit_preference_tables(context.kept, context.everyone)

    def figures(self, tables: Tables, config: ReportConfig) -> list[tuple[str, Any]]:
        import plotly.graph_objects as go

        table = tables.get("fit_preference_bradley_terry")
        if table is None or "log_worth" not in table:
            return []
        figure = go.Figure(
            go.Scatter(
                x=table["item"].astype(str),
                y=table["log_worth"],
                mode="markers",
                marker={"size": 10},
                error_y=error_bars(table, "log_worth"),
            )
        )
        figure.add_hline(y=0, line_dash="dash")
        figure.update_layout(
            title="Fit to the video, pairwise preference: Bradley-Terry log-worth (centred, "
            "95% Wald CI)",
            yaxis_title="log-worth",
        )
        return [("Fit preference", figure)]


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
