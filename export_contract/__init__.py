"""Owns the columns of the export's responses.csv: names, order, types, ranges, which trial types
fill them (docs/export-format.md). study_app.export writes them, analysis.load validates against
them, analysis.simulate builds its rows from them and the tests read them.

This package imports nothing from `study_app` or `analysis` (nor anything outside the standard
library), so both can depend on it without depending on each other.
"""

from __future__ import annotations

from dataclasses import dataclass

# Every trial type whose answers reach the export (consent and debrief write no rows).
ABX = "abx"
ACR = "acr"
EMOTION = "emotion_rating"
FIT_PREFERENCE = "fit_preference"
FIT_RATING = "fit_rating"
HEADPHONE = "headphone_check"
MUSHRA = "mushra"
QUALIFICATION = "p808_qualification"
SIMILARITY = "similarity"
EXPORTED_TRIAL_TYPES = (
    ABX,
    ACR,
    EMOTION,
    FIT_PREFERENCE,
    FIT_RATING,
    HEADPHONE,
    MUSHRA,
    QUALIFICATION,
    SIMILARITY,
)

# The Geneva Emotional Music Scale (GEMS-9) words a `gems` cell may hold, `;`-separated.
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


@dataclass(frozen=True)
class Column:
    """One column of responses.csv.

    `kind` is "str", "int" (a whole number, >= `low`, <= `high` when set), "bool" (0/1),
    "float" or "timestamp" (ISO 8601 UTC). `trial_types` names the trial types whose rows may
    fill it (None: every exported row). `optional` columns may be missing from an export: exports
    made before they existed still load. `required` columns are the ones the analysis reads:
    it refuses an export without them.
    """

    name: str
    kind: str
    description: str
    trial_types: tuple[str, ...] | None = None
    low: int | None = None
    high: int | None = None
    allowed: tuple[str, ...] = ()
    separator: str | None = None  # `allowed` words joined by it (gems), not one value of them
    unit: str | None = None
    optional: bool = False
    required: bool = False

    def doc_type(self) -> str:
        """The type as docs/export-format.md's column tables write it (a test compares them)."""
        if self.kind == "bool":
            return "0/1"
        if self.kind == "int" and self.high is not None:
            return f"int {self.low}-{self.high}"
        if self.allowed and self.separator is None:
            return "/".join(f"`{value}`" for value in self.allowed)
        return f"{self.kind} {self.unit}" if self.unit else self.kind


_RATED = (EMOTION, FIT_RATING, SIMILARITY, MUSHRA, ACR)  # one rated clip (or sample) per row
_STIMULUS = (ABX, FIT_PREFERENCE, *_RATED)  # rows about a source's segment
_SCREENS = (HEADPHONE, QUALIFICATION)


def _int(name: str, description: str, **kw) -> Column:
    return Column(name, "int", description, low=kw.pop("low", 0), **kw)


