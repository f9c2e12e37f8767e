"""Headphone screening: the antiphase test of Woods et al. (2017), the Huggins-pitch test of
Milne et al. (2021), or both, chosen per block by `method` (default "antiphase", so designs
written before the Huggins test existed behave as before).

Antiphase: each trial plays three tones; the participant picks the quietest. One louder tone is
in antiphase between the channels, which sounds quieter over loudspeakers but not over headphones,
so listeners without headphones tend to pick it. Huggins: each trial plays three noises; one
carries a faint tone that exists only when each ear gets its own channel; the participant picks
it. With "both", the block runs `trials` antiphase trials, then `trials` Huggins trials, and the
participant must pass each test (at least `pass_threshold` correct in each). The sounds are
rendered by `study_app.headphone_check`, which documents both papers' parameters.

References: K. J. P. Woods et al. (2017), Attention, Perception, & Psychophysics 79, 2064-2072;
A. E. Milne et al. (2021), Behavior Research Methods 53, 1551-1562.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..catalog import Catalog
from ..headphone_check import (
    HEADPHONE_METHODS,
    TESTS_OF_METHOD,
    HeadphoneTrial,
    HugginsTrial,
    calibration_noise_wav_bytes,
    failed_methods,
    headphone_trial_wav_bytes,
    huggins_calibration_wav_bytes,
    huggins_trial_wav_bytes,
    schedule_headphone_trials,
    schedule_huggins_trials,
)
from . import AnswerError, MediaRef, TrialType, client_rt_ms, play_counts, register


def trial_method(spec: Mapping[str, Any]) -> str:
    """The test a trial belongs to. Specs scheduled before `method` existed are antiphase."""
    return str(spec.get("method", "antiphase"))


@register
class HeadphoneCheck(TrialType):
    name = "headphone_check"
    label = "Headphone screening (antiphase and/or Huggins-pitch test)"
    options = {"trials": 6, "pass_threshold": 5, "exclude_on_fail": False, "method": "antiphase"}
    export_columns = ("headphone_method",)
    # With method "both" the antiphase trials come first, then the Huggins ones: two tasks mixed
    # trial by trial would confuse. Each part is shuffled on its own (see `schedule`).
    orders_own_trials = True

    def validate_block(self, block: dict[str, Any], catalog: Catalog) -> list[str]:
        trials, threshold = block["trials"], block["pass_threshold"]
        method = block.get("method", "antiphase")
        if method not in HEADPHONE_METHODS:
            choices = ", ".join(HEADPHONE_METHODS)
            return [f"block {block['id']!r}: 'method' must be one of {choices}, not {method!r}"]
        if not isinstance(trials, int) or isinstance(trials, bool) or not 1 <= trials <= 24:
            return [f"block {block['id']!r}: 'trials' must be between 1 and 24"]
        if not isinstance(threshold, int) or not 0 <= threshold <= trials:
            return [f"block {block['id']!r}: 'pass_threshold' must be between 0 and 'trials'"]
        return []

    def schedule(
        self, block: dict[str, Any], catalog: Catalog, assignment_index: int, rng: random.Random
    ) -> list[dict[str, Any]]:
        specs: list[dict[str, Any]] = []
        tests = TESTS_OF_METHOD[block["method"]]
        if "antiphase" in tests:
            part = [
                {
                    "method": "antiphase",
                    "quiet_position": t.quiet_position,
                    "antiphase_position": t.antiphase_position,
                    "correct_answer": str(t.quiet_position),
                }
                for t in schedule_headphone_trials(block["trials"], rng)
            ]
            # The shuffle the scheduler gave every block before this type ordered its own
            # trials: the same draws, so an antiphase block's schedule for a seed is unchanged.
            if block.get("randomize", True):
                rng.shuffle(part)
            specs.extend(part)
        if "huggins" in tests:
            specs.extend(
                {
                    "method": "huggins",
                    "target_position": t.target_position,
                    "noise_seed": t.noise_seed,
                    "correct_answer": str(t.target_position),
                }
                for t in schedule_huggins_trials(block["trials"], rng)
            )
        return specs

    def media(self, spec: Mapping[str, Any]) -> dict[str, MediaRef]:
        # The slot names are the same for both tests ("tones": the trial's sound), so a page's
        # URLs say nothing but which trial it is; the kinds and keys never reach the browser.
        if trial_method(spec) == "huggins":
            key = f"{spec['target_position']}.{spec['noise_seed']}"
            return {"tones": MediaRef("huggins", key), "calibration": MediaRef("white_noise", "")}
        arrangement = f"{spec['quiet_position']}{spec['antiphase_position']}"
        return {"tones": MediaRef("headphone", arrangement), "calibration": MediaRef("noise", "")}

    def required_slots(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        # The three sounds the answer is about. The calibration noise ("Volume noise", optional
        # on the page and loaded only when pressed) sets the volume: skipping it is allowed.
        return ("tones",)

    def render_media(self, ref: MediaRef, clip_file: Callable[[str], Path]) -> bytes | None:
        if ref.kind == "noise":
            return calibration_noise_wav_bytes()
        if ref.kind == "headphone":
            return headphone_trial_wav_bytes(HeadphoneTrial(int(ref.key[0]), int(ref.key[1])))
        if ref.kind == "white_noise":
            return huggins_calibration_wav_bytes()
        if ref.kind == "huggins":
            target, seed = ref.key.split(".")
            return huggins_trial_wav_bytes(HugginsTrial(int(target), int(seed)))
        return None

    def page_context(self, spec: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
        # The page learns the task (which question to ask), never where the target is.
        return {
            "positions": ("1", "2", "3"),
            "require_full_listen": True,
            "huggins": trial_method(spec) == "huggins",
        }

    def parse_answer(
        self, spec: Mapping[str, Any], block: Mapping[str, Any], form: Mapping[str, str]
    ) -> dict[str, Any]:
        answer = (form.get("answer") or "").strip()
        if answer not in ("1", "2", "3"):
            if trial_method(spec) == "huggins":
                raise AnswerError(["Please choose which noise had the faint tone in it."])
            raise AnswerError(["Please choose which tone was the quietest."])
        return {
            "answer": answer,
            "plays": play_counts(form, ("tones",)),
            "client_rt_ms": client_rt_ms(form),
        }

    def export_fields(self, spec: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "headphone_method": trial_method(spec),
            "correct_answer": spec["correct_answer"],
            "answer": answer["answer"],
            "correct": int(answer["answer"] == spec["correct_answer"]),
            "plays": answer.get("plays", {}).get("tones", 0),
        }

    def min_listen_seconds(self, spec: Mapping[str, Any], durations: Mapping[str, float]) -> float:
        # Either test: three 1 s sounds with two 0.5 s gaps.
        return 4.0

    def screening_failed(self, block, answered, n_trials) -> bool:
        # Failed once one of the block's tests has more wrong answers than its threshold allows
        # (certain before the end). With "both", each test has half of the block's trials.
        tests = TESTS_OF_METHOD[block["method"]]
        answers = [
            (trial_method(spec), answer["answer"] == spec["correct_answer"])
            for spec, answer in answered
        ]
        per_test = n_trials // len(tests)
        return bool(failed_methods(block["method"], answers, per_test, block["pass_threshold"]))


def screening_passed(block: Mapping[str, Any], answers: list[tuple[str, bool]]) -> bool:
    """Whether a finished block was passed: at least `pass_threshold` right in each of its tests
    (Woods et al. and Milne et al.: 5 of 6), from (test, correct) pairs."""
    method = block.get("method", "antiphase")
    tests = TESTS_OF_METHOD[method]
    return all(
        sum(correct for test_, correct in answers if test_ == test) >= block["pass_threshold"]
        for test in tests
    )
