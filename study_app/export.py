"""The export contract (docs/export-format.md): responses.csv and study.json for `analysis`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

import export_contract

from .extensions import db
from .listening import ListeningEvidence
from .models import Participant, Study, Trial, as_utc, utcnow
from .prereg_store import record_json
from .quality import assess, elapsed_ms, fetch_log
from .trial_types import get_trial_type
from .version import __version__


def export_columns() -> list[str]:
    """responses.csv's columns, in order: export_contract's list, the one place they are kept
    (analysis.load validates against the same list)."""
    return export_contract.names()


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return as_utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def response_rows(study: Study) -> Iterator[dict[str, Any]]:
    """One dict per answered, exported trial, with every flag computed."""
    blocks = study.blocks
    fetches = fetch_log(study_id=study.id)  # one query for the study, not one per participant
    for participant in counted_participants(study):
        quality = assess(blocks, participant.trials, fetches)
        rows: list[dict[str, Any]] = []
        by_type: dict[str, list[dict[str, Any]]] = {}
        for trial in participant.trials:
            trial_type = get_trial_type(trial.trial_type)
            if trial.response is None or not trial_type.exported:
                continue
            answer = trial.response.answer
            too_fast = trial.id in quality.too_fast_trials
            common: dict[str, Any] = {
                "study": study.slug,
                "participant": participant.public_id,
                "assignment_index": participant.assignment_index,
                "external_id": participant.external_id,
                "block": trial.block_id,
                "block_index": trial.block_index,
                "trial_type": trial.trial_type,
                "trial_index": trial.trial_index,
                "trial_in_block": trial.trial_in_block,
                "is_catch": int(bool(trial.spec.get("is_catch"))),
                "rt_ms": answer.get("client_rt_ms") or elapsed_ms(trial),
                "presented_at": iso(trial.presented_at),
                "answered_at": iso(trial.response.answered_at),
                "flag_failed_screening": int(quality.failed_screening),
                "flag_failed_catch": int(quality.failed_catch),
                "flag_too_fast": int(too_fast),
                "possible_reentry_of": participant.possible_reentry_of,
                "reentry_evidence": participant.reentry_evidence,
                **_listening_columns(quality.listening[trial.id]),
            }
            for fields in trial_type.export_rows(trial.spec, answer):
                row = common | fields
                row["excluded"] = int(quality.excluded or too_fast or bool(row.get("excluded")))
                rows.append(row)
                by_type.setdefault(trial.trial_type, []).append(row)
        for name, type_rows in by_type.items():
            get_trial_type(name).participant_rows(type_rows)  # per-listener flags (MUSHRA)
        yield from rows


def _listening_columns(evidence: ListeningEvidence) -> dict[str, Any]:
    return {
        "server_rt_ms": evidence.server_rt_ms,
        "media_fetched": evidence.media_fetched,
        "flag_unheard": int(evidence.flag_unheard),
        "flag_too_quick": int(evidence.flag_too_quick),
    }


def counted_participants(study: Study) -> list[Participant]:
    """The study's participants, previews left out, with trials and answers loaded."""
    return db.session.scalars(
        select(Participant)
        .where(Participant.study_id == study.id, Participant.is_preview.is_(False))
        .order_by(Participant.public_number)
        .options(selectinload(Participant.trials).selectinload(Trial.response))
    ).all()


def responses_csv(study: Study, rows: list[dict[str, Any]] | None = None) -> str:
    rows = list(response_rows(study)) if rows is None else rows
    return _csv_text(export_columns(), rows)


# A text cell starting with one of these is a formula to Excel, LibreOffice or Google Sheets
# (e.g. a PROLIFIC_PID of =HYPERLINK(...)); OWASP's CSV-injection advice is a leading quote.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A value as written to a CSV cell: None is empty, text that a spreadsheet would run as a
    formula gets a leading single quote (docs/export-format.md). Numbers are written as they
    are, so a numeric column (e.g. -0.5) stays numeric; only text is ever quoted."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def _csv_text(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def summary_tables(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The trial types' own summary tables (e.g. ACR MOS per clip) as {file name: CSV text}."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_type.setdefault(row["trial_type"], []).append(row)
    files = {}
    for name, type_rows in sorted(by_type.items()):
        for stem, table in get_trial_type(name).study_tables(type_rows).items():
            if table:
                files[f"{stem}.csv"] = _csv_text(list(table[0]), table)
    return files


def export_files(study: Study) -> dict[str, str]:
    """Every file of an export: responses.csv, study.json, any summary tables, and
    preregistration.json when the study was opened with a plan (issue 22)."""
    rows = list(response_rows(study))
    files = {
        "responses.csv": responses_csv(study, rows),
        "study.json": json.dumps(study_json(study), indent=2) + "\n",
        **summary_tables(rows),
    }
    plan = record_json(study)
    if plan is not None:
        files["preregistration.json"] = plan
    return files


def study_json(study: Study) -> dict[str, Any]:
    participants = [p for p in study.participants if not p.is_preview]
    return {
        "format": "sightsound-export/1",
        "study": {
            "slug": study.slug,
            "title": study.title,
            "status": study.status,
            "created_at": iso(study.created_at),
            "exported_at": iso(utcnow()),
            "app_version": __version__,
            "stimulus_set": study.stimulus_set.name,
            "participants_started": len(participants),
            "participants_completed": sum(p.completed_at is not None for p in participants),
        },
        "design": study.design,
        "manifest": study.stimulus_set.manifest,
    }


def write_export(study: Study, out_dir: Path) -> list[Path]:
    """Write every export file into `out_dir`; returns their paths (responses.csv first)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in export_files(study).items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8", newline="")
        paths.append(path)
    return paths
