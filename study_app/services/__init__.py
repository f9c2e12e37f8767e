"""Owns nothing itself: the names of the app's service layer (what the app does to the database,
apart from the HTTP layer), gathered from the modules that own them:

- stimuli: importing a stimulus set, the catalog of its clips;
- lifecycle: creating, editing, opening/closing and duplicating a study;
- enrolment: enrolling and withdrawing participants;
- current_trial: locating a participant's current trial, its media and their progress;
- answers: recording an answer.

Each function that writes commits once, so it either happens whole or not at all.
"""

from ..design import DesignError
from ..trial_types import AnswerError
from .answers import OutOfOrder, TooEarly, record_answer
from .current_trial import (
    NOT_COUNTED_TYPES,
    REST_ITEM,
    CurrentMedia,
    Position,
    current_media,
    locate,
    progress_counts,
)
from .enrolment import ExternalIds, completed_count, enroll, withdraw
from .lifecycle import STATUS_MOVES, create_study, duplicate_study, set_status, update_design
from .stimuli import MEDIA_MTIME, VIDEO_TYPES, ImportRefused, catalog_for, import_stimulus_set

__all__ = [
    "MEDIA_MTIME",
    "NOT_COUNTED_TYPES",
    "REST_ITEM",
    "STATUS_MOVES",
    "VIDEO_TYPES",
    "AnswerError",
    "CurrentMedia",
    "DesignError",
    "ExternalIds",
    "ImportRefused",
    "OutOfOrder",
    "Position",
    "TooEarly",
    "catalog_for",
    "completed_count",
    "create_study",
    "current_media",
    "duplicate_study",
    "enroll",
    "import_stimulus_set",
    "locate",
    "progress_counts",
    "record_answer",
    "set_status",
    "update_design",
    "withdraw",
]
