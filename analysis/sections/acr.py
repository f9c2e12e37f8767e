"""Owns the report's ACR section (``acr`` rows, ITU-T P.808 absolute category rating): the P.808
screening per listener (gold and trap items), MOS per condition, clip and listener after it and
without it, and the ACR figure."""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis import mos
from analysis.config import ReportConfig
from analysis.figures import error_bars
from analysis.sections import Context, Section, Tables, register


@register
class Acr(Section):
    name = "acr"
    order = 80
    trial_types = ("acr",)
    titles = {
        "acr_p808_screening": "ACR: P.808 screening per listener (gold within +-1, trap exact; "
        "all listeners, before exclusions)",
        "acr_mos": "ACR MOS per condition (1-5, 95% t CI), after exclusions and P.808 screening",
        "acr_mos_no_screening": "ACR MOS per condition, no P.808 screening and no exclusions",
        "acr_mos_per_clip": "ACR MOS per clip, after exclusions and P.808 screening",
        "acr_mos_per_listener": "ACR MOS per listener, after exclusions and P.808 screening",
    }

    def tables(self, context: Context) -> Tables:
        return acr_tables(context.kept, context.everyone)

    def figures(self, tables: Tables, config: ReportConfig) -> list[tuple[str, Any]]:
        import plotly.graph_objects as go

        if "acr_mos" not in tables:
            return []
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
                    error_y=error_bars(table, "mos"),
                )
            )
        figure.update_layout(
            title="ACR MOS per condition (1 = bad ... 5 = excellent; 95% t CI)",
            yaxis_range=[1, 5],
            yaxis_title="MOS",
            barmode="group",
        )
        return [("ACR quality (P.808)", figure)]


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
