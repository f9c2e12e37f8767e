"""Quality flags, computed from the stored answers whenever they are read, so the dashboard and
the export always agree and a flag appears as soon as the answer that raises it is stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .design import with_defaults
from .models import Trial, as_utc
from .trial_types import get_trial_type


@dataclass(frozen=True)
class ParticipantQuality:
    failed_screening: bool
    failed_catch: bool
    too_fast_trials: frozenset[int] = field(default_factory=frozenset)  # trial ids

    @property
    def excluded(self) -> bool:
        """Participant-level exclusion; too-fast answers are excluded row by row instead."""
        return self.failed_screening or self.failed_catch


def assess(blocks: list[dict[str, Any]], trials: list[Trial]) -> ParticipantQuality:
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
    )


def block_screening_failed(block: dict[str, Any], block_trials: list[Trial]) -> bool:
    """A screening block (headphone check, P.808 qualification) that can no longer be passed.
    (Flagged as soon as that is certain, not only when the block is complete.)"""
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
    elapsed = elapsed_ms(trial)
    minimum = get_trial_type(trial.trial_type).min_listen_seconds(trial.spec, {})
    return elapsed is not None and elapsed < 1000 * minimum
