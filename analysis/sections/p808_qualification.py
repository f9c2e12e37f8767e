"""Owns the report's P.808 qualification section (``p808_qualification`` rows, one per
participant): participants, passed, failed, reported normal hearing and tone-count errors per
listening device, before any exclusion."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.sections import Context, Section, Tables, register


@register
class P808Qualification(Section):
    name = "p808_qualification"
    order = 90
    trial_types = ("p808_qualification",)
    titles = {
        "p808_qualification": "P.808 qualification per listening device (all participants)",
    }

    def tables(self, context: Context) -> Tables:
        return p808_qualification_tables(context.everyone)


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
