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


# --------------------------------------------------------------------------- P.808 ACR rows
ACR_RATING = "acr_rating"
ACR_ITEM = "acr_item"
GOLD_TOLERANCE = 1
# The known answer of the gold-standard conditions, used when a gold row has no correct_answer.
GOLD_EXPECTED = {"p808_gold_high": 5, "p808_gold_low": 1}
LISTENER_MOS_COLUMNS = ["n", "mos", "sd", "ci_low", "ci_high", "median"]


def p808_gold_passed(
    rating: float | Sequence[float] | np.ndarray,
    expected: float | Sequence[float] | np.ndarray,
    tolerance: float = GOLD_TOLERANCE,
) -> bool | np.ndarray:
    """ITU-T P.808 gold-standard rule: the answer is within ``tolerance`` (1) of the known one.

    A gold-standard question is a clip whose rating is known in advance (the clean reference,
    expected 5, or a heavily degraded one, expected 1). An answer one category away still
    counts as right; a missing answer does not. Scalars give a bool, arrays a bool array.

    >>> p808_gold_passed(4, 5), p808_gold_passed(3, 5), p808_gold_passed(2, 1)
    (True, False, True)
    >>> p808_gold_passed([5, 4, 3, float("nan")], 5)
    array([ True,  True, False, False])

    Reference: ITU-T P.808 (06/2021) clause 6.3 (gold-standard questions) and 6.4 (listeners who
    fail them are removed); Naderi & Cutler (2020), An open source implementation of ITU-T
    Recommendation P.808 with validation, Interspeech, section 2.
    """
    r = np.asarray(rating, dtype=float)
    e = np.asarray(expected, dtype=float)
    with np.errstate(invalid="ignore"):
        passed = np.isfinite(r) & np.isfinite(e) & (np.abs(r - e) <= tolerance)
    return bool(passed) if passed.ndim == 0 else passed


def p808_trap_passed(
    rating: float | Sequence[float] | np.ndarray, instructed: float | Sequence[float] | np.ndarray
) -> bool | np.ndarray:
    """ITU-T P.808 trapping-question rule: the answer is exactly the instructed one.

    A trapping clip says "please select the answer X"; only X is right (no tolerance, unlike
    gold questions). A missing answer is wrong. Scalars give a bool, arrays a bool array.

    >>> p808_trap_passed(3, 3), p808_trap_passed(4, 3)
    (True, False)
    >>> p808_trap_passed([2, 1, float("nan")], [2, 2, 2])
    array([ True, False, False])

    Reference: ITU-T P.808 (06/2021) clause 6.3 (trapping questions); Naderi & Cutler (2020).
    """
    r = np.asarray(rating, dtype=float)
    e = np.asarray(instructed, dtype=float)
    with np.errstate(invalid="ignore"):
        passed = np.isfinite(r) & np.isfinite(e) & (r == e)
    return bool(passed) if passed.ndim == 0 else passed


