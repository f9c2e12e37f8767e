"""Quality flags, computed from the stored answers whenever they are read, so the dashboard and
the export always agree and a flag appears as soon as the answer that raises it is stored."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from .design import with_defaults
from .extensions import db
from .listening import Fetch, ListeningEvidence, assess_listening, too_quick
from .models import MediaFetch, Participant, Trial, as_utc
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


def audio_slots(trial: Trial) -> list[str]:
    """The trial's audio media slots (every slot but a video): each must be heard."""
    media = get_trial_type(trial.trial_type).media(trial.spec)
    return [slot for slot, ref in media.items() if ref.kind != "video"]


def listening_evidence(trial: Trial, fetches: Iterable[Fetch]) -> ListeningEvidence:
    """What the server knows of the listening behind an answered trial's answer."""
    if trial.response is None:
        raise ValueError("only an answered trial has listening evidence")
    trial_type = get_trial_type(trial.trial_type)
    presented = trial.presented_at
    return assess_listening(
        audio_slots=audio_slots(trial),
        fetches=fetches,
        presented_at=as_utc(presented) if presented is not None else None,
        answered_at=as_utc(trial.response.answered_at),
        min_listen_seconds=trial_type.min_listen_seconds(trial.spec, {}),
    )


def fetch_log(
    *, study_id: int | None = None, trial_ids: Sequence[int] | None = None
) -> dict[int, list[Fetch]]:
    """The media fetches of a study's trials (or of the given trials), by trial id: one query.
    (By study, a join rather than a list of ids: an export covers thousands of trials.)"""
    statement = select(
        MediaFetch.trial_id,
        MediaFetch.slot,
        MediaFetch.first_byte,
        MediaFetch.end_byte,
        MediaFetch.total_bytes,
        MediaFetch.at,
    )
    if study_id is not None:
        statement = (
            statement.join(Trial, Trial.id == MediaFetch.trial_id)
            .join(Participant, Participant.id == Trial.participant_id)
            .where(Participant.study_id == study_id)
        )
    elif trial_ids is not None:
        statement = statement.where(MediaFetch.trial_id.in_(list(trial_ids)))
    else:
        raise TypeError("fetch_log needs a study_id or trial_ids")
    log: dict[int, list[Fetch]] = {}
    for trial_id, slot, first, end, total, at in db.session.execute(statement):
        log.setdefault(trial_id, []).append(Fetch(slot, first, end, total, as_utc(at)))
    return log
