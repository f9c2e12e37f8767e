"""What the app does to the database, apart from the HTTP layer: import, create, enroll, answer.

Each function that writes commits once, so it either happens whole or not at all.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased, joinedload

from .audio import canonical_wav_bytes
from .catalog import Catalog
from .design import COMPLETION_OUTCOMES, DesignError, validated_design, with_defaults
from .extensions import db
from .models import (
    AuditEvent,
    Clip,
    Participant,
    Researcher,
    Response,
    Segment,
    StimulusSet,
    Study,
    Trial,
    as_utc,
    utcnow,
)
from .reentry import EntryTags, earlier_entries
from .scheduling import Assignment, build_schedule
from .stimulus_set import StimulusSetError, load_stimulus_set
from .trial_types import AnswerError, all_trial_types, get_trial_type

VIDEO_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".ogv": "video/ogg", ".mov": "video/mp4"}
# Every media file gets the same modification time, so Last-Modified says nothing about a clip.
MEDIA_MTIME = 946684800  # 2000-01-01T00:00:00Z


class ImportRefused(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("stimulus set refused:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


# Stimulus sets ---------------------------------------------------------------------------------


def import_stimulus_set(folder: Path, media_dir: Path) -> StimulusSet:
    """Validate a stimulus set and import it; a refused import changes nothing.

    Participants are served canonical copies with random names (plain PCM WAV with no metadata
    chunks, one fixed mtime), never the set's own files.
    """
    folder = Path(folder).resolve()
    try:
        stimuli = load_stimulus_set(folder)
    except StimulusSetError as exc:
        raise ImportRefused(exc.problems) from exc
    manifest_bytes = (folder / "manifest.json").read_bytes()
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    existing = db.session.scalar(select(StimulusSet).where(StimulusSet.name == stimuli.name))
    if existing is not None:
        if existing.manifest_sha256 == manifest_sha:
            return existing  # importing the same set twice is a no-op
        raise ImportRefused(
            [f"a different stimulus set named {stimuli.name!r} is already imported"]
        )

    media_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def store(data: bytes, suffix: str) -> str:
        name = secrets.token_hex(16) + suffix
        path = media_dir / name
        path.write_bytes(data)
        os.utime(path, (MEDIA_MTIME, MEDIA_MTIME))
        written.append(path)
        return name

    try:
        record = StimulusSet(
            name=stimuli.name,
            folder=str(folder),
            manifest=json.loads(manifest_bytes),
            manifest_sha256=manifest_sha,
        )
        db.session.add(record)
        for segment in stimuli.segments:
            source = stimuli.source(segment.source)
            suffix = source.video.suffix.lower()
            video_file = store(source.video.read_bytes(), suffix) if source.video else None
            db.session.add(
                Segment(
                    stimulus_set=record,
                    key=segment.id,
                    source_key=segment.source,
                    start=segment.start,
                    duration=segment.duration,
                    video_file=video_file,
                    video_mimetype=VIDEO_TYPES.get(suffix, "application/octet-stream"),
                )
            )
        for clip in stimuli.clips:
            db.session.add(
                Clip(
                    stimulus_set=record,
                    key=clip.id,
                    segment_key=clip.segment,
                    source_key=clip.source,
                    condition=clip.condition,
                    duration=clip.duration,
                    media_file=store(canonical_wav_bytes(clip.path), ".wav"),
                )
            )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return record


def catalog_for(stimulus_set: StimulusSet) -> Catalog:
    rows = db.session.execute(
        select(Clip.segment_key, Clip.source_key, Clip.condition, Clip.key, Clip.duration).where(
            Clip.stimulus_set_id == stimulus_set.id
        )
    )
    return Catalog.from_clips(tuple(row) for row in rows)


# Studies ---------------------------------------------------------------------------------------


def create_study(data: dict[str, Any], owner: Researcher, status: str = "open") -> Study:
    """Create a study from a design mapping (see docs/design-format.md). Raises DesignError."""
    set_name = data.get("stimulus_set")
    stimulus_set = db.session.scalar(select(StimulusSet).where(StimulusSet.name == set_name))
    if stimulus_set is None:
        raise DesignError([f"no imported stimulus set named {set_name!r}"])
    design = _with_completion_codes(validated_design(data, catalog_for(stimulus_set)))
    if db.session.scalar(select(Study).where(Study.slug == design["slug"])) is not None:
        raise DesignError([f"a study with slug {design['slug']!r} exists already"])
    code = design["completion"]["code"]
    study = Study(
        slug=design["slug"],
        title=design["title"],
        owner=owner,
        stimulus_set=stimulus_set,
        design=design,
        status=status,
        completion_code=code,
    )
    db.session.add(study)
    db.session.commit()
    return study


def update_design(study: Study, data: dict[str, Any]) -> Study:
    """Replace a draft's design. Raises DesignError; an open or closed study is immutable."""
    if study.status != "draft":
        raise DesignError(["the design of an open or closed study cannot change; duplicate it"])
    # A code left empty keeps the one the study has (it may be set up on Prolific already).
    previous = dict(study.design.get("completion") or {}, code=study.completion_code)
    design = validated_design(data, catalog_for(study.stimulus_set))
    design = _with_completion_codes(design, previous)
    if design["slug"] != study.slug:
        if db.session.scalar(select(Study).where(Study.slug == design["slug"])) is not None:
            raise DesignError([f"a study with slug {design['slug']!r} exists already"])
        study.slug = design["slug"]
    if design["stimulus_set"] != study.stimulus_set.name:
        raise DesignError(["a study's stimulus set cannot change; create a new study"])
    study.title = design["title"]
    study.design = design
    study.completion_code = design["completion"]["code"]
    db.session.commit()
    return study


