"""Single-stimulus audio-video fit: the performance video plays muted, in sync with one clip;
"How well does this music fit the performance?" on a 1-7 scale (written to the core `fit`
column). Conditions go to segments by Latin-square lists, as in emotion_rating."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from ..catalog import Catalog
from . import AnswerError, MediaRef, TrialType, client_rt_ms, int_in_range, play_counts, register
from .similarity import latin_square_specs, validate_single


@register
class FitRating(TrialType):
    name = "fit_rating"
    label = "Audio-video fit rating (1-7)"
    options = {
        "conditions": [],
        "trials_per_participant": None,
        "require_full_listen": True,
    }

    def validate_block(self, block: dict[str, Any], catalog: Catalog) -> list[str]:
        return validate_single(block, catalog, [])

    def schedule(
        self, block: dict[str, Any], catalog: Catalog, assignment_index: int, rng: random.Random
    ) -> list[dict[str, Any]]:
        return latin_square_specs(block, catalog, assignment_index, [])

    def media(self, spec: Mapping[str, Any]) -> dict[str, MediaRef]:
        return {"clip": MediaRef("clip", spec["clip"]), "video": MediaRef("video", spec["segment"])}

    def required_slots(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        # The soundtrack rated against the (muted) video.
        return ("clip",)

    def page_context(self, spec: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
        return {"require_full_listen": block["require_full_listen"]}

    def parse_answer(
        self, spec: Mapping[str, Any], block: Mapping[str, Any], form: Mapping[str, str]
    ) -> dict[str, Any]:
        problems: list[str] = []
        value = int_in_range(form, "fit", 1, 7, problems, label="fit to the performance")
        if problems:
            raise AnswerError(problems)
        return {
            "fit": value,
            "plays": play_counts(form, ("clip",)),
            "client_rt_ms": client_rt_ms(form),
        }

    def export_fields(self, spec: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "source": spec["source"],
            "segment": spec["segment"],
            "condition": spec["condition"],
            "conditions": spec["condition"],
            "list_index": spec["list_index"],
            "clip": spec["clip"],
            "fit": answer["fit"],
            "video_shown": 1,
            "plays": answer.get("plays", {}).get("clip", 0),
            "clip_duration": spec["duration"],
        }

    def min_listen_seconds(self, spec: Mapping[str, Any], durations: Mapping[str, float]) -> float:
        return float(spec["duration"])