def p808_item_correct(
    rows: pd.DataFrame,
    item: str = ACR_ITEM,
    rating: str = ACR_RATING,
    expected: str = "correct_answer",
    tolerance: float = GOLD_TOLERANCE,
) -> pd.Series:
    """Whether each gold / trap row of an ACR table was answered right, recomputed from the raw
    answer: gold rows by :func:`p808_gold_passed`, trap rows by :func:`p808_trap_passed`.

    ``rows`` needs ``item`` (``rating``, ``gold`` or ``trap``), ``rating`` and ``expected`` (the
    known or instructed rating, as in the export's ``correct_answer``). A gold row without an
    expected value takes it from its ``condition`` (``p808_gold_high``: 5, ``p808_gold_low``: 1).
    Where a rule cannot be applied (no ``rating`` / ``expected`` column or value) the row keeps
    the export's ``correct`` (missing when there is none). Rated clips give ``<NA>``.

    >>> rows = pd.DataFrame({"acr_item": ["gold", "gold", "trap", "trap", "rating"],
    ...                      "acr_rating": [4, 3, 2, 3, 5],
    ...                      "correct_answer": ["5", "5", "2", "2", ""]})
    >>> p808_item_correct(rows).tolist()
    [True, False, True, False, <NA>]
    """
    out = pd.Series(pd.NA, index=rows.index, dtype="boolean")
    if item not in rows.columns:
        return out
    kind = rows[item].astype("string")
    gold = (kind == "gold").fillna(False).to_numpy(dtype=bool)
    trap = (kind == "trap").fillna(False).to_numpy(dtype=bool)
    if "correct" in rows.columns:
        app = rows["correct"].astype("boolean")
        out[gold | trap] = app[gold | trap]
    if rating not in rows.columns:
        return out
    given = pd.to_numeric(rows[rating], errors="coerce").astype(float).to_numpy()
    if expected in rows.columns:
        known = rows[expected].astype("string").str.strip().replace("", pd.NA)
        known = pd.to_numeric(known, errors="coerce").astype(float)
    else:
        known = pd.Series(np.nan, index=rows.index)
    if "condition" in rows.columns:
        implied = rows["condition"].astype("string").map(GOLD_EXPECTED).astype(float)
        known = known.where(known.notna() | ~gold, implied)
    known = known.to_numpy(dtype=float)
    usable = np.isfinite(given) & np.isfinite(known)
    gold_ok = np.asarray(p808_gold_passed(given, known, tolerance), dtype=bool)
    trap_ok = np.asarray(p808_trap_passed(given, known), dtype=bool)
    out[gold & usable] = gold_ok[gold & usable]
    out[trap & usable] = trap_ok[trap & usable]
    return out


def p808_catch_items(rows: pd.DataFrame, item: str = ACR_ITEM) -> pd.Series:
    """Which rows of an ACR table are P.808 gold or trap questions (never rated for MOS).

    ``item`` (``gold`` / ``trap``) decides; rows without it fall back on ``is_catch``.

    >>> rows = pd.DataFrame({"acr_item": ["rating", "gold", "trap", None],
    ...                      "is_catch": [False, True, True, True]})
    >>> p808_catch_items(rows).tolist()
    [False, True, True, True]
    """
    kind = (
        rows[item].astype("string")
        if item in rows.columns
        else pd.Series(pd.NA, index=rows.index, dtype="string")
    )
    app_catch = (
        rows["is_catch"].astype("boolean").fillna(False)
        if "is_catch" in rows.columns
        else pd.Series(False, index=rows.index, dtype="boolean")
    )
    catch = kind.isin(["gold", "trap"]).fillna(False) | (kind.isna() & app_catch)
    return catch.astype(bool)


