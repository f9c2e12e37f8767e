"""Quality flags, computed from the stored answers whenever they are read, so the dashboard and
the export always agree and a flag appears as soon as the answer that raises it is stored."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from .design import with_defaults
from .extensions import db
from .listening import (
    Fetch,
    ListeningEvidence,
    assess_listening,
    merge_range,
    next_window,
    too_quick,
)
from .models import MediaEvidence, Participant, Response, Trial, as_utc
from .trial_types import get_trial_type

FetchLog = Mapping[int, Sequence[Fetch]]  # trial id -> the media fetches of that trial


@dataclass(frozen=True)
class ParticipantQuality:
    failed_screening: bool
    failed_catch: bool
    too_fast_trials: frozenset[int] = field(default_factory=frozenset)  # trial ids
    # The server's listening evidence per answered trial (trial id -> evidence), from its log
    # of media fetches: see listening.py.
    listening: Mapping[int, ListeningEvidence] = field(default_factory=dict)

    @property
    def unheard_trials(self) -> frozenset[int]:
        return frozenset(i for i, e in self.listening.items() if e.flag_unheard)

    @property
    def too_quick_trials(self) -> frozenset[int]:
        return frozenset(i for i, e in self.listening.items() if e.flag_too_quick)

    @property
    def excluded(self) -> bool:
        """Participant-level exclusion; too-fast answers are excluded row by row instead."""
        return self.failed_screening or self.failed_catch


def assess(
    blocks: list[dict[str, Any]], trials: list[Trial], fetches: FetchLog | None = None
) -> ParticipantQuality:
    """Flags of one participant's trials, from the loaded objects (no query). The listening
    evidence needs their media fetch log (`fetch_log`): without `fetches` it is left empty."""
    answered = [t for t in trials if t.response is not None]
    return ParticipantQuality(
        failed_screening=any(
            block_screening_failed(block, [t for t in trials if t.block_index == index])
            for index, block in enumerate(blocks)
        ),
        failed_catch=any(
            get_trial_type(t.trial_type).catch_failed(t.spec, t.response.answer) for t in answered
        ),
        too_fast_trials=frozenset(t.id for t in answered if answered_too_fast(t)),
        listening=(
            {}
            if fetches is None
            else {t.id: listening_evidence(t, fetches.get(t.id, ())) for t in answered}
        ),
    )


def block_screening_failed(block: dict[str, Any], block_trials: list[Trial]) -> bool:
    """A screening block (headphone check, P.808 qualification) that can no longer be passed.
    (Flagged as soon as that is certain, not only when the block is complete.) The type holds
    the rule: a headphone check scores each of its tests (antiphase, Huggins) on its own trials,
    and with `method: both` failing either test fails the block (trial_types/headphone.py)."""
    answered = [(t.spec, t.response.answer) for t in block_trials if t.response is not None]
    if not answered:
        return False
    trial_type = get_trial_type(block["type"])
    return trial_type.screening_failed(with_defaults(block), answered, len(block_trials))


def elapsed_ms(trial: Trial) -> int | None:
    """Server-side time from first showing the trial to storing its answer. The client cannot
    make it shorter, so the too-fast flag uses it rather than the client's own timing."""
    if trial.presented_at is None or trial.response is None:
        return None
    delta = as_utc(trial.response.answered_at) - as_utc(trial.presented_at)
    return int(delta.total_seconds() * 1000)


def answered_too_fast(trial: Trial) -> bool:
    minimum = get_trial_type(trial.trial_type).min_listen_seconds(trial.spec, {})
    return too_quick(elapsed_ms(trial), minimum)


def required_slots(trial: Trial) -> tuple[str, ...]:
    """The slots the participant must hear to answer the trial (the type says which:
    `TrialType.required_slots`): each must have been sent whole before the answer."""
    return get_trial_type(trial.trial_type).required_slots(trial.spec)


def listening_evidence(trial: Trial, fetches: Iterable[Fetch]) -> ListeningEvidence:
    """What the server knows of the listening behind an answered trial's answer."""
    if trial.response is None:
        raise ValueError("only an answered trial has listening evidence")
    trial_type = get_trial_type(trial.trial_type)
    presented = trial.presented_at
    return assess_listening(
        audio_slots=required_slots(trial),
        fetches=fetches,
        presented_at=as_utc(presented) if presented is not None else None,
        answered_at=as_utc(trial.response.answered_at),
        min_listen_seconds=trial_type.min_listen_seconds(trial.spec, {}),
    )


