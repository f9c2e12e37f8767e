"""Headphone screening by the antiphase test of Woods et al. (2017).

Each trial plays three tones; the participant picks the quietest. One louder tone is in antiphase
between the channels, which sounds quieter over loudspeakers but not over headphones, so listeners
without headphones tend to pick it. The tones are rendered by `study_app.headphone_check`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..catalog import Catalog
from ..headphone_check import (
    HeadphoneTrial,
    calibration_noise_wav_bytes,
    headphone_trial_wav_bytes,
    schedule_headphone_trials,
)
from . import AnswerError, MediaRef, TrialType, client_rt_ms, play_counts, register


@register
class HeadphoneCheck(TrialType):
    name = "headphone_check"
    label = "Headphone screening (antiphase test)"
    options = {"trials": 6, "pass_threshold": 5, "exclude_on_fail": False}

    def validate_block(self, block: dict[str, Any], catalog: Catalog) -> list[str]:
        trials, threshold = block["trials"], block["pass_threshold"]
        if not isinstance(trials, int) or not 1 <= trials <= 24:
            return [f"block {block['id']!r}: 'trials' must be between 1 and 24"]
        if not isinstance(threshold, int) or not 0 <= threshold <= trials:
            return [f"block {block['id']!r}: 'pass_threshold' must be between 0 and 'trials'"]
        return []

    def schedule(
        self, block: dict[str, Any], catalog: Catalog, assignment_index: int, rng: random.Random
    ) -> list[dict[str, Any]]:
        return [
            {
                "quiet_position": t.quiet_position,
                "antiphase_position": t.antiphase_position,
                "correct_answer": str(t.quiet_position),
            }
            for t in schedule_headphone_trials(block["trials"], rng)
        ]

    def media(self, spec: Mapping[str, Any]) -> dict[str, MediaRef]:
        arrangement = f"{spec['quiet_position']}{spec['antiphase_position']}"
        return {"tones": MediaRef("headphone", arrangement), "calibration": MediaRef("noise", "")}

    def render_media(self, ref: MediaRef, clip_file: Callable[[str], Path]) -> bytes | None:
        if ref.kind == "noise":
            return calibration_noise_wav_bytes()
        if ref.kind == "headphone":
            return headphone_trial_wav_bytes(HeadphoneTrial(int(ref.key[0]), int(ref.key[1])))
        return None

    def page_context(self, spec: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
        return {"positions": ("1", "2", "3"), "require_full_listen": True}

    def parse_answer(
        self, spec: Mapping[str, Any], block: Mapping[str, Any], form: Mapping[str, str]
    ) -> dict[str, Any]:
        answer = (form.get("answer") or "").strip()
        if answer not in ("1", "2", "3"):
            raise AnswerError(["Please choose which tone was the quietest."])
        return {
            "answer": answer,
            "plays": play_counts(form, ("tones",)),
            "client_rt_ms": client_rt_ms(form),
        }

    def export_fields(self, spec: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "correct_answer": spec["correct_answer"],
            "answer": answer["answer"],
            "correct": int(answer["answer"] == spec["correct_answer"]),
            "plays": answer.get("plays", {}).get("tones", 0),
        }

    def min_listen_seconds(self, spec: Mapping[str, Any], durations: Mapping[str, float]) -> float:
        return 4.0  # three 1 s tones with two 0.5 s gaps

    def screening_failed(self, block, answered, n_trials) -> bool:
        # Failed once more answers are wrong than the threshold allows (certain before the end).
        wrong = sum(answer["answer"] != spec["correct_answer"] for spec, answer in answered)
        return wrong > n_trials - block["pass_threshold"]


def screening_passed(block: Mapping[str, Any], correct: list[bool]) -> bool:
    """Pass when at least `pass_threshold` answers were right (Woods et al.: 5 of 6)."""
    return sum(correct) >= block["pass_threshold"]
