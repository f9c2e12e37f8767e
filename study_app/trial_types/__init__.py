"""Trial types: one module per type, found and registered automatically.

A trial type owns everything that is particular to it: which options its block takes, how it
fills a participant's block from the stimulus catalog (`schedule`), which media a trial plays
(`media`), what its page may show (`page_context`, template `templates/<name>.html`), how an
answer is checked (`parse_answer`) and which export columns it writes (`export_fields`). Core
code (the scheduler, the participant blueprint, the export) only calls these hooks, so a new type
is a new module in this package and touches nothing else.

Nothing here imports Flask or the database: scheduling and answer checking are pure functions.
"""

from __future__ import annotations

import importlib
import pkgutil
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..catalog import Catalog

COMMON_BLOCK_OPTIONS: dict[str, Any] = {
    "id": None,
    "type": None,
    "title": None,
    "instructions": None,
    "randomize": True,
}


class AnswerError(ValueError):
    """An answer that cannot be stored; `problems` are shown to the participant."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class MediaRef:
    """What a media slot of a trial plays. `kind` is 'clip', 'video' or a type's own kind."""

    kind: str
    key: str


class TrialType:
    """Base class with the defaults; subclasses set `name` and override what they need."""

    name: ClassVar[str]
    label: ClassVar[str]
    # Options the block accepts beyond COMMON_BLOCK_OPTIONS, with their defaults.
    options: ClassVar[dict[str, Any]] = {}
    # False for pages that only inform (debrief): the participant moves on without answering.
    answerable: ClassVar[bool] = True
    # Whether its answers are rows of responses.csv (consent is not).
    exported: ClassVar[bool] = True
    # True when `schedule` puts the trials in their final order itself (honouring the block's
    # `randomize`), e.g. to keep pauses in place; otherwise the scheduler shuffles the block.
    orders_own_trials: ClassVar[bool] = False
    # Media slots whose condition the page states openly (the labelled Reference of MUSHRA and
    # of the similarity scale): by design not blind, so the blinding audit leaves them out.
    open_slots: ClassVar[tuple[str, ...]] = ()
    # Extra export columns this type writes, appended after the core columns.
    export_columns: ClassVar[tuple[str, ...]] = ()

    @property
    def template(self) -> str:
        return f"trial_types/{self.name}.html"

    def validate_block(self, block: dict[str, Any], catalog: Catalog) -> list[str]:
        """Problems with a block's options against the stimulus set; [] when it is fine."""
        return []

    def schedule(
        self, block: dict[str, Any], catalog: Catalog, assignment_index: int, rng: random.Random
    ) -> list[dict[str, Any]]:
        """The block's trial specs for one participant (server-side; may name conditions)."""
        return [{}]

    def media(self, spec: Mapping[str, Any]) -> dict[str, MediaRef]:
        return {}

    def required_slots(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        """The media slots a participant must hear to answer this trial: the listening evidence
        (listening.py) flags an answer as unheard unless each was sent whole before it. Never
        an optional sound (a calibration noise) nor a video (played muted). Default: every slot
        that is not a video; each type with media states its own."""
        return tuple(slot for slot, ref in self.media(spec).items() if ref.kind != "video")

    def render_media(self, ref: MediaRef, clip_file: Callable[[str], Path]) -> bytes | None:
        """WAV bytes for a media kind other than 'clip' and 'video' (e.g. tones, anchors).

        `clip_file(clip_id)` gives the canonical file of an imported clip to derive from. The
        app caches the result, so this runs once per distinct `ref`.
        """
        return None

    def page_context(self, spec: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
        """What the page may show. Never a condition name, clip id or file name."""
        return {}

    def parse_answer(
        self, spec: Mapping[str, Any], block: Mapping[str, Any], form: Mapping[str, str]
    ) -> dict[str, Any]:
        return {}

    def export_fields(self, spec: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
        """Values for the export's columns (core or this type's own) from one answered trial."""
        return {}

    def catch_failed(self, spec: Mapping[str, Any], answer: Mapping[str, Any]) -> bool:
        """True when a catch or attention trial was answered wrongly."""
        return bool(spec.get("is_catch")) and answer.get("answer") != spec.get("correct_answer")

    def export_rows(
        self, spec: Mapping[str, Any], answer: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Rows of responses.csv for one answered trial: one by default; a multi-stimulus screen
        (MUSHRA) writes one per rated clip."""
        return [self.export_fields(spec, answer)]

    def participant_rows(self, rows: list[dict[str, Any]]) -> None:
        """Adjust, in place, all of one participant's export rows of this type (a per-listener
        flag that needs every trial, e.g. MUSHRA post-screening). Default: nothing."""

    def min_listen_seconds(self, spec: Mapping[str, Any], durations: Mapping[str, float]) -> float:
        """Shortest time in which the trial's audio can be heard as the block requires."""
        return 0.0

    def min_answer_seconds(self, spec: Mapping[str, Any], block: Mapping[str, Any]) -> float:
        """Seconds after the page was served before the server accepts an answer (a pause's
        countdown); an earlier answer is refused. Default: none."""
        return 0.0

    def screening_failed(
        self,
        block: Mapping[str, Any],
        answered: list[tuple[Mapping[str, Any], Mapping[str, Any]]],
        n_trials: int,
    ) -> bool:
        """For screening blocks (headphone check, P.808 qualification): True as soon as the
        block can no longer be passed, given its answered (spec, answer) pairs out of
        `n_trials`. A failed screening excludes the participant (and, with the block's
        `exclude_on_fail`, ends the session once the block is done). Default: not a screening."""
        return False

    def study_tables(self, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """Summary tables written beside responses.csv, from all exported rows of this type
        (every participant): {file stem: rows}. Default: none."""
        return {}


_REGISTRY: dict[str, TrialType] = {}


def register(cls: type[TrialType]) -> type[TrialType]:
    """Class decorator: make a trial type known to the scheduler, the app and the export."""
    if cls.name in _REGISTRY:
        raise RuntimeError(f"trial type {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def get_trial_type(name: str) -> TrialType:
    if name not in _REGISTRY:
        _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown block type {name!r} (known: {known})") from None


def all_trial_types() -> dict[str, TrialType]:
    _load_all()
    return dict(_REGISTRY)


_loaded = False


def _load_all() -> None:
    # Importing every module of the package runs its @register: no list of types to keep.
    global _loaded
    if _loaded:
        return
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    _loaded = True


# Shared parsing helpers for the types' answer validation -----------------------------------


# Whole numbers as a form sends them: ASCII digits only. Python's int() also takes "1_000" and
# " ９ " (any Unicode digit); neither is an honest answer.
WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
# A client-measured duration in milliseconds: digits with an optional fraction. No exponent, so
# "1e400", "inf" and "nan" never reach float() (they would overflow int() or compare as false).
MILLISECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")
# No trial is looked at for a day: a longer response time is a forged form, not a slow listener.
MAX_RT_MS = 24 * 3600 * 1000
# trial.js counts every start of playback and mushra.js every switch to a slot; switching back
# and forth is how MUSHRA is meant to be done, so the bound is generous (the old clamp's value).
MAX_PLAYS = 10_000


def int_in_range(
    form: Mapping[str, str], field: str, low: int, high: int, problems: list[str], *, label: str
) -> int | None:
    """The whole number in `field`, or None with a problem naming `label` appended."""
    raw = (form.get(field) or "").strip()
    if not raw:
        problems.append(f"Please answer: {label}.")
        return None
    if not WHOLE_NUMBER.fullmatch(raw):
        problems.append(f"{label}: {raw[:20]!r} is not a whole number.")
        return None
    value = _small_int(raw)
    if value is None or not low <= value <= high:
        problems.append(f"{label}: must be between {low} and {high}.")
        return None
    return value


def _small_int(digits: str) -> int | None:
    """int(digits), or None for more digits than any bound here needs: int() of a long string
    costs time (and raises beyond 4,300 digits)."""
    return int(digits) if len(digits) <= 12 else None


def play_counts(form: Mapping[str, str], slots: tuple[str, ...]) -> dict[str, int]:
    """Client-reported play counts per slot (0 when the page sent none).

    Raises AnswerError naming the field for anything but a whole number in 0..MAX_PLAYS: the
    page only ever sends such a number, so another value is a forged form, refused rather than
    clamped into a plausible-looking count.
    """
    counts = {}
    for slot in slots:
        field = f"plays_{slot}"
        raw = (form.get(field) or "0").strip()
        value = _small_int(raw) if WHOLE_NUMBER.fullmatch(raw) else None
        if value is None or not 0 <= value <= MAX_PLAYS:
            raise AnswerError([f"{field}: must be a whole number between 0 and {MAX_PLAYS}."])
        counts[slot] = value
    return counts


def client_rt_ms(form: Mapping[str, str]) -> int | None:
    """The response time the page measured, in whole milliseconds; None when it sent none (a
    browser without JavaScript). Raises AnswerError naming `rt_ms` for any other value that is
    not a finite number in 0..MAX_RT_MS (inf, nan, negative, exponent forms, text)."""
    raw = (form.get("rt_ms") or "").strip()
    if not raw:
        return None
    if not MILLISECONDS.fullmatch(raw) or float(raw) > MAX_RT_MS:
        raise AnswerError([f"rt_ms: must be a number of milliseconds between 0 and {MAX_RT_MS}."])
    return round(float(raw))


# Shared checks for the types' block validation ------------------------------------------------

# How many names a problem message quotes: a hostile list of thousands of names gets a short
# message (the count says how many more), not a response as long as the request.
NAMES_SHOWN = 10


def quoted_names(names: list[str]) -> str:
    """`names` as a Python list literal, cut to NAMES_SHOWN with a count of the rest."""
    if len(names) <= NAMES_SHOWN:
        return repr(names)
    return f"{repr(names[:NAMES_SHOWN])[:-1]}, ... ({len(names)} in all)]"


def condition_name_problems(
    block_id: Any, names: list[str], catalog: Catalog, *, option: str = "conditions"
) -> list[str]:
    """Names in a block's condition list that the stimulus set lacks or that repeat.

    Linear in the list (one set lookup per name). Every type runs it before any work that grows
    faster than the list (pairs of conditions, Latin squares, schedules): once it passes, the
    list holds each of the set's conditions at most once, so its length is bounded by the
    stimulus set, not by the request body (issue 23: a body of 8,400 unknown names once built
    every pair of them first).
    """
    known = catalog.conditions()
    missing = sorted({name for name in names if name not in known})
    seen: set[str] = set()
    repeated: set[str] = set()
    for name in names:
        (repeated if name in seen else seen).add(name)
    problems = []
    if missing:
        problems.append(
            f"block {block_id!r}: the stimulus set has no condition {quoted_names(missing)}"
        )
    if repeated:
        problems.append(
            f"block {block_id!r}: '{option}' lists {quoted_names(sorted(repeated))} more than once"
        )
    return problems


def is_name_list(value: Any) -> bool:
    """A list of strings: what a block's condition (or scale, anchor) list must be."""
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
