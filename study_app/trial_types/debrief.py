"""Debrief: the closing text, the completion code and, when given, the redirect link."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import TrialType, register


@register
class Debrief(TrialType):
    name = "debrief"
    label = "Debrief"
    options = {"text": "Thank you for taking part."}
    answerable = False
    exported = False

    def page_context(self, spec: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
        return {"text": block["text"]}
