"""Read and validate a study export (``responses.csv`` + ``study.json``) and apply exclusions.

The format is specified in ``docs/export-format.md``. Columns are selected by name, so extra
columns appended by future trial types are kept and ignored.

Exclusions follow the export's flags:

* ``flag_failed_screening`` and ``flag_failed_catch`` describe a *participant* (the export sets
  them on all of that participant's rows); a participant with the flag on any row is dropped.
* ``flag_too_fast`` describes one *answer*; only that row is dropped.

Catch trials (``is_catch == 1``) and headphone-check trials never enter the statistics: they exist
to produce the flags above.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

EXPORT_FORMAT = "sightsound-export/1"
GEMS_WORDS = (
    "wonder",
    "transcendence",
    "tenderness",
    "nostalgia",
    "peacefulness",
    "power",
    "joyful_activation",
    "tension",
    "sadness",
)

# Columns the analysis reads. Other documented columns are optional: they are kept if present.
REQUIRED_COLUMNS = (
    "participant",
    "block",
    "trial_type",
    "is_catch",
    "source",
    "segment",
    "condition",
    "correct",
    "valence",
    "arousal",
    "gems",
    "fit",
    "rt_ms",
    "flag_failed_screening",
    "flag_failed_catch",
    "flag_too_fast",
)
BOOLEAN_COLUMNS = (
    "is_catch",
    "correct",
    "video_shown",
    "flag_failed_screening",
    "flag_failed_catch",
    "flag_too_fast",
    "excluded",
    # optional, from later trial types (parsed only when present)
    "mushra_post_screen_flag",
    # p808_qualification rows
    "qualification_passed",
    "hearing_reported_normal",
)
# (column, lowest, highest) for the integer rating scales.
RATING_RANGES = (
    ("confidence", 1, 5),
    ("valence", 1, 9),
    ("arousal", 1, 9),
    ("fit", 1, 7),
    ("tempo", 1, 7),
    # optional, from later trial types (parsed only when present): MUSHRA (BS.1534) 0-100
    # scores and the similarity-to-reference scale
    ("mushra_score", 0, 100),
    ("mushra_hidden_ref_score", 0, 100),
    ("similarity", 1, 7),
    # fit_preference (1 = slightly, 2 = clearly, 3 = strongly) and P.808 ACR (1 = bad ...
    # 5 = excellent)
    ("preference_strength", 1, 3),
    ("acr_rating", 1, 5),
)
STRING_COLUMNS = (
    "study",
    "participant",
    "external_id",
    "block",
    "trial_type",
    "source",
    "segment",
    "condition",
    "conditions",
    "clip",
    "clip_a",
    "clip_b",
    "clip_x",
    "reference_slot",
    "correct_answer",
    "answer",
    "gems",
    "stimulus_role",
    "stimulus_slot",
    # optional, from later trial types
    "condition_a",
    "condition_b",
    "preferred_condition",
    "acr_item",
    "listening_device",
)
# Item kinds of `acr` rows (ITU-T P.808): an ordinary rated clip, a gold-standard question with a
# known answer, and a trapping question that tells the listener which answer to give.
ACR_ITEMS = ("rating", "gold", "trap")

PARTICIPANT_FLAGS = ("flag_failed_screening", "flag_failed_catch")
ROW_FLAGS = ("flag_too_fast",)
FLAG_REASONS = {
    "flag_failed_screening": "failed headphone screening or P.808 qualification",
    "flag_failed_catch": "failed a catch / attention item (incl. P.808 gold or trap)",
    "flag_too_fast": "answered before the clips could be heard in full",
}


class ExportError(ValueError):
    """The export does not follow docs/export-format.md; the message lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid export:\n  - " + "\n  - ".join(problems))


@dataclass
class Export:
    """A validated export: the tidy responses plus the study's design and stimulus manifest."""

    responses: pd.DataFrame
    study: dict[str, Any]

    @property
    def design(self) -> dict[str, Any]:
        return self.study.get("design", {})

    @property
    def manifest(self) -> dict[str, Any]:
        return self.study.get("manifest", {})


@dataclass(frozen=True)
class ExclusionConfig:
    """Which exclusion rules to apply (all on by default)."""

    failed_screening: bool = True
    failed_catch: bool = True
    too_fast: bool = True

    @classmethod
    def none(cls) -> ExclusionConfig:
        return cls(failed_screening=False, failed_catch=False, too_fast=False)

    def active_flags(self) -> list[str]:
        chosen = {
            "flag_failed_screening": self.failed_screening,
            "flag_failed_catch": self.failed_catch,
            "flag_too_fast": self.too_fast,
        }
        return [flag for flag, on in chosen.items() if on]