COLUMNS: tuple[Column, ...] = (
    Column("study", "str", "study slug"),
    Column("participant", "str", "opaque participant id", required=True),
    _int("assignment_index", "order of arrival (0-based); selects the Latin-square list"),
    _int("list_index", "Latin-square list the participant was assigned"),
    Column("external_id", "str", "PROLIFIC_PID when present"),
    Column("block", "str", "block id from the design", required=True),
    _int("block_index", "0-based position of the block in the design"),
    Column("trial_type", "str", "the trial type", required=True),
    _int("trial_index", "0-based index over the participant's whole schedule"),
    _int("trial_in_block", "0-based index within the block"),
    Column("is_catch", "bool", "catch / attention trial", required=True),
    Column("source", "str", "source id (performance video)", _STIMULUS, required=True),
    Column("segment", "str", "segment id", _STIMULUS, required=True),
    Column("condition", "str", "condition under test", _STIMULUS, required=True),
    Column("conditions", "str", "all conditions on the trial, |-separated", _STIMULUS),
    Column("clip", "str", "rated clip id", _RATED),
    Column("clip_a", "str", "clip id in slot A", (ABX, FIT_PREFERENCE)),
    Column("clip_b", "str", "clip id in slot B", (ABX, FIT_PREFERENCE)),
    Column("clip_x", "str", "clip id in slot X", (ABX,)),
    Column("reference_slot", "str", "slot holding the reference", (ABX,), allowed=("A", "B")),
    Column("correct_answer", "str", "the right answer", (ABX, HEADPHONE, ACR)),
    Column("answer", "str", "participant's answer", (ABX, HEADPHONE, ACR, FIT_PREFERENCE)),
    Column("correct", "bool", "answer == correct_answer (P.808 qualification: passed)",
           (ABX, HEADPHONE, ACR, QUALIFICATION), required=True),
    _int("confidence", "ABX confidence", trial_types=(ABX,), low=1, high=5),
    _int("valence", "SAM valence", trial_types=(EMOTION,), low=1, high=9, required=True),
    _int("arousal", "SAM arousal", trial_types=(EMOTION,), low=1, high=9, required=True),
    Column("gems", "str", "GEMS-9 words chosen", (EMOTION,), allowed=GEMS_WORDS, separator=";",
           required=True),
    _int("fit", "fit of the music to the video", trial_types=(EMOTION, FIT_RATING), low=1,
         high=7, required=True),
    _int("tempo", "perceived tempo", trial_types=(EMOTION,), low=1, high=7),
    Column("video_shown", "bool", "muted video was shown with the clip",
           (EMOTION, FIT_RATING, FIT_PREFERENCE)),
    _int("plays_a", "times slot A was started", trial_types=(ABX, FIT_PREFERENCE)),
    _int("plays_b", "times slot B was started", trial_types=(ABX, FIT_PREFERENCE)),
    _int("plays_x", "times slot X was started", trial_types=(ABX,)),
    _int("plays", "times the clip (or tones) was started", trial_types=(*_RATED, *_SCREENS)),
    Column("clip_duration", "float", "duration of each clip on the trial", unit="s"),
    _int("rt_ms", "from the trial page being shown to the answer", required=True),
    Column("presented_at", "timestamp", "trial page first shown"),
    Column("answered_at", "timestamp", "answer received"),
    Column("flag_failed_screening", "bool", "failed the headphone check or P.808 qualification",
           required=True),
    Column("flag_failed_catch", "bool", "failed a catch / attention item", required=True),
    Column("flag_too_fast", "bool", "answered before the clips could be heard", required=True),
    Column("excluded", "bool", "any flag set"),
    # The server's listening evidence (study_app/listening.py), after `excluded` so that the
    # columns before it keep their places; `analysis` applies these flags itself.
    _int("server_rt_ms", "server clock: answer arrival minus first showing", optional=True),
    Column("media_fetched", "str", "slot:fraction of bytes written, ;-separated", optional=True),
    Column("flag_unheard", "bool", "answered before the audio was written whole", optional=True),
    Column("flag_too_quick", "bool", "answered sooner than the audio takes", optional=True),
    # Possible re-entry under another PROLIFIC_PID (study_app/reentry.py): flags, never exclusions.
    Column("possible_reentry_of", "str", "earlier participants whose entry matched",
           optional=True),
    Column("reentry_evidence", "str", "what matched: cookie, address+agent", optional=True),
    # The trial types' own columns, by trial type name (sorted), each in its declared order.
    Column("acr_item", "str", "P.808 item kind", (ACR,), allowed=("rating", "gold", "trap"),
           optional=True),
    _int("acr_rating", "absolute category rating", trial_types=(ACR,), low=1, high=5,
         optional=True),
    Column("condition_a", "str", "condition in slot A", (FIT_PREFERENCE,), optional=True),
    Column("condition_b", "str", "condition in slot B", (FIT_PREFERENCE,), optional=True),
    Column("preferred_condition", "str", "the chosen condition", (FIT_PREFERENCE,),
           optional=True),
    _int("preference_strength", "1 slightly, 2 clearly, 3 strongly", trial_types=(FIT_PREFERENCE,),
         low=1, high=3, optional=True),
    Column("headphone_method", "str", "antiphase or huggins", (HEADPHONE,), optional=True),
    Column("stimulus_role", "str", "hidden_reference, anchor or condition", (MUSHRA,),
           optional=True),
    Column("stimulus_slot", "str", "the sample's opaque slot", (MUSHRA,), optional=True),
    _int("mushra_score", "MUSHRA rating", trial_types=(MUSHRA,), high=100, optional=True),
    _int("mushra_hidden_ref_score", "the screen's hidden-reference rating", trial_types=(MUSHRA,),
         high=100, optional=True),
    Column("mushra_post_screen_flag", "bool", "BS.1534-3 post-screening of this listener",
           (MUSHRA,), optional=True),
    Column("qualification_passed", "bool", "passed the P.808 qualification", (QUALIFICATION,),
           optional=True),
    Column("hearing_reported_normal", "bool", "reported normal hearing", (QUALIFICATION,),
           optional=True),
    Column("listening_device", "str", "what the participant listened with", (QUALIFICATION,),
           optional=True),
    _int("tone_count_errors", "wrong answers in the tone-counting test",
         trial_types=(QUALIFICATION,), optional=True),
    _int("similarity", "similarity to the reference", trial_types=(SIMILARITY,), low=1, high=7,
         optional=True),
    _int("plays_ref", "times the open reference was started", trial_types=(SIMILARITY,),
         optional=True),
)

BY_NAME: dict[str, Column] = {column.name: column for column in COLUMNS}


def names() -> list[str]:
    """Every column, in the order responses.csv writes them."""
    return [column.name for column in COLUMNS]


def of_kind(kind: str) -> tuple[str, ...]:
    """The names of the columns of one kind, in export order."""
    return tuple(column.name for column in COLUMNS if column.kind == kind)


def filled_by(trial_type: str) -> tuple[str, ...]:
    """The columns a row of `trial_type` may fill, in export order."""
    return tuple(
        column.name
        for column in COLUMNS
        if column.trial_types is None or trial_type in column.trial_types
    )
