"""Owns the exclusions: which rules exist (the export's flags and the rules derived from the rows),
which are on (``ExclusionConfig``), and the rows kept with the tables of what each rule removed
(``apply_exclusions``).

* ``flag_failed_screening`` and ``flag_failed_catch`` describe a *participant* (the export sets
  them on all of that participant's rows); a participant with the flag on any row is dropped.
* ``flag_too_fast`` describes one *answer*; only that row is dropped.
* ``flag_unheard`` / ``flag_too_quick`` (optional, issue 13) describe one *answer* the server saw
  before the audio was fetched whole or sooner than its duration allows: rule ``not_listened``.
* A row whose rating is empty although its block asks for it: rule ``empty_rating``.

Catch trials (``is_catch == 1``) and screening trials never enter the statistics: they exist to
produce the flags above (which rows do enter is :mod:`analysis.rows`').
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

PARTICIPANT_FLAGS = ("flag_failed_screening", "flag_failed_catch")
ROW_FLAGS = ("flag_too_fast",)
# Optional columns (issue 13): the server's measure of listening. Exports made before the app
# wrote them have none, and they still load.
NOT_LISTENED_FLAGS = ("flag_unheard", "flag_too_quick")
LISTENING_COLUMNS = ("server_rt_ms", "media_fetched", *NOT_LISTENED_FLAGS)
NOT_LISTENED = "not_listened"
EMPTY_RATING = "empty_rating"
NOT_ANALYSED = "not_analysed"
FLAG_REASONS = {
    "flag_failed_screening": "failed headphone screening or P.808 qualification",
    "flag_failed_catch": "failed a catch / attention item (incl. P.808 gold or trap)",
    "flag_too_fast": "answered before the clips could be heard in full",
    NOT_LISTENED: "not listened: answered before the audio was fetched whole or could play",
    EMPTY_RATING: "empty ratings: a rating its block asks for is empty",
    NOT_ANALYSED: "catch, headphone-check and qualification rows (never in the statistics)",
}
# The rating(s) each trial type's statistics read. A row with one of them empty, in a block whose
# other rows have it (so the block asks for it), is an "empty rating" (docs/analysis.md).
RATED_COLUMNS = {
    "emotion_rating": ("valence", "arousal", "fit", "tempo"),
    "fit_rating": ("fit",),
    "similarity": ("similarity",),
    "mushra": ("mushra_score",),
    "acr": ("acr_rating",),
    "fit_preference": ("answer",),
}
# Trial types that only exist to screen listeners (their rows never enter the statistics).
SCREENING_TYPES = ("headphone_check", "p808_qualification")


@dataclass(frozen=True)
class ExclusionConfig:
    """Which exclusion rules to apply (all on by default)."""

    failed_screening: bool = True
    failed_catch: bool = True
    too_fast: bool = True
    # flag_unheard or flag_too_quick (issue 13); `--keep-unheard` switches it off
    not_listened: bool = True
    # rows whose rating is empty although the block asks for it
    empty_ratings: bool = True

    @classmethod
    def none(cls) -> ExclusionConfig:
        return cls(
            failed_screening=False,
            failed_catch=False,
            too_fast=False,
            not_listened=False,
            empty_ratings=False,
        )

    def active_flags(self) -> list[str]:
        """The export's flag columns whose rules are on (the derived rules are not columns)."""
        chosen = {
            "flag_failed_screening": self.failed_screening,
            "flag_failed_catch": self.failed_catch,
            "flag_too_fast": self.too_fast,
        }
        return [flag for flag, on in chosen.items() if on]

    def active_rules(self) -> list[str]:
        """Every rule that is on, by the name the exclusion tables use."""
        derived = {NOT_LISTENED: self.not_listened, EMPTY_RATING: self.empty_ratings}
        return self.active_flags() + [rule for rule, on in derived.items() if on]


@dataclass
class Exclusions:
    """Rows kept after exclusions and tables saying what was dropped and why.

    ``table``: one row per active rule (rule, reason, level, participants, rows) and the total.
    ``summary``: one row per rule, on or off (rule, reason, applied, rows, participants), the
    total of the applied ones (``any``), and the rows kept that never enter the statistics by
    design (``not_analysed``: catch and screening trials), so a report can print it as it is.
    """

    kept: pd.DataFrame
    table: pd.DataFrame = field(repr=False)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)


