"""Owns reading a study export (``responses.csv`` + ``study.json`` + an optional
``preregistration.json``) into a validated :class:`Export`.

The format is specified in ``docs/export-format.md``. Columns are selected by name, so extra
columns appended by future trial types are kept and ignored. :func:`read_export` refuses an
export that contradicts itself or ``study.json`` (the checks are :mod:`analysis.validation`'s;
see "Validation" in ``docs/analysis.md``).

The export's analysis starts here, so the names a notebook needs next are importable from here
too: the exclusions (:mod:`analysis.exclusions`), the row selection (:mod:`analysis.rows`) and the
contract check (:mod:`analysis.validation`).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.deviations import PlanError, read_plan
from analysis.exclusions import (
    EMPTY_RATING,
    FLAG_REASONS,
    NOT_ANALYSED,
    NOT_LISTENED,
    PARTICIPANT_FLAGS,
    RATED_COLUMNS,
    ROW_FLAGS,
    SCREENING_TYPES,
    ExclusionConfig,
    Exclusions,
    apply_exclusions,
    empty_ratings,
)
from analysis.rows import abx_trials, rating_trials, trials_of_type
from analysis.validation import (
    GEMS_WORDS,
    REQUIRED_COLUMNS,
    ExportError,
    check_export,
    fixed_rows,
    validate_responses,
)

__all__ = [
    "EMPTY_RATING", "EXPORT_FORMAT", "FLAG_REASONS", "GEMS_WORDS", "NOT_ANALYSED", "NOT_LISTENED",
    "PARTICIPANT_FLAGS", "RATED_COLUMNS", "REQUIRED_COLUMNS", "ROW_FLAGS", "SCREENING_TYPES",
    "ExclusionConfig", "Exclusions", "Export", "ExportError", "abx_trials", "apply_exclusions",
    "check_export", "empty_ratings", "fixed_rows", "rating_trials", "read_export", "read_study",
    "trials_of_type", "validate_responses",
]

EXPORT_FORMAT = "sightsound-export/1"


@dataclass
class Export:
    """A validated export: the tidy responses plus the study's design and stimulus manifest.

    >>> export = Export(pd.DataFrame(), {"design": {"slug": "demo", "blocks": []}})
    >>> export.design["slug"], export.manifest, export.preregistration
    ('demo', {}, None)
    """

    responses: pd.DataFrame
    study: dict[str, Any]
    # preregistration.json beside study.json (issue 22), None when the study had no plan.
    preregistration: dict[str, Any] | None = None

    @property
    def design(self) -> dict[str, Any]:
        return self.study.get("design", {})

    @property
    def manifest(self) -> dict[str, Any]:
        return self.study.get("manifest", {})


def read_export(responses: str | Path, study: str | Path) -> Export:
    """Read ``responses.csv`` and ``study.json`` and validate them.

    Raises :class:`ExportError` naming every missing required column and every bad value.
    """
    files = (f"responses: {responses}", f"study: {study}")
    try:
        study_data = read_study(study)
        frame = _read_responses(responses)
        typed = validate_responses(frame)
        problems = check_export(typed, study_data)
    except ExportError as error:
        raise ExportError(_named(error.problems, responses, study), files) from None
    if problems:
        raise ExportError(_named(problems, responses, study), files)
    try:
        plan = read_plan(study)
    except PlanError as error:
        raise ExportError([str(error)], files) from None
    return Export(responses=typed, study=study_data, preregistration=plan)


def _named(problems: list[str], responses: str | Path, study: str | Path) -> list[str]:
    """Problems name the files by their real paths (a researcher may have several exports)."""
    names = {"responses.csv:": f"{responses}:", "study.json:": f"{study}:"}
    named = []
    for problem in problems:
        for short, full in names.items():
            if problem.startswith(short):
                problem = full + problem[len(short) :]
                break
        named.append(problem)
    return named


def _read_responses(path: str | Path) -> pd.DataFrame:
    """The raw table, all strings; a record with another number of fields than the header (a
    file cut in the middle of a line, a stray comma) is an error, not a row of empty cells."""
    text = _read_utf8(path, "responses.csv")
    if not text.strip():
        raise ExportError(["responses.csv: the file is empty (not even a header)"])
    reader = csv.reader(io.StringIO(text, newline=""))
    width = len(next(reader))
    ragged = [str(reader.line_num) for record in reader if record and len(record) != width]
    if ragged:
        more = f" and {len(ragged) - 5} more" if len(ragged) > 5 else ""
        raise ExportError(
            [
                f"responses.csv: line(s) {', '.join(ragged[:5])}{more} do not have the header's "
                f"{width} fields (a file cut short or edited by hand?)"
            ]
        )
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])


def _read_utf8(path: str | Path, name: str) -> str:
    """The file's text; a file in another encoding (a spreadsheet's Latin-1 "CSV") is refused
    with the line and byte where it stops being UTF-8, not with Python's bare codec message."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ExportError([
            f"{name}: line {line}, byte {column} of the line (0x{data[error.start]:02x}) is not "
            "UTF-8; the export must be UTF-8 (saved by a spreadsheet in another encoding? "
            "save it again as 'CSV UTF-8', or re-export it from the app)"
        ]) from None


def read_study(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(_read_utf8(path, "study.json"))
    except json.JSONDecodeError as error:
        raise ExportError([f"study.json: not valid JSON ({error})"]) from None
    problems = []
    if not isinstance(data, dict):
        raise ExportError([f"{path}: top level must be a JSON object"])
    if data.get("format") != EXPORT_FORMAT:
        problems.append(f"study.json: format must be {EXPORT_FORMAT!r}, got {data.get('format')!r}")
    for key in ("study", "design", "manifest"):
        if not isinstance(data.get(key), dict):
            problems.append(f"study.json: missing object {key!r}")
    if problems:
        raise ExportError(problems)
    return data
