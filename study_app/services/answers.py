"""Owns recording an answer: only to the current trial, never before its countdown ends.

Each function that writes commits once, so it either happens whole or not at all.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import (
    Response,
    Trial,
    as_utc,
    utcnow,
)
from ..trial_types import AnswerError, get_trial_type


class OutOfOrder(ValueError):
    """An answer to a trial the participant has not reached."""


class TooEarly(AnswerError):
    """An answer before the page's countdown (a pause) ended: refused, the page stays."""

    def __init__(self, seconds_left: float):
        self.seconds_left = seconds_left
        super().__init__(
            [f"Please wait until the pause is over ({math.ceil(seconds_left)} s left)."]
        )


def _refuse_before_countdown_ends(trial: Trial, wait: float, now: datetime) -> None:
    """Raise TooEarly unless `wait` seconds have passed since the page was served, by the
    server's clock: the page's countdown is the browser's, and a forged form skips it."""
    if wait <= 0:
        return
    if trial.presented_at is None:  # never served: its countdown has not even started
        raise TooEarly(wait)
    left = wait - (as_utc(now) - as_utc(trial.presented_at)).total_seconds()
    if left > 0:
        raise TooEarly(left)


def record_answer(
    trial: Trial, current: Trial | None, form: Any, now: datetime | None = None
) -> bool:
    """Store an answer to `trial`, given the participant's `current` trial (from `locate`).
    True if stored, False if the trial had been answered already (a repeated submit: the first
    answer stands, nothing is added).

    Raises AnswerError for an invalid answer (TooEarly for one before a pause's countdown
    ended, by the server's clock `now`) and OutOfOrder for a trial not yet reached.
    """
    if current is None or current.id != trial.id:
        # Every answerable trial before the current one has its answer (that is what makes the
        # current one current), so only those can be repeats; anything else is out of order.
        answerable = get_trial_type(trial.trial_type).answerable
        if answerable and (current is None or trial.trial_index < current.trial_index):
            return False
        raise OutOfOrder("this trial is not the participant's current trial")
    trial_type = get_trial_type(trial.trial_type)
    block = trial.block
    now = now or utcnow()
    _refuse_before_countdown_ends(trial, trial_type.min_answer_seconds(trial.spec, block), now)
    answer = trial_type.parse_answer(trial.spec, block, form)
    db.session.add(Response(trial_id=trial.id, answer=answer, answered_at=now))
    if trial.presented_at is None:
        trial.presented_at = now
    try:
        db.session.commit()
    except IntegrityError:
        # Two submits of the same trial raced; the other one was stored first.
        db.session.rollback()
        return False
    return True