def apply_exclusions(responses: pd.DataFrame, config: ExclusionConfig | None = None) -> Exclusions:
    """Drop excluded participants and rows; return what is kept and tables of reasons.

    ``table`` has one row per active rule: its level (participant or row), how many participants
    it flags, and how many rows it removes on its own (rows can carry several flags, so the
    counts overlap; ``total`` is the union). ``summary`` is the per-rule count table of
    :class:`Exclusions`.

    >>> frame = pd.DataFrame({"participant": ["P1", "P1", "P2", "P2"],
    ...                       "flag_failed_screening": [1, 1, 0, 0],
    ...                       "flag_failed_catch": [0, 0, 0, 0],
    ...                       "flag_too_fast": [0, 0, 1, 0]})
    >>> result = apply_exclusions(frame)
    >>> list(result.kept.index)
    [3]
    >>> result.table[["reason", "participants", "rows"]].to_dict("records")[-1]
    {'reason': 'total', 'participants': 1, 'rows': 3}
    >>> result.summary.set_index("rule").loc["flag_too_fast", ["rows", "participants"]].tolist()
    [1, 1]
    """
    config = config or ExclusionConfig()
    active = set(config.active_rules())
    drop = pd.Series(False, index=responses.index)
    records = []
    summary = []
    for rule in (*PARTICIPANT_FLAGS, *ROW_FLAGS, NOT_LISTENED, EMPTY_RATING):
        flagged = _rule_rows(responses, rule)
        if rule in PARTICIPANT_FLAGS:
            flagged_people = set(responses.loc[flagged, "participant"])
            flagged = responses["participant"].isin(flagged_people)
            level = "participant"
            people = len(flagged_people)
        else:
            level = "row"
            people = responses.loc[flagged, "participant"].nunique()
        counts = {"participants": int(people), "rows": int(flagged.sum())}
        summary.append(
            {"rule": rule, "reason": FLAG_REASONS[rule], "applied": rule in active} | counts
        )
        if rule not in active:
            continue
        records.append({"rule": rule, "reason": FLAG_REASONS[rule], "level": level} | counts)
        drop |= flagged
    whole_people = set(responses["participant"]) - set(responses.loc[~drop, "participant"])
    total = {"participants": len(whole_people), "rows": int(drop.sum())}
    records.append({"rule": "any", "reason": "total", "level": ""} | total)
    summary.append(
        {"rule": "any", "reason": "excluded by any applied rule", "applied": True} | total
    )
    kept = responses.loc[~drop]
    by_design = _not_analysed(kept)
    summary.append(
        {
            "rule": NOT_ANALYSED,
            "reason": FLAG_REASONS[NOT_ANALYSED],
            "applied": True,
            "rows": int(by_design.sum()),
            "participants": int(kept.loc[by_design, "participant"].nunique()),
        }
    )
    return Exclusions(
        kept=kept,
        table=pd.DataFrame.from_records(records),
        summary=pd.DataFrame.from_records(
            summary, columns=["rule", "reason", "applied", "rows", "participants"]
        ),
    )


def _flag(responses: pd.DataFrame, column: str) -> pd.Series:
    if column not in responses.columns:
        return pd.Series(False, index=responses.index)
    return responses[column].fillna(False).astype(bool)


def _rule_rows(responses: pd.DataFrame, rule: str) -> pd.Series:
    """Rows a rule flags (before spreading participant rules to all of a participant's rows)."""
    if rule == NOT_LISTENED:
        # Optional columns: an export without them flags nothing, and an empty cell (a trial
        # without audio) is not a flag.
        return _flag(responses, "flag_unheard") | _flag(responses, "flag_too_quick")
    if rule == EMPTY_RATING:
        return empty_ratings(responses)
    return _flag(responses, rule)


def empty_ratings(responses: pd.DataFrame) -> pd.Series:
    """Rows (not catch trials) whose rating is empty although their block asks for it.

    Whether a block asks for a scale is read from the data, not the design: a scale the block
    does not ask (say ``tempo``) is empty on all its rows, while a scale it asks is filled on
    the others. Empty GEMS cells are answers (no word chosen), so ``gems`` is not a rating here.

    >>> frame = pd.DataFrame({"participant": ["P1", "P1", "P2"], "block": "e",
    ...                       "trial_type": "emotion_rating", "is_catch": False,
    ...                       "valence": [5, None, 3], "tempo": [None, None, None]})
    >>> empty_ratings(frame).tolist()
    [False, True, False]
    """
    empty = pd.Series(False, index=responses.index)
    if "trial_type" not in responses.columns:
        return empty
    candidates = ~_flag(responses, "is_catch")
    for trial_type, columns in RATED_COLUMNS.items():
        rows = candidates & (responses["trial_type"] == trial_type)
        if not rows.any():
            continue
        blocks = (
            responses.loc[rows, "block"].fillna("")
            if "block" in responses.columns
            else pd.Series("", index=responses.index[rows])
        )
        for column in columns:
            if column not in responses.columns:
                continue
            missing = responses.loc[rows, column].isna()
            asked = (~missing).groupby(blocks).transform("any")
            empty.loc[missing.index] |= (missing & asked).to_numpy()
    return empty


def _not_analysed(responses: pd.DataFrame) -> pd.Series:
    """Rows that never enter the statistics by design: catch and screening trials."""
    by_design = _flag(responses, "is_catch")
    if "trial_type" in responses.columns:
        by_design |= responses["trial_type"].isin(SCREENING_TYPES).fillna(False).astype(bool)
    return by_design