def fetch_log(
    *, study_id: int | None = None, trial_ids: Sequence[int] | None = None
) -> dict[int, list[Fetch]]:
    """What was sent of a study's trials' media (or of the given trials'), by trial id: one
    query, one row per trial slot (MediaEvidence), however many requests there were. (By
    study, a join rather than a list of ids: an export covers thousands of trials.)

    The recorder adds only bytes written while the trial was unanswered, so every range of a
    row was sent before the answer; each becomes a `Fetch` dated at the row's first record. A
    slot asked for but sent nothing (a HEAD, a client gone before the first byte) gets an empty
    range, so it shows as `slot:0.00` rather than not at all."""
    statement = select(
        MediaEvidence.trial_id,
        MediaEvidence.slot,
        MediaEvidence.ranges,
        MediaEvidence.total_bytes,
        MediaEvidence.first_at,
    )
    if study_id is not None:
        statement = (
            statement.join(Trial, Trial.id == MediaEvidence.trial_id)
            .join(Participant, Participant.id == Trial.participant_id)
            .where(Participant.study_id == study_id)
        )
    elif trial_ids is not None:
        statement = statement.where(MediaEvidence.trial_id.in_(list(trial_ids)))
    else:
        raise TypeError("fetch_log needs a study_id or trial_ids")
    log: dict[int, list[Fetch]] = {}
    for trial_id, slot, ranges, total, first_at in db.session.execute(statement):
        at = as_utc(first_at)
        fetches = log.setdefault(trial_id, [])
        fetches.extend(Fetch(slot, first, end, total, at) for first, end in ranges or [(0, 0)])
    return log


def record_sent(
    trial_id: int, slot: str, first: int, written: int, total: int, *, now: datetime
) -> bool:
    """Add one media response to its trial slot's evidence, after its body was written: bytes
    [first, first + written) of `total` went out, and the request counts in the throttle's
    window. One transaction: take a lock, read the slot's row (and whether the trial is
    answered), then insert or update it with the ranges merged into its union
    (listening.merge_range), so the row stays small however many requests come.

    Nothing is added once the trial is answered (False): the evidence is what was sent before
    the answer, and a response still being written when the answer came does not count. The
    read takes a lock first, so that nothing changes between it and the write: on PostgreSQL
    the trial's row (the answer's insert waits for it, its foreign key taking a share lock on
    that row, and so do the slot's other requests: a browser may fetch a slot in parallel
    ranges, and no merge is lost); on SQLite the database's write lock (BEGIN IMMEDIATE)."""
    session = db.session
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        # pysqlite would begin only at the first write, after the read: take the lock now.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        # Locked on its own, before the read: a locking read that joins other tables would
        # see their rows as they were before it waited for the lock (READ COMMITTED).
        session.execute(select(Trial.id).where(Trial.id == trial_id).with_for_update())
    found = session.execute(
        select(
            Response.id.label("answer_id"),
            MediaEvidence.id,
            MediaEvidence.ranges,
            MediaEvidence.requests,
            MediaEvidence.window_start,
            MediaEvidence.window_requests,
        )
        .select_from(Trial)
        .outerjoin(Response, Response.trial_id == Trial.id)
        .outerjoin(
            MediaEvidence, (MediaEvidence.trial_id == Trial.id) & (MediaEvidence.slot == slot)
        )
        .where(Trial.id == trial_id)
    ).first()
    if found is None or found.answer_id is not None:  # withdrawn, or answered
        session.rollback()
        return False
    ranges = merge_range(found.ranges or [], first, first + written)
    if found.id is None:
        session.execute(
            insert(MediaEvidence).values(
                trial_id=trial_id,
                slot=slot,
                total_bytes=total,
                ranges=ranges,
                requests=1,
                first_at=now,
                last_at=now,
                window_start=now,
                window_requests=1,
            )
        )
    else:
        window_start, window_requests = next_window(
            as_utc(found.window_start), found.window_requests, now
        )
        session.execute(
            update(MediaEvidence)
            .where(MediaEvidence.id == found.id)
            .values(
                ranges=ranges,
                total_bytes=total,
                requests=found.requests + 1,
                last_at=now,
                window_start=window_start,
                window_requests=window_requests,
            )
        )
    session.commit()
    return True