def _with_completion_codes(
    design: dict[str, Any], previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`design` with a code for every outcome (completion.code, screened_out_code,
    failed_attention_code): as given, else `previous`'s, else a new random one. They are kept in
    the stored design, so the designer, the export's study.json and Prolific's set-up agree."""
    completion = design["completion"]
    for key in COMPLETION_OUTCOMES:
        completion[key] = completion.get(key) or (previous or {}).get(key)
    for key in COMPLETION_OUTCOMES:
        while not completion[key]:
            code = secrets.token_hex(4).upper()
            # Distinct outcomes need distinct codes: that is how Prolific tells them apart.
            if code not in completion.values():
                completion[key] = code
    return design


STATUS_MOVES = {("draft", "open"), ("open", "closed"), ("closed", "open")}


def set_status(study: Study, status: str, researcher: Researcher) -> None:
    if (study.status, status) not in STATUS_MOVES:
        raise ValueError(f"a {study.status} study cannot become {status}")
    db.session.add(
        AuditEvent(
            researcher_id=researcher.id,
            study_id=study.id,
            action=f"status:{status}",
            detail={"from": study.status},
        )
    )
    study.status = status
    db.session.commit()


def duplicate_study(study: Study, owner: Researcher) -> Study:
    """A new draft with the same design (its own slug, entry link and no participants)."""
    base = study.slug[:50]
    number = 1
    while db.session.scalar(select(Study.id).where(Study.slug == f"{base}-copy{number}")):
        number += 1
    design = dict(study.design, slug=f"{base}-copy{number}", title=f"{study.title} (copy)")
    return create_study(design, owner, status="draft")


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


# Participants ----------------------------------------------------------------------------------


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
    block = with_defaults(trial.participant.study.design["blocks"][trial.block_index])
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


__all__ = [
    "AnswerError",
    "DesignError",
    "ExternalIds",
    "ImportRefused",
    "OutOfOrder",
    "TooEarly",
    "catalog_for",
    "create_study",
    "current_media",
    "enroll",
    "import_stimulus_set",
    "locate",
    "record_answer",
]
