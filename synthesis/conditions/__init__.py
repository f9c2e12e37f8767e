"""Conditions: named ways of making a segment's clip, one module each.

A condition owns everything particular to it: the models and checkpoints it loads (once per
run, before any video is read), and how it makes a segment's clip, as finished audio or as
MusicGen conditioning. `synthesis.pipeline` knows none of them by name. To add one, write a
module here with a `Condition` subclass decorated with `@register` (with its config section, if
it has settings, in `sections`) and list its name in a config's `conditions`: every module of
this package is imported (which registers it) below.
"""

import importlib
import pkgutil

from synthesis.conditions.base import (
    CONDITIONS,
    SECTIONS,
    ClipPlan,
    Condition,
    ConditionSkipped,
    RunSetup,
    SegmentInput,
    clip_seed,
    get_condition,
    load_conditions,
    needs_score,
    register,
)
from synthesis.conditions.mismatched import mismatch_partner
from synthesis.conditions.text_bridge import describe

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda module: module.name):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "CONDITIONS",
    "SECTIONS",
    "ClipPlan",
    "Condition",
    "ConditionSkipped",
    "RunSetup",
    "SegmentInput",
    "clip_seed",
    "describe",
    "get_condition",
    "load_conditions",
    "mismatch_partner",
    "needs_score",
    "register",
]
