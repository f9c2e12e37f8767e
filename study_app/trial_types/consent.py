"""Consent: the study's information text (Markdown) and an explicit agreement."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import AnswerError, TrialType, register


@register
class Consent(TrialType):
    name = "consent"
    label = "Consent"
    options = {"text": ""}
    exported = False

    def validate_block(self, block: dict[str, Any], catalog) -> list[str]:
        if not isinstance(block["text"], str) or not block["text"].strip():
            return [f"block {block['id']!r}: consent needs a 'text'"]
        return []

    def page_context(self, spec: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
        return {"text": block["text"]}

    def parse_answer(
        self, spec: Mapping[str, Any], block: Mapping[str, Any], form: Mapping[str, str]
    ) -> dict[str, Any]:
        if form.get("consent") != "yes":
            raise AnswerError(["Please tick the box to give your consent, or close this page."])
        return {"consent": True}