def p808_acr_screen(
    rows: pd.DataFrame,
    item: str = ACR_ITEM,
    rating: str = ACR_RATING,
    expected: str = "correct_answer",
    tolerance: float = GOLD_TOLERANCE,
    max_failures: int = 0,
) -> Screening:
    """P.808 screening of ACR rows: drop every listener who failed a gold or trap question.

    Gold and trap rows are those with ``item`` ``gold`` / ``trap`` (rows without an ``item``
    fall back on ``is_catch``); whether each was answered right is recomputed from the raw
    answer by :func:`p808_item_correct`, so the rule does not depend on the app's ``correct``
    or ``flag_failed_catch``. A listener with more than ``max_failures`` wrong items is dropped
    with all their rows, as in :func:`p808_screen`; gold and trap rows never stay in ``kept``.
    ``listeners`` has one row per listener: ``rated`` clips, ``gold_items``, ``gold_failed``,
    ``trap_items``, ``trap_failed``, ``catch_items``, ``failed`` and ``dropped``.

    >>> rows = pd.DataFrame({"participant": ["P1"] * 3 + ["P2"] * 3,
    ...                      "acr_item": ["gold", "trap", "rating"] * 2,
    ...                      "condition": ["p808_gold_high", "p808_trap", "a"] * 2,
    ...                      "acr_rating": [4, 2, 4, 5, 3, 1],
    ...                      "correct_answer": ["5", "2", "", "5", "2", ""]})
    >>> result = p808_acr_screen(rows)
    >>> result.kept[["participant", "acr_rating"]].to_dict("records")
    [{'participant': 'P1', 'acr_rating': 4}]
    >>> result.listeners[["participant", "gold_failed", "trap_failed", "dropped"]].to_dict(
    ...     "records")
    [{'participant': 'P1', 'gold_failed': 0, 'trap_failed': 0, 'dropped': False}, \
{'participant': 'P2', 'gold_failed': 0, 'trap_failed': 1, 'dropped': True}]

    (P1 rated the gold reference 4: one away from 5, so right. P2 was told to answer 2 and
    answered 3: a trap allows no tolerance, so P2 and their rated clip go.)

    Reference: ITU-T P.808 (06/2021) clauses 6.3 and 6.4; Naderi & Cutler (2020).
    """
    work = rows.copy()
    participant = work["participant"].astype(str)
    people = pd.Index(sorted(participant.unique()), name="participant")
    if item in work.columns:
        kind = work[item].astype("string")
    else:
        kind = pd.Series(pd.NA, index=work.index, dtype="string")
    catch = p808_catch_items(work, item)
    correct = p808_item_correct(work, item, rating, expected, tolerance)
    if "correct" in work.columns:
        correct = correct.fillna(work["correct"].astype("boolean"))
    work["_p808_catch"] = catch.astype(bool)
    work["_p808_correct"] = correct
    screened = p808_screen(work, "_p808_catch", "_p808_correct", max_failures)
    wrong = work["_p808_catch"] & ~correct.fillna(False).astype(bool)

    def count(mask: pd.Series) -> pd.Series:
        counts = mask.astype(int).groupby(participant).sum()
        return counts.reindex(people, fill_value=0).astype(int)

    gold = (kind == "gold").fillna(False)
    trap = (kind == "trap").fillna(False)
    extra = pd.DataFrame(
        {
            "rated": count(~work["_p808_catch"]),
            "gold_items": count(gold),
            "gold_failed": count(gold & wrong),
            "trap_items": count(trap),
            "trap_failed": count(trap & wrong),
        }
    ).reset_index()
    listeners = extra.merge(screened.listeners, on="participant", how="left")
    kept = screened.kept.drop(columns=["_p808_catch", "_p808_correct"])
    return Screening(kept=kept, listeners=listeners)


def mos_per_listener(
    ratings: pd.DataFrame, rating: str = "rating", confidence: float = 0.95
) -> pd.DataFrame:
    """Each listener's MOS over the clips they rated, with a Student t interval.

    One row per participant: ``n`` ratings, ``mos``, ``sd``, ``ci_low``/``ci_high`` (see
    :func:`t_interval`; NaN with one rating) and ``median``. Unlike :func:`listener_mos` it
    pools the listener's conditions; filter the rows first for one condition.

    >>> df = pd.DataFrame({"participant": ["P1", "P1", "P1", "P2"], "rating": [3, 4, 5, 2]})
    >>> table = mos_per_listener(df).round(4)
    >>> table[["participant", "n", "mos", "ci_low", "ci_high"]].to_dict("records")[0]
    {'participant': 'P1', 'n': 3, 'mos': 4.0, 'ci_low': 1.5159, 'ci_high': 6.4841}

    (P1: s = 1, t(0.975, 2) = 4.3027, 4 -+ 4.3027 / sqrt(3).) Reference: ITU-T P.800.2 (2016).
    """
    table = mos_table(ratings, "participant", rating, confidence)
    return table[["participant", *LISTENER_MOS_COLUMNS]]
