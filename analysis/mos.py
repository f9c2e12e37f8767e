"""Mean opinion scores (MOS, absolute category rating) with ITU-T P.808-style screening.

No MOS/ACR trial type exists in the study app yet, so the functions work on plain tables with
documented columns: ``participant``, the rated ``condition`` and ``clip``, and a numeric rating
column named by ``rating`` (default ``"rating"``; the report uses them for ``similarity`` 1-7 and
``fit`` 1-7 rows too). Screening uses ``is_catch`` (gold / trapping item) with ``correct``.

References: ITU-T P.800 (1996) Annex B (ACR, MOS); ITU-T P.800.2 (2016) (MOS with its 95%
confidence interval, Student t over ratings); ITU-T P.808 (2021) clauses on gold-standard and
trapping questions (listeners who fail them are removed before MOS are computed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

MOS_COLUMNS = ["n", "listeners", "mos", "sd", "ci_low", "ci_high", "median"]


def t_interval(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean and Student t confidence interval (ITU-T P.800.2: MOS +- t(0.975, n-1) s / sqrt(n)).

    >>> mean, low, high = t_interval([3, 4, 5])
    >>> mean, round(low, 4), round(high, 4)
    (4.0, 1.5159, 6.4841)

    (s = 1, t(0.975, 2) = 4.3027, 4.3027 / sqrt(3) = 2.4841.) With one value the interval is NaN.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return mean, float(mean - half), float(mean + half)


def mos_table(
    ratings: pd.DataFrame,
    by: str | Sequence[str] = "condition",
    rating: str = "rating",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """MOS per group: n ratings, listeners, mean, SD, t interval, median.

    The interval treats ratings as independent (as P.800.2 does); with several ratings per
    listener it is optimistic. :func:`listener_mos` gives the per-listener means for an interval
    over listeners instead.

    >>> df = pd.DataFrame({"participant": ["P1", "P2", "P3", "P1"],
    ...                    "condition": ["a", "a", "a", "b"], "rating": [3, 4, 5, 2]})
    >>> mos_table(df)[["condition", "n", "listeners", "mos", "median"]].to_dict("records")
    [{'condition': 'a', 'n': 3, 'listeners': 3, 'mos': 4.0, 'median': 4.0}, \
{'condition': 'b', 'n': 1, 'listeners': 1, 'mos': 2.0, 'median': 2.0}]
    """
    keys = [by] if isinstance(by, str) else list(by)
    records = []
    for key, rows in ratings.groupby(keys, observed=True, sort=True):
        values = pd.to_numeric(rows[rating], errors="coerce").astype(float).dropna()
        mean, low, high = t_interval(values.to_numpy(), confidence)
        record = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        record.update(
            {
                "n": int(len(values)),
                "listeners": int(rows.loc[values.index, "participant"].nunique())
                if "participant" in rows
                else 0,
                "mos": mean,
                "sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                "ci_low": low,
                "ci_high": high,
                "median": float(values.median()) if len(values) else float("nan"),
            }
        )
        records.append(record)
    return pd.DataFrame.from_records(records, columns=[*keys, *MOS_COLUMNS])


def mos_per_condition(ratings: pd.DataFrame, rating: str = "rating") -> pd.DataFrame:
    """MOS per condition (see :func:`mos_table`).

    >>> df = pd.DataFrame({"participant": ["P1", "P2"], "condition": ["a", "a"],
    ...                    "rating": [2, 4]})
    >>> mos_per_condition(df)["mos"].tolist()
    [3.0]
    """
    return mos_table(ratings, "condition", rating)


def mos_per_clip(ratings: pd.DataFrame, rating: str = "rating") -> pd.DataFrame:
    """MOS per clip (condition and clip id; see :func:`mos_table`).

    >>> df = pd.DataFrame({"participant": ["P1", "P2", "P1"], "condition": ["a", "a", "a"],
    ...                    "clip": ["c1", "c1", "c2"], "rating": [2, 4, 5]})
    >>> mos_per_clip(df)[["clip", "mos"]].to_dict("records")
    [{'clip': 'c1', 'mos': 3.0}, {'clip': 'c2', 'mos': 5.0}]
    """
    return mos_table(ratings, ["condition", "clip"], rating)


def listener_mos(
    ratings: pd.DataFrame, rating: str = "rating", by: str | Sequence[str] = "condition"
) -> pd.DataFrame:
    """Each listener's mean rating per condition (one row per participant x condition).

    >>> df = pd.DataFrame({"participant": ["P1", "P1", "P2"], "condition": ["a", "a", "a"],
    ...                    "rating": [2, 4, 5]})
    >>> listener_mos(df).to_dict("records")
    [{'participant': 'P1', 'condition': 'a', 'n': 2, 'mos': 3.0}, \
{'participant': 'P2', 'condition': 'a', 'n': 1, 'mos': 5.0}]
    """
    keys = ["participant", *([by] if isinstance(by, str) else list(by))]
    values = ratings.assign(_r=pd.to_numeric(ratings[rating], errors="coerce").astype(float))
    grouped = values.groupby(keys, observed=True)["_r"]
    out = pd.DataFrame({"n": grouped.count(), "mos": grouped.mean()}).reset_index()
    return out.astype({"n": int})


@dataclass
class Screening:
    """Rows kept after P.808-style screening and one row per listener saying why."""

    kept: pd.DataFrame
    listeners: pd.DataFrame


def p808_screen(
    ratings: pd.DataFrame, catch: str = "is_catch", correct: str = "correct", max_failures: int = 0
) -> Screening:
    """Drop listeners who failed gold-standard / trapping items (ITU-T P.808 style).

    A row with ``catch`` true is a gold or trapping item and ``correct`` says whether it was
    answered right; a listener with more than ``max_failures`` wrong ones is dropped with all of
    their rows. The catch rows themselves never stay in ``kept``. Without those columns nothing is
    screened (every listener kept) and only non-catch rows are returned.

    >>> df = pd.DataFrame({"participant": ["P1", "P1", "P2", "P2"],
    ...                    "is_catch": [True, False, True, False],
    ...                    "correct": [False, None, True, None], "rating": [1, 3, 5, 4]})
    >>> result = p808_screen(df)
    >>> result.kept["participant"].tolist()
    ['P2']
    >>> result.listeners[["participant", "catch_items", "failed", "dropped"]].to_dict("records")
    [{'participant': 'P1', 'catch_items': 1, 'failed': 1, 'dropped': True}, \
{'participant': 'P2', 'catch_items': 1, 'failed': 0, 'dropped': False}]
    """
    people = pd.Index(sorted(ratings["participant"].astype(str).unique()), name="participant")
    if catch not in ratings.columns:
        listeners = pd.DataFrame({"catch_items": 0, "failed": 0, "dropped": False}, index=people)
        return Screening(kept=ratings, listeners=listeners.reset_index())
    is_catch = ratings[catch].fillna(False).astype(bool)
    participant = ratings["participant"].astype(str)
    if correct in ratings.columns:
        wrong = is_catch & ~ratings[correct].fillna(False).astype(bool)
    else:
        wrong = pd.Series(False, index=ratings.index)
    items = is_catch.groupby(participant).sum().reindex(people, fill_value=0)
    failed = wrong.groupby(participant).sum().reindex(people, fill_value=0)
    listeners = pd.DataFrame({"catch_items": items.astype(int), "failed": failed.astype(int)})
    listeners["dropped"] = listeners["failed"] > max_failures
    dropped = set(listeners.index[listeners["dropped"]])
    kept = ratings[~is_catch & ~participant.isin(dropped)]
    return Screening(kept=kept, listeners=listeners.reset_index())
