"""Owns locating a participant's current trial, the media it may serve, and their progress.

Each function that writes commits once, so it either happens whole or not at all.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, func, or_, select
from sqlalchemy.orm import aliased, joinedload

from ..extensions import db
from ..models import (
    Participant,
    Response,
    Study,
    Trial,
)
from ..trial_types import all_trial_types


def _answerable_types() -> list[str]:
    return sorted(name for name, t in all_trial_types().items() if t.answerable)


def _one_of(column: Any, values: Sequence[str]) -> ColumnElement[bool]:
    """`column IN (values)` for a fixed list, as plain equalities: an IN list is an "expanding"
    parameter that SQLAlchemy re-renders into the SQL on every execution (a fifth of the cost
    of a cached statement with eleven values), equalities are bound like any other parameter."""
    return or_(*(column == value for value in values))


def _first_open_trial_id(participant_id: Any, types: Sequence[str]):
    """Id of the participant's first answerable trial without a response, as a subquery."""
    trial = aliased(Trial)
    unanswered = ~select(Response.id).where(Response.trial_id == trial.id).exists()
    return (
        select(trial.id)
        .where(trial.participant_id == participant_id, _one_of(trial.trial_type, types), unanswered)
        .order_by(trial.trial_index)
        .limit(1)
        .scalar_subquery()
    )


@dataclass(frozen=True)
class Position:
    """Where a participant stands: the participant (with the study loaded), the first trial still
    to answer (None when only informative pages are left) and, when asked for, the progress
    over the trials the participant perceives as such (not consent, not pauses)."""

    participant: Participant
    current: Trial | None
    answered: int | None = None
    total: int | None = None


def locate(token: str, *, with_progress: bool = False) -> Position | None:
    """A participant by token, their current trial and (optionally) their progress: one query,
    because every page, media and answer request starts here."""
    statement = _locate_statement(
        tuple(_answerable_types()), _counted_types() if with_progress else ()
    )
    row = db.session.execute(statement, {"token": token}).first()
    if row is None:
        return None
    if with_progress:
        return Position(row[0], row[1], int(row[2]), int(row[3]))
    return Position(row[0], row[1])


# Pages that take an answer but that a participant does not perceive as trials of the study:
# agreeing to take part, and the pauses between ACR ratings (trial type "acr", item "rest").
# Counting them made a consent click read as "1 of N answered". Screening pages (headphone
# check, P.808 qualification) are listening tasks the participant works through, so they count.
NOT_COUNTED_TYPES = frozenset({"consent"})


REST_ITEM = "rest"


def _counted_types() -> tuple[str, ...]:
    return tuple(t for t in _answerable_types() if t not in NOT_COUNTED_TYPES)


def _counts_as_trial(trial: Any, types: Sequence[str]) -> ColumnElement[bool]:
    """Whether `trial` (the Trial entity or an alias of it) is one the progress bar counts."""
    # Only ACR specs have an "item"; COALESCE, because `NULL != 'rest'` is NULL, not true.
    item = func.coalesce(trial.spec["item"].as_string(), "")
    return _one_of(trial.trial_type, types) & (item != REST_ITEM)


@functools.lru_cache(maxsize=8)
def _locate_statement(types: tuple[str, ...], counted_types: tuple[str, ...]) -> Select:
    """Built once: constructing a statement with aliases costs more than running it. Progress
    (answered, total) comes with it when `counted_types` is not empty."""
    columns: list[Any] = [Participant, Trial]
    if counted_types:
        counted = aliased(Trial)
        trials = (counted.participant_id == Participant.id) & _counts_as_trial(
            counted, counted_types
        )
        total = select(func.count(counted.id)).where(trials).scalar_subquery()
        answered = (
            select(func.count(Response.id))
            .join(counted, Response.trial_id == counted.id)
            .where(trials)
            .scalar_subquery()
        )
        columns += [answered, total]
    return (
        select(*columns)
        .options(joinedload(Participant.study))
        .outerjoin(Trial, Trial.id == _first_open_trial_id(Participant.id, types))
        .where(Participant.token == bindparam("token"))
    )


@dataclass(frozen=True)
class CurrentMedia:
    """What serving a medium needs to know of a participant's current trial, and no more."""

    trial_id: int  # the media fetch log's key
    trial_token: str
    trial_type: str
    spec: dict[str, Any]
    stimulus_set_id: int


def current_media(token: str) -> CurrentMedia | None:
    """The participant's current trial, for a media request: the same one `locate` finds, as
    plain columns (half the requests are media, and building ORM objects for the participant,
    the study and its design would cost more than the query)."""
    row = db.session.execute(
        _current_media_statement(tuple(_answerable_types())), {"token": token}
    ).first()
    return CurrentMedia(*row) if row is not None else None


@functools.lru_cache(maxsize=8)
def _current_media_statement(types: tuple[str, ...]) -> Select:
    return (
        select(Trial.id, Trial.token, Trial.trial_type, Trial.spec, Study.stimulus_set_id)
        .select_from(Participant)
        .join(Study, Study.id == Participant.study_id)
        .join(Trial, Trial.id == _first_open_trial_id(Participant.id, types))
        .where(Participant.token == bindparam("token"))
    )


def progress_counts(participant: Participant) -> tuple[int, int]:
    """(answered, total) over the participant's trials as the progress bar counts them (see
    NOT_COUNTED_TYPES), in one query."""
    total, done = db.session.execute(
        select(func.count(Trial.id), func.count(Response.id))
        .select_from(Trial)
        .outerjoin(Response, Response.trial_id == Trial.id)
        .where(Trial.participant_id == participant.id, _counts_as_trial(Trial, _counted_types()))
    ).one()
    return int(done), int(total)