@dataclass
class Exclusions:
    """Rows kept after exclusions and a table saying what was dropped and why."""

    kept: pd.DataFrame
    table: pd.DataFrame = field(repr=False)


def read_export(responses: str | Path, study: str | Path) -> Export:
    """Read ``responses.csv`` and ``study.json`` and validate them.

    Raises :class:`ExportError` naming every missing required column and every bad value.
    """
    study_data = read_study(study)
    frame = pd.read_csv(responses, dtype=str, keep_default_na=False, na_values=[""])
    return Export(responses=validate_responses(frame), study=study_data)


def read_study(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
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


def validate_responses(frame: pd.DataFrame) -> pd.DataFrame:
    """Check and convert a raw responses table (all strings) into typed, tidy columns."""
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise ExportError([f"responses.csv: missing required column(s): {', '.join(missing)}"])
    frame = frame.copy()
    problems: list[str] = []

    for column in BOOLEAN_COLUMNS:
        if column in frame.columns:
            frame[column] = _to_boolean(frame[column], column, problems)
    for column, lowest, highest in RATING_RANGES:
        if column in frame.columns:
            frame[column] = _to_integer(frame[column], column, problems, lowest, highest)
    for column in (
        "assignment_index",
        "list_index",
        "block_index",
        "trial_index",
        "trial_in_block",
        "plays_a",
        "plays_b",
        "plays_x",
        "plays",
        "rt_ms",
        "plays_ref",
        "tone_count_errors",
    ):
        if column in frame.columns:
            frame[column] = _to_integer(frame[column], column, problems, 0, None)
    if "clip_duration" in frame.columns:
        frame["clip_duration"] = pd.to_numeric(frame["clip_duration"], errors="coerce")
    for column in ("presented_at", "answered_at"):
        if column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce")
    if frame["participant"].isna().any():
        problems.append("responses.csv: 'participant' is empty on some rows")

    abx = frame["trial_type"] == "abx"
    if frame.loc[abx, "correct"].isna().any():
        rows = _row_numbers(abx & frame["correct"].isna())
        problems.append(f"responses.csv: abx rows without 'correct' (rows {rows})")
    _check_fit_preference(frame, problems)
    if "acr_item" in frame.columns:
        items = frame["acr_item"]
        unknown = items.notna() & ~items.isin(ACR_ITEMS)
        if unknown.any():
            problems.append(
                f"responses.csv: 'acr_item' must be one of {', '.join(ACR_ITEMS)} "
                f"(rows {_row_numbers(unknown)}: {items[unknown].iloc[0]!r})"
            )
    words = frame["gems"].dropna().str.split(";").explode()
    unknown = sorted(set(words) - set(GEMS_WORDS) - {""})
    if unknown:
        problems.append(f"responses.csv: unknown GEMS word(s): {', '.join(unknown)}")
    if problems:
        raise ExportError(problems)
    for column in STRING_COLUMNS:
        if column in frame.columns:
            frame[column] = frame[column].astype("string")
    return frame


def apply_exclusions(responses: pd.DataFrame, config: ExclusionConfig | None = None) -> Exclusions:
    """Drop excluded participants and rows; return what is kept and a table of reasons.

    The table has one row per active rule: its level (participant or row), how many participants
    it flags, and how many rows it removes on its own (rows can carry several flags, so the
    counts overlap; ``total`` is the union).

    >>> frame = pd.DataFrame({"participant": ["P1", "P1", "P2", "P2"],
    ...                       "flag_failed_screening": [1, 1, 0, 0],
    ...                       "flag_failed_catch": [0, 0, 0, 0],
    ...                       "flag_too_fast": [0, 0, 1, 0]})
    >>> result = apply_exclusions(frame)
    >>> list(result.kept.index)
    [3]
    >>> result.table[["reason", "participants", "rows"]].to_dict("records")[-1]
    {'reason': 'total', 'participants': 1, 'rows': 3}
    """
    config = config or ExclusionConfig()
    drop = pd.Series(False, index=responses.index)
    records = []
    for flag in config.active_flags():
        flagged = responses[flag].fillna(False).astype(bool)
        if flag in PARTICIPANT_FLAGS:
            flagged_people = set(responses.loc[flagged, "participant"])
            flagged = responses["participant"].isin(flagged_people)
            level = "participant"
            people = len(flagged_people)
        else:
            level = "row"
            people = responses.loc[flagged, "participant"].nunique()
        records.append(
            {
                "rule": flag,
                "reason": FLAG_REASONS[flag],
                "level": level,
                "participants": int(people),
                "rows": int(flagged.sum()),
            }
        )
        drop |= flagged
    whole_people = set(responses["participant"]) - set(responses.loc[~drop, "participant"])
    records.append(
        {
            "rule": "any",
            "reason": "total",
            "level": "",
            "participants": len(whole_people),
            "rows": int(drop.sum()),
        }
    )
    return Exclusions(kept=responses.loc[~drop], table=pd.DataFrame.from_records(records))


def abx_trials(responses: pd.DataFrame) -> pd.DataFrame:
    """ABX rows that enter the realism statistics (catch trials left out)."""
    rows = responses[(responses["trial_type"] == "abx") & ~responses["is_catch"].astype(bool)]
    return rows.assign(correct=rows["correct"].astype(int))


def trials_of_type(responses: pd.DataFrame, trial_type: str) -> pd.DataFrame:
    """Rows of one trial type that enter the statistics (catch trials left out).

    >>> frame = pd.DataFrame({"trial_type": ["similarity", "abx"], "is_catch": [False, False]})
    >>> len(trials_of_type(frame, "similarity"))
    1
    """
    catch = responses["is_catch"].fillna(False).astype(bool)
    return responses[(responses["trial_type"] == trial_type) & ~catch]


def rating_trials(responses: pd.DataFrame) -> pd.DataFrame:
    """Emotion-rating rows that enter the agreement statistics (catch trials left out)."""
    keep = (responses["trial_type"] == "emotion_rating") & ~responses["is_catch"].astype(bool)
    return responses[keep]


def _check_fit_preference(frame: pd.DataFrame, problems: list[str]) -> None:
    """``fit_preference`` rows: the answer is A or B, and when the export names the preferred
    condition it is the condition in the answered slot (the analysis counts from ``answer``)."""
    rows = frame["trial_type"] == "fit_preference"
    if not rows.any() or "answer" not in frame.columns:
        return
    answer = frame["answer"]
    bad = rows & answer.notna() & ~answer.isin(["A", "B"])
    if bad.any():
        problems.append(
            f"responses.csv: fit_preference 'answer' must be A or B "
            f"(rows {_row_numbers(bad)}: {answer[bad].iloc[0]!r})"
        )
    columns = {"condition_a", "condition_b", "preferred_condition"}
    if not columns <= set(frame.columns):
        return
    chosen = frame["condition_a"].where(answer == "A", frame["condition_b"].where(answer == "B"))
    named = frame["preferred_condition"]
    mismatch = rows & chosen.notna() & named.notna() & (chosen != named)
    if mismatch.any():
        problems.append(
            "responses.csv: fit_preference 'preferred_condition' is not the condition of the "
            f"answered slot (rows {_row_numbers(mismatch)})"
        )


def _row_numbers(mask: pd.Series, limit: int = 5) -> str:
    # +2: one for the header line, one because people count from 1.
    numbers = [str(i + 2) for i in np.flatnonzero(mask.to_numpy())[:limit]]
    more = int(mask.sum()) - len(numbers)
    return ", ".join(numbers) + (f" and {more} more" if more > 0 else "")


def _to_boolean(values: pd.Series, column: str, problems: list[str]) -> pd.Series:
    bad = values.notna() & ~values.isin(["0", "1"])
    if bad.any():
        problems.append(
            f"responses.csv: '{column}' must be 0 or 1 (rows {_row_numbers(bad)}: "
            f"{values[bad].iloc[0]!r})"
        )
        return values
    return values.map({"0": False, "1": True}).astype("boolean")


def _to_integer(
    values: pd.Series, column: str, problems: list[str], lowest: int, highest: int | None
) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    not_number = values.notna() & numbers.isna()
    not_whole = numbers.notna() & (numbers != numbers.round())
    out_of_range = numbers.notna() & (numbers < lowest)
    if highest is not None:
        out_of_range |= numbers.notna() & (numbers > highest)
    bad = not_number | not_whole | out_of_range
    if bad.any():
        allowed = f"{lowest}..{highest}" if highest is not None else f">= {lowest}"
        problems.append(
            f"responses.csv: '{column}' must be an integer {allowed} "
            f"(rows {_row_numbers(bad)}: {values[bad].iloc[0]!r})"
        )
        return values
    return numbers.astype("Int64")
