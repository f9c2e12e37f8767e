"""Owns the check of an export against its contract: a raw ``responses.csv`` typed column by column
(``validate_responses``) and the typed rows checked against themselves and ``study.json``
(``check_export``: study, blocks, conditions, duplicates, ``correct``, flags, row counts).

The columns and their types are ``export_contract``'s (shared with the app's exporter); the
format is specified in ``docs/export-format.md``, the checks in "Validation" of
``docs/analysis.md``. Reading the files is :mod:`analysis.load`'s.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

import export_contract
from analysis.exclusions import PARTICIPANT_FLAGS, ROW_FLAGS

GEMS_WORDS = export_contract.GEMS_WORDS

# The columns and their types are export_contract's (shared with the app's exporter). Columns
# the analysis reads are `required`; other documented columns are optional: kept if present.
REQUIRED_COLUMNS = tuple(c.name for c in export_contract.COLUMNS if c.required)
BOOLEAN_COLUMNS = export_contract.of_kind("bool")
# (column, lowest, highest) for the integer rating scales.
RATING_RANGES = tuple(
    (c.name, c.low, c.high) for c in export_contract.COLUMNS if c.kind == "int" and c.high
)
# Whole numbers >= 0 with no upper bound: indexes, play counts, response times.
COUNT_COLUMNS = tuple(
    c.name for c in export_contract.COLUMNS if c.kind == "int" and c.high is None
)
STRING_COLUMNS = export_contract.of_kind("str")
# Item kinds of `acr` rows (ITU-T P.808): an ordinary rated clip, a gold-standard question with a
# known answer, and a trapping question that tells the listener which answer to give.
ACR_ITEMS = export_contract.BY_NAME["acr_item"].allowed
# Condition names the app makes up itself (never in a design or manifest): MUSHRA anchors and the
# P.808 gold and trap items.
APP_CONDITIONS = (
    "reference",
    "anchor_lp35",
    "anchor_lp70",
    "p808_gold_high",
    "p808_gold_low",
    "p808_trap",
)
# One `media_fetched` entry: slot name, a colon, the fraction of its bytes fetched (0..1).
MEDIA_ENTRY = re.compile(r"^[^:;\s]+:(\d+(?:\.\d+)?)$")


class ExportError(ValueError):
    """The export does not follow docs/export-format.md; the message lists every problem."""

    def __init__(self, problems: list[str], files: tuple[str, ...] = ()):
        self.problems = problems
        self.files = files
        where = f" ({', '.join(files)})" if files else ""
        super().__init__(f"invalid export{where}:\n  - " + "\n  - ".join(problems))


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
    for column in COUNT_COLUMNS:
        if column in frame.columns:
            frame[column] = _to_integer(frame[column], column, problems, 0, None)
    for column in export_contract.of_kind("float"):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in export_contract.of_kind("timestamp"):
        if column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce")
    if frame["participant"].isna().any():
        problems.append("responses.csv: 'participant' is empty on some rows")
    padded = frame["participant"].notna() & (
        frame["participant"] != frame["participant"].str.strip()
    )
    if padded.any():
        # "P7 " and "P7" would count as two listeners.
        problems.append(
            "responses.csv: participant ids with leading or trailing spaces "
            f"({_where(frame, padded)})"
        )
    for flag in (*PARTICIPANT_FLAGS, *ROW_FLAGS):
        # An empty flag would read as "not flagged": a failed listener would be analysed.
        empty = frame[flag].isna()
        if empty.any():
            problems.append(f"responses.csv: '{flag}' is empty ({_where(frame, empty)})")
    if "media_fetched" in frame.columns:
        _check_media_fetched(frame, problems)

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


def check_export(responses: pd.DataFrame, study: dict[str, Any]) -> list[str]:
    """Problems that make the typed responses contradict themselves or ``study.json``.

    Each names the lines and participants concerned. An export of a study still running passes:
    participants who did not finish have fewer rows, withdrawn ones are gone from both files.
    """
    if responses.empty:
        meta = study.get("study", {})
        return [
            "responses.csv: a header but no rows: nothing to analyse (study.json: "
            f"{meta.get('participants_started', '?')} participants started, "
            f"{meta.get('participants_completed', '?')} completed)"
        ]
    problems: list[str] = []
    _check_study_identity(responses, study, problems)
    _check_blocks(responses, study, problems)
    _check_conditions(responses, study, problems)
    _check_duplicates(responses, problems)
    _check_correct(responses, problems)
    _check_participant_flags(responses, study, problems)
    _check_counts(responses, study, problems)
    return problems


def _design_blocks(study: dict[str, Any]) -> dict[str, dict[str, Any]]:
    blocks = study.get("design", {}).get("blocks", [])
    if not isinstance(blocks, list):
        return {}
    return {b["id"]: b for b in blocks if isinstance(b, dict) and isinstance(b.get("id"), str)}


def _check_study_identity(
    responses: pd.DataFrame, study: dict[str, Any], problems: list[str]
) -> None:
    slug = study.get("study", {}).get("slug")
    design_slug = study.get("design", {}).get("slug")
    if slug and design_slug and slug != design_slug:
        problems.append(f"study.json: study slug {slug!r} but design slug {design_slug!r}")
    if not slug or "study" not in responses.columns:
        return
    other = responses["study"].notna() & (responses["study"] != slug)
    if other.any():
        names = ", ".join(repr(s) for s in responses.loc[other, "study"].unique()[:3])
        problems.append(
            f"responses.csv: rows of study {names}, but study.json is study {slug!r} "
            f"({_where(responses, other)})"
        )


def _check_blocks(responses: pd.DataFrame, study: dict[str, Any], problems: list[str]) -> None:
    blocks = _design_blocks(study)
    if not blocks or "block" not in responses.columns:
        return
    unknown = ~responses["block"].isin(list(blocks)).fillna(False).astype(bool)
    if unknown.any():
        names = ", ".join(repr(b) for b in responses.loc[unknown, "block"].unique()[:5])
        problems.append(
            f"responses.csv: block(s) {names} are not in study.json's design "
            f"({_where(responses, unknown)})"
        )
    design_type = responses["block"].map({k: b.get("type") for k, b in blocks.items()})
    wrong = ~unknown & design_type.notna() & (responses["trial_type"] != design_type)
    if wrong.any():
        problems.append(
            "responses.csv: 'trial_type' is not the type of the row's block in the design "
            f"({_where(responses, wrong)})"
        )


def _known_conditions(study: dict[str, Any]) -> set[str]:
    known: set[str] = set()
    clips = study.get("manifest", {}).get("clips", [])
    for clip in clips if isinstance(clips, list) else []:
        if isinstance(clip, dict) and isinstance(clip.get("condition"), str):
            known.add(clip["condition"])
    for block in _design_blocks(study).values():
        conditions = block.get("conditions", [])
        if isinstance(conditions, list):
            known.update(c for c in conditions if isinstance(c, str))
        anchors = block.get("anchors", [])
        if isinstance(anchors, list):
            known.update(f"anchor_{a}" for a in anchors)
    return known


def _check_conditions(responses: pd.DataFrame, study: dict[str, Any], problems: list[str]) -> None:
    known = _known_conditions(study)
    if not known:
        return  # study.json declares no conditions (a hand-made export): nothing to check against
    known.update(APP_CONDITIONS)
    for column in ("condition", "condition_a", "condition_b", "preferred_condition"):
        if column not in responses.columns:
            continue
        values = responses[column]
        unknown = values.notna() & ~values.isin(sorted(known)).fillna(False).astype(bool)
        if unknown.any():
            names = ", ".join(repr(c) for c in values[unknown].unique()[:5])
            problems.append(
                f"responses.csv: '{column}' {names} is in neither the manifest nor the design "
                f"({_where(responses, unknown)})"
            )


def _check_duplicates(responses: pd.DataFrame, problems: list[str]) -> None:
    """A repeated row (or a trial answered twice) would count one answer twice."""
    repeated = responses.duplicated(keep=False)
    if "trial_index" in responses.columns:
        # A trial is one row, except MUSHRA: one row per rated stimulus of the screen.
        key = pd.DataFrame(
            {"participant": responses["participant"], "trial": responses["trial_index"]}
        )
        if "stimulus_role" in responses.columns:
            role = responses["stimulus_role"].fillna("")
            key["stimulus"] = role + "|" + responses["condition"].fillna("").where(role != "", "")
        has_index = responses["trial_index"].notna()
        repeated |= has_index & key.duplicated(keep=False)
    if repeated.any():
        problems.append(
            f"responses.csv: duplicated rows (the same trial more than once: "
            f"{_where(responses, repeated)})"
        )


def _check_correct(responses: pd.DataFrame, problems: list[str]) -> None:
    """``correct`` is ``answer == correct_answer`` for ABX and headphone-check rows."""
    if not {"answer", "correct_answer"} <= set(responses.columns):
        return
    rows = responses["trial_type"].isin(["abx", "headphone_check"]).fillna(False).astype(bool)
    answered = rows & responses[["answer", "correct_answer", "correct"]].notna().all(axis=1)
    if not answered.any():
        return
    expected = responses["answer"] == responses["correct_answer"]
    wrong = answered & (responses["correct"].astype("boolean") != expected).fillna(False)
    if wrong.any():
        problems.append(
            "responses.csv: 'correct' contradicts 'answer' and 'correct_answer' "
            f"({_where(responses, wrong)})"
        )


def _check_participant_flags(
    responses: pd.DataFrame, study: dict[str, Any], problems: list[str]
) -> None:
    """Participant flags are the same on all of a participant's rows, and set when the rows show
    a failed headphone check or P.808 qualification."""
    person = responses["participant"]
    for flag in PARTICIPANT_FLAGS:
        mixed = responses.groupby(person)[flag].transform("nunique") > 1
        if mixed.any():
            problems.append(
                f"responses.csv: '{flag}' differs between rows of the same participant "
                f"({_where(responses, mixed)})"
            )
    flagged = responses.groupby(person)["flag_failed_screening"].transform("any").astype(bool)
    failed = pd.Series(False, index=responses.index)
    for block_id, block in _design_blocks(study).items():
        if block.get("type") != "headphone_check" or "block" not in responses.columns:
            continue
        rows = (responses["block"] == block_id).fillna(False).astype(bool)
        rows &= responses["trial_type"] == "headphone_check"
        if not rows.any():
            continue
        # The app's rule (Woods et al.; Milne et al.): failed once more answers are wrong than
        # the threshold allows, in any one test (method "both" runs `trials` of each); options
        # missing from a stored design take the app's defaults (6 and 5). Rows without a
        # headphone_method (exports made before it existed) are antiphase trials.
        allowed = int(block.get("trials", 6)) - int(block.get("pass_threshold", 5))
        if "headphone_method" in responses.columns:
            test = (
                responses.loc[rows, "headphone_method"].fillna("antiphase").replace("", "antiphase")
            )
        else:
            test = pd.Series("antiphase", index=responses.index[rows])
        wrong = (
            (~responses.loc[rows, "correct"].fillna(True).astype(bool))
            .groupby([person[rows], test])
            .sum()
        )
        failed |= person.isin(wrong.index.get_level_values(0)[wrong.to_numpy() > allowed])
    if "qualification_passed" in responses.columns:
        not_passed = responses["qualification_passed"].astype("boolean") == False  # noqa: E712
        failed |= person.isin(person[not_passed.fillna(False)])
    unflagged = failed & ~flagged
    if unflagged.any():
        problems.append(
            "responses.csv: failed the headphone check or P.808 qualification but "
            f"'flag_failed_screening' is not set ({_where(responses, unflagged)})"
        )


def fixed_rows(block: dict[str, Any]) -> int | None:
    """Rows a participant who finished ``block`` has in responses.csv, where the design alone
    fixes it; None where it depends on the stimulus set or the type is not known here.

    Mirrors the app's schedulers (study_app/trial_types) with the app's defaults for options a
    stored design may leave out.

    >>> fixed_rows({"type": "abx", "trials_per_participant": 4, "catch_trials": 2})
    6
    >>> fixed_rows({"type": "emotion_rating"}) is None   # one per segment of the set
    True
    """
    kind = block.get("type")
    if kind == "headphone_check":
        trials = _count(block.get("trials", 6))
        tests = 2 if block.get("method") == "both" else 1  # "both": `trials` of each test
        return None if trials is None else trials * tests
    if kind == "p808_qualification":
        return 1
    per = _count(block.get("trials_per_participant"))
    if not per:
        return None  # 0 or absent: one trial per segment of the stimulus set
    if kind == "abx":
        repetitions, catch = (
            _count(block.get("repetitions", 1)),
            _count(block.get("catch_trials", 0)),
        )
        return None if repetitions is None or catch is None else per * repetitions + catch
    if kind == "emotion_rating":
        checks = _count(block.get("attention_checks", 0))
        return None if checks is None else per + checks
    if kind == "fit_preference":
        return per
    if kind == "acr":
        gold, traps = (
            _count(block.get("gold_questions", 2)),
            _count(block.get("trapping_questions", 1)),
        )
        return None if gold is None or traps is None else per + gold + traps
    return None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _check_counts(responses: pd.DataFrame, study: dict[str, Any], problems: list[str]) -> None:
    """Rows per participant against the design, participants against study.json's counts.

    A participant may have fewer rows than the design gives (still running, stopped, screened
    out) but never more; and every participant study.json counts as completed must have all
    their rows, so an export with fewer complete participants lost rows (a file cut short).
    """
    person = responses["participant"]
    people = person.unique()
    complete = pd.Series(True, index=people)
    # rows in the blocks with a fixed count, per participant, and how many the design gives
    have = pd.Series(0, index=people)
    gives = 0
    for block_id, block in _design_blocks(study).items():
        expected = fixed_rows(block)
        if expected is None or "block" not in responses.columns:
            continue
        rows = (responses["block"] == block_id).fillna(False).astype(bool)
        counts = person[rows].value_counts().reindex(people, fill_value=0)
        over = counts[counts > expected]
        if len(over):
            extra = rows & person.isin(over.index)
            problems.append(
                f"responses.csv: more rows in block {block_id!r} than the design gives "
                f"({expected} per participant; {_where(responses, extra)})"
            )
        complete &= counts == expected
        have += counts
        gives += expected
    meta = study.get("study", {})
    started = _count(meta.get("participants_started"))
    completed = _count(meta.get("participants_completed"))
    if started is None or completed is None or (started == 0 and completed == 0):
        # Not recorded: analysis.simulate writes 0 and 0 (a study the app exports has
        # rows only once someone started, and its counts then are not both 0).
        return
    if completed > started:
        problems.append(
            f"study.json: {completed} participants completed but only {started} started"
        )
    if len(people) > started:
        problems.append(
            f"responses.csv: {len(people)} participants, but study.json says only {started} "
            "started (a study.json of another export?)"
        )
    n_complete = int(complete.sum())
    if completed > n_complete:
        last = person.iloc[-1]
        # Where the file ends says whether it was cut short: the last participant has fewer
        # rows than the design gives. More rows than it gives is another problem (reported
        # per block above), not a sign of rows missing.
        if have[last] < gives:
            ending = (
                f"; rows are missing: the file ends at line {len(responses) + 1} with "
                f"participant {last}, who has {have[last]} of the {gives} rows the design "
                "gives each participant (cut short?)"
            )
        elif have[last] > gives:
            ending = (
                f"; the file's last participant, {last}, has {have[last]} rows where the "
                f"design gives {gives} (a study.json of another design?)"
            )
        else:
            ending = f"; rows are missing: the file ends at line {len(responses) + 1} (cut short?)"
        incomplete = [str(p) for p in people if not complete[p]]
        listed = ", ".join(incomplete[:5]) + (
            f" and {len(incomplete) - 5} more" if len(incomplete) > 5 else ""
        )
        problems.append(
            f"responses.csv: study.json says {completed} participants completed, but only "
            f"{n_complete} of the {len(people)} participants here have all their rows "
            f"(incomplete: {listed or 'none'}){ending}"
        )


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


def _where(frame: pd.DataFrame, mask: pd.Series, limit: int = 5) -> str:
    """ "lines 3, 4 and 2 more; participants P0001, P0002": where a problem is, for a person to
    look up in the file (line numbers count the header as line 1)."""
    people = [str(p) for p in pd.unique(frame.loc[mask, "participant"].dropna())]
    shown = ", ".join(repr(p) if p != p.strip() else p for p in people[:limit])
    more = f" and {len(people) - limit} more" if len(people) > limit else ""
    return f"lines {_row_numbers(mask, limit)}; participants {shown or '(none)'}{more}"


def _check_media_fetched(frame: pd.DataFrame, problems: list[str]) -> None:
    """``media_fetched``: ``slot:fraction`` entries joined by ``;``, each fraction in 0..1."""

    def bad(cell: str) -> bool:
        entries = [MEDIA_ENTRY.match(entry) for entry in cell.split(";")]
        return not all(entries) or any(float(m.group(1)) > 1 for m in entries if m)

    values = frame["media_fetched"]
    wrong = values.notna() & values.map(lambda cell: isinstance(cell, str) and bad(cell))
    if wrong.any():
        problems.append(
            "responses.csv: 'media_fetched' must be slot:fraction entries separated by ';', "
            f"each fraction 0..1 (rows {_row_numbers(wrong)}: {values[wrong].iloc[0]!r})"
        )


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
