"""Owns the report's MUSHRA section (``mushra`` rows, ITU-R BS.1534-3): post-screening per
listener, scores per condition with and without it, the mixed model against the hidden
reference, and the MUSHRA figure."""

from __future__ import annotations

from typing import Any

from analysis import mushra
from analysis.config import ReportConfig
from analysis.figures import error_bars
from analysis.sections import Context, Section, Tables, register


@register
class Mushra(Section):
    name = "mushra"
    order = 40
    trial_types = ("mushra",)
    titles = {
        "mushra_post_screening": "MUSHRA post-screening (BS.1534-3: hidden reference < 90 in "
        "more than 15% of screens)",
        "mushra": "MUSHRA scores (0-100, 95% t CI), after post-screening",
        "mushra_no_post_screening": "MUSHRA scores, no post-screening",
        "mushra_mixed_model": "MUSHRA: linear mixed model, contrasts against the hidden "
        "reference",
    }

    def tables(self, context: Context) -> Tables:
        rows = mushra.mushra_trials(context.kept)
        if not len(rows) or "stimulus_role" not in rows:
            return {}
        return {
            "mushra_post_screening": mushra.post_screening(rows),
            "mushra": mushra.mushra_scores(rows, post_screen=True),
            "mushra_no_post_screening": mushra.mushra_scores(rows, post_screen=False),
            "mushra_mixed_model": mushra.mushra_mixed_model(rows),
        }

    def figures(self, tables: Tables, config: ReportConfig) -> list[tuple[str, Any]]:
        import plotly.graph_objects as go

        if "mushra" not in tables:
            return []
        table = tables["mushra"]
        figure = go.Figure(
            go.Bar(
                x=table["condition"].astype(str),
                y=table["mean"],
                error_y=error_bars(table, "mean"),
            )
        )
        figure.update_layout(
            title="MUSHRA score per condition (95% t CI, after post-screening)",
            yaxis_range=[0, 100],
            yaxis_title="score",
        )
        return [("MUSHRA", figure)]
