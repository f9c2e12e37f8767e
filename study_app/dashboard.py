"""What a researcher's dashboard shows about a running study, as plain data (served as JSON)."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from .export import counted_participants
from .models import Participant, Study, as_utc
from .quality import ParticipantQuality, assess, fetch_log
from .trial_types import get_trial_type


def study_summary(study: Study) -> dict[str, Any]:
    participants = counted_participants(study)
    blocks = study.blocks
    fetches = fetch_log(study_id=study.id)
    qualities = {p.id: assess(blocks, p.trials, fetches) for p in participants}
    rows = [participant_row(study, p, qualities[p.id]) for p in participants]
    durations = [
        (as_utc(p.completed_at) - as_utc(p.started_at)).total_seconds()
        for p in participants
        if p.completed_at is not None
    ]
    per_block: Counter[str] = Counter()
    # answers the server's listening evidence flags (listening.py), per block
    unheard: Counter[str] = Counter()
    too_quick: Counter[str] = Counter()
    per_condition: dict[str, Counter[str]] = {}
    for participant in participants:
        quality = qualities[participant.id]
        for trial in participant.trials:
            if trial.response is None or not get_trial_type(trial.trial_type).exported:
                continue
            per_block[trial.block_id] += 1
            unheard[trial.block_id] += trial.id in quality.unheard_trials
            too_quick[trial.block_id] += trial.id in quality.too_quick_trials
            condition = trial.spec.get("condition")
            if condition and not trial.spec.get("is_catch"):
                per_condition.setdefault(trial.block_id, Counter())[condition] += 1
    return {
        "status": study.status,
        "started": len(participants),
        "completed": sum(r["completed"] for r in rows),
        "excluded": sum(r["excluded"] for r in rows),
        "screened_out": sum(r["screened_out"] for r in rows),
        "failed_screening": sum(r["failed_screening"] for r in rows),
        "failed_catch": sum(r["failed_catch"] for r in rows),
        "too_fast_answers": sum(r["too_fast"] for r in rows),
        "unheard_answers": sum(r["unheard"] for r in rows),
        "too_quick_answers": sum(r["too_quick"] for r in rows),
        "possible_reentries": sum(bool(r["possible_reentry_of"]) for r in rows),
        "median_completion_seconds": statistics.median(durations) if durations else None,
        "max_completed": study.design["completion"].get("max_completed"),
        "responses_per_block": [
            {
                "block": b["id"],
                "type": b["type"],
                "responses": per_block.get(b["id"], 0),
                "unheard": unheard.get(b["id"], 0),
                "too_quick": too_quick.get(b["id"], 0),
            }
            for b in blocks
            if get_trial_type(b["type"]).exported
        ],
        "responses_per_condition": {
            block: dict(sorted(counts.items())) for block, counts in per_condition.items()
        },
        "balance": counterbalancing(study, participants),
        "participants": rows,
    }


def participant_row(
    study: Study, participant: Participant, quality: ParticipantQuality | None = None
) -> dict[str, Any]:
    """One participant's progress and flags (`quality`: their assessment, made here if not
    given). `unheard` and `too_quick` count exported answers, as the per-block table does."""
    if quality is None:
        answered = [t.id for t in participant.trials if t.response is not None]
        fetches = fetch_log(trial_ids=answered) if answered else {}
        quality = assess(study.blocks, participant.trials, fetches)
    exported = {t.id for t in participant.trials if get_trial_type(t.trial_type).exported}
    answerable = [t for t in participant.trials if get_trial_type(t.trial_type).answerable]
    return {
        "participant": participant.public_id,
        "external_id": participant.external_id,
        "started_at": as_utc(participant.started_at).isoformat(timespec="seconds"),
        "completed": participant.completed_at is not None,
        "answered": sum(t.response is not None for t in answerable),
        "trials": len(answerable),
        "failed_screening": quality.failed_screening,
        "failed_catch": quality.failed_catch,
        "too_fast": len(quality.too_fast_trials),
        "unheard": len(quality.unheard_trials & exported),
        "too_quick": len(quality.too_quick_trials & exported),
        "screened_out": participant.screened_out,
        "excluded": quality.excluded or participant.screened_out,
        # A flag to look at, not an exclusion (reentry.py; docs/operations.md)
        "possible_reentry_of": participant.possible_reentry_of,
        "reentry_evidence": participant.reentry_evidence,
    }


def counterbalancing(study: Study, participants: list[Participant]) -> list[dict[str, Any]]:
    """Per ABX/rating block: how evenly the assigned (segment, condition) cells and ABX
    arrangements are spread so far. A spread (max - min) of 0 or 1 is balanced."""
    result = []
    for index, block in enumerate(study.blocks):
        cells: Counter[tuple] = Counter()
        arrangements: Counter[tuple] = Counter()
        for participant in participants:
            for trial in participant.trials:
                spec = trial.spec
                if trial.block_index != index or spec.get("is_catch") or "condition" not in spec:
                    continue
                cell = (spec["segment"], spec["condition"])
                cells[cell] += 1
                if "reference_slot" in spec:
                    arrangements[(*cell, spec["reference_slot"], spec["correct_answer"])] += 1
        if not cells:
            continue
        entry = {
            "block": block["id"],
            "cells": len(cells),
            "min": min(cells.values()),
            "max": max(cells.values()),
        }
        if arrangements:
            entry["arrangement_min"] = min(arrangements.values())
            entry["arrangement_max"] = max(arrangements.values())
        result.append(entry)
    return result
