"""P.808 qualification (ITU-T P.808 clause 6.3.2): before rating, the listener reports hearing,
listening device and surroundings, and counts quiet beeps in a few short clips (a language-free
stand-in for the toolkit's spoken-digit hearing test). The block's rules (`require_*`,
`max_tone_errors`) decide the pass; a failed qualification is a failed screening: the participant
is excluded and, with `exclude_on_fail` (the default, as in P.808), the session ends politely.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..catalog import Catalog
from ..p808 import (
    TONE_CLIP_SECONDS,
    TONE_COUNT_RANGE,
    qualification_failures,
    tone_count_wav_bytes,
)
from . import AnswerError, MediaRef, TrialType, client_rt_ms, int_in_range, play_counts, register

DEVICES = {
    "headphones": "Headphones (over or on the ear)",
    "earbuds": "Earbuds (in the ear)",
    "computer_speakers": "Computer or laptop loudspeakers",
    "phone_speaker": "Phone or tablet loudspeaker",
}
ENVIRONMENTS = {"quiet": "Quiet", "some_noise": "Some background noise", "noisy": "Noisy"}


@register
class P808Qualification(TrialType):
    name = "p808_qualification"
    label = "Listener qualification (ITU-T P.808)"
    options = {
        "tone_trials": 2,
        "max_tone_errors": 0,
        "require_normal_hearing": True,
        "require_headphones": False,
        "require_quiet": False,
        "exclude_on_fail": True,
    }
    export_columns = (
        "qualification_passed",
        "hearing_reported_normal",
        "listening_device",
        "tone_count_errors",
    )

    def validate_block(self, block: dict[str, Any], catalog: Catalog) -> list[str]:
        bid, problems = block["id"], []
        trials = block["tone_trials"]
        if not isinstance(trials, int) or isinstance(trials, bool) or not 1 <= trials <= 6:
            problems.append(f"block {bid!r}: 'tone_trials' must be between 1 and 6")
        errors = block["max_tone_errors"]
        if not isinstance(errors, int) or isinstance(errors, bool) or errors < 0:
            problems.append(f"block {bid!r}: 'max_tone_errors' must be 0 or more")
        for option in (
            "require_normal_hearing",
            "require_headphones",
            "require_quiet",
            "exclude_on_fail",
        ):
            if not isinstance(block[option], bool):
                problems.append(f"block {bid!r}: '{option}' must be true or false")
        return problems

    def schedule(
        self, block: dict[str, Any], catalog: Catalog, assignment_index: int, rng: random.Random
    ) -> list[dict[str, Any]]:
        low, high = TONE_COUNT_RANGE
        return [
            {
                "tone_counts": [rng.randint(low, high) for _ in range(block["tone_trials"])],
                "tone_seeds": [rng.randrange(2**31) for _ in range(block["tone_trials"])],
                "is_catch": False,
            }
        ]

    def media(self, spec: Mapping[str, Any]) -> dict[str, MediaRef]:
        return {
            f"t{i}": MediaRef("p808_tones", f"{count}:{seed}")
            for i, (count, seed) in enumerate(
                zip(spec["tone_counts"], spec["tone_seeds"], strict=True), 1
            )
        }

    def required_slots(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        # Each tone clip: the answer counts its tones.
        return tuple(self.media(spec))

    def render_media(self, ref: MediaRef, clip_file: Callable[[str], Path]) -> bytes | None:
        if ref.kind != "p808_tones":
            return None
        count, _, seed = ref.key.partition(":")
        return tone_count_wav_bytes(int(count), int(seed))

    def page_context(self, spec: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "tone_slots": [f"t{i}" for i in range(1, len(spec["tone_counts"]) + 1)],
            "devices": DEVICES,
            "environments": ENVIRONMENTS,
            "require_full_listen": True,
        }

    def parse_answer(
        self, spec: Mapping[str, Any], block: Mapping[str, Any], form: Mapping[str, str]
    ) -> dict[str, Any]:
        problems: list[str] = []
        hearing = form.get("hearing")
        if hearing not in ("normal", "impaired"):
            problems.append("Please say whether your hearing is normal.")
        device = form.get("device")
        if device not in DEVICES:
            problems.append("Please say what you are listening with.")
        environment = form.get("environment")
        if environment not in ENVIRONMENTS:
            problems.append("Please say how quiet it is where you are.")
        counts = [
            int_in_range(form, f"count_t{i}", 0, 20, problems, label=f"beeps in sound {i}")
            for i in range(1, len(spec["tone_counts"]) + 1)
        ]
        if problems:
            raise AnswerError(problems)
        answer = {
            "hearing": hearing,
            "device": device,
            "environment": environment,
            "tone_counts": counts,
            "tone_count_errors": sum(
                c != e for c, e in zip(counts, spec["tone_counts"], strict=True)
            ),
            "plays": play_counts(form, tuple(self.media(spec))),
            "client_rt_ms": client_rt_ms(form),
        }
        answer["failures"] = qualification_failures(answer, block)
        answer["passed"] = not answer["failures"]
        return answer

    def screening_failed(self, block, answered, n_trials) -> bool:
        return any(not answer["passed"] for _, answer in answered)

    def export_fields(self, spec: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "correct": int(answer["passed"]),
            "qualification_passed": int(answer["passed"]),
            "hearing_reported_normal": int(answer["hearing"] == "normal"),
            "listening_device": answer["device"],
            "tone_count_errors": answer["tone_count_errors"],
            "plays": sum(answer.get("plays", {}).values()),
        }

    def min_listen_seconds(self, spec: Mapping[str, Any], durations: Mapping[str, float]) -> float:
        return TONE_CLIP_SECONDS * len(spec["tone_counts"])
