"""Owns row selection: which rows of the (excluded) export enter a trial type's statistics.

Catch trials are left out everywhere; the screening trial types have no statistics of their own.
The report's sections (:mod:`analysis.sections`) select their rows with these.
"""

from __future__ import annotations

import pandas as pd


def abx_trials(responses: pd.DataFrame) -> pd.DataFrame:
    """ABX rows that enter the realism statistics (catch trials left out)."""
    rows = responses[(responses["trial_type"] == "abx") & ~responses["is_catch"].astype(bool)]
    return rows.assign(correct=rows["correct"].astype(int))


def trials_of_type(responses: pd.DataFrame, trial_type: str) -> pd.DataFrame:
    """Rows of one trial type that enter the statistics (catch trials left out).

    >>> frame = pd.DataFrame({"trial_type": ["similarity", "abx"], "is_catch": [False, False]})
    >>> len(trials_of_type(frame, "similarity"))
    1
    """
    catch = responses["is_catch"].fillna(False).astype(bool)
    return responses[(responses["trial_type"] == trial_type) & ~catch]


def rating_trials(responses: pd.DataFrame) -> pd.DataFrame:
    """Emotion-rating rows that enter the agreement statistics (catch trials left out)."""
    keep = (responses["trial_type"] == "emotion_rating") & ~responses["is_catch"].astype(bool)
    return responses[keep]
