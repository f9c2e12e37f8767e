"""Owns who takes part: enrolling a participant (public number, counterbalancing cell, schedule,
re-entry flags), counting completions, and a researcher's withdrawal of a participant.

Each function that writes commits once, so it either happens whole or not at all.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import (
    AuditEvent,
    Participant,
    Researcher,
    Study,
    Trial,
)
from ..reentry import EntryTags, earlier_entries
from ..scheduling import Assignment, build_schedule
from .stimuli import catalog_for


def withdraw(participant: Participant, researcher: Researcher, reason: str = "") -> None:
    """Delete a participant and every answer they gave; the audit log keeps that it happened."""
    db.session.add(
        AuditEvent(
            researcher_id=researcher.id,
            study_id=participant.study_id,
            action="withdraw",
            detail={
                "participant": participant.public_id,
                "answers_deleted": sum(t.response is not None for t in participant.trials),
                "reason": reason[:500],
            },
        )
    )
    db.session.delete(participant)
    db.session.commit()


@dataclass(frozen=True)
class ExternalIds:
    participant: str | None = None  # PROLIFIC_PID
    study: str | None = None  # STUDY_ID
    session: str | None = None  # SESSION_ID


def enroll(
    study: Study,
    external: ExternalIds,
    *,
    preview: bool = False,
    attempts: int = 20,
    entry: EntryTags | None = None,
) -> Participant:
    """A new participant with a stored schedule, or the existing one for a returning PID.

    The public number is the order of arrival and is never reused; the assignment index (the
    counterbalancing cell) is the smallest one no current participant holds, so a withdrawn
    participant's cell goes to the next arrival. Two arrivals racing for the same index are
    settled by the unique constraint, and the loser tries again. Previews count down from -1,
    so they never take a real participant's place in the counterbalancing. `entry` (where the
    arrival came from) is stored, and matched against earlier participants to flag a possible
    re-entry: a flag for the researcher, never a refusal (reentry.py).
    """
    if external.participant and not preview:
        existing = db.session.scalar(
            select(Participant).where(
                Participant.study_id == study.id, Participant.external_id == external.participant
            )
        )
        if existing is not None:
            return existing
    catalog = catalog_for(study.stimulus_set)
    flags: dict[str, Any] = {}
    if entry is not None and not preview:
        reentry = earlier_entries(study, entry, datetime.now(UTC))
        flags = {"browser_tag": entry.browser, "client_tag": entry.client, **reentry.columns()}
    for _ in range(attempts):
        if preview:
            number = index = _next_preview_number(study)
        else:
            number, index = _next_public_number(study), _free_assignment_index(study)
        seed = secrets.randbelow(2**31)
        participant = Participant(
            study=study,
            assignment_index=index,
            public_number=number,
            seed=seed,
            external_id=external.participant,
            external_study_id=external.study,
            external_session_id=external.session,
            is_preview=preview,
            **flags,
        )
        in_block: dict[int, int] = {}
        for trial_index, spec in enumerate(
            build_schedule(study.design, catalog, Assignment(seed=seed, index=index))
        ):
            position = in_block.get(spec.block_index, 0)
            in_block[spec.block_index] = position + 1
            participant.trials.append(
                Trial(
                    trial_index=trial_index,
                    trial_in_block=position,
                    block_id=spec.block_id,
                    block_index=spec.block_index,
                    trial_type=spec.trial_type,
                    spec=spec.spec,
                )
            )
        db.session.add(participant)
        try:
            db.session.commit()
            return participant
        except IntegrityError:
            db.session.rollback()
            if external.participant:  # the same PID arrived twice at once: take theirs
                existing = db.session.scalar(
                    select(Participant).where(
                        Participant.study_id == study.id,
                        Participant.external_id == external.participant,
                    )
                )
                if existing is not None:
                    return existing
    raise RuntimeError("could not allocate an assignment index; too many concurrent arrivals")


def _next_public_number(study: Study) -> int:
    """Count this arrival on the study row and return its number. The UPDATE also holds the row
    until the arrival is committed (PostgreSQL), so a burst of arrivals queues instead of
    colliding; on a rollback the count goes back with everything else."""
    return db.session.execute(
        update(Study)
        .where(Study.id == study.id)
        .values(participants_enrolled=Study.participants_enrolled + 1)
        .returning(Study.participants_enrolled)
        .execution_options(synchronize_session=False)
    ).scalar_one()


def _free_assignment_index(study: Study) -> int:
    taken = set(
        db.session.scalars(
            select(Participant.assignment_index).where(
                Participant.study_id == study.id, Participant.is_preview.is_(False)
            )
        )
    )
    return next(index for index in range(len(taken) + 1) if index not in taken)


def _next_preview_number(study: Study) -> int:
    lowest = db.session.scalar(
        select(func.min(Participant.public_number)).where(
            Participant.study_id == study.id, Participant.is_preview.is_(True)
        )
    )
    return min(lowest or 0, 0) - 1


def completed_count(study: Study) -> int:
    return db.session.scalar(
        select(func.count(Participant.id)).where(
            Participant.study_id == study.id,
            Participant.is_preview.is_(False),
            Participant.completed_at.is_not(None),
        )
    )
