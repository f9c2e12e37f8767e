"""Emotion rating: one clip, optionally with its performance video muted and in sync.

Scales: valence and arousal on 9-point Self-Assessment Manikin scales (Bradley & Lang 1994),
the nine GEMS-9 emotion words (Zentner, Grandjean & Scherer 2008; any number may be ticked), fit
of the music to the video (1-7, only when the video is shown) and perceived tempo (1-7).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from ..catalog import Catalog
from ..counterbalance import latin_square_cells
from . import (
    AnswerError,
    MediaRef,
    TrialType,
    client_rt_ms,
    condition_name_problems,
    int_in_range,
    is_name_list,
    play_counts,
    register,
)

GEMS9 = (
    ("wonder", "Wonder", "filled with wonder, dazzled, moved"),
    ("transcendence", "Transcendence", "fascinated, overwhelmed, feelings of transcendence"),
    ("tenderness", "Tenderness", "tender, affectionate, in love"),
    ("nostalgia", "Nostalgia", "nostalgic, dreamy, melancholic"),
    ("peacefulness", "Peacefulness", "serene, calm, soothed"),
    ("power", "Power", "strong, triumphant, energetic"),
    ("joyful_activation", "Joyful activation", "joyful, amused, bouncy"),
    ("tension", "Tension", "agitated, nervous, tense"),
    ("sadness", "Sadness", "sad, sorrowful"),
)
GEMS_KEYS = tuple(key for key, _, _ in GEMS9)
SCALES = ("valence", "arousal", "gems", "fit", "tempo")


@register
class EmotionRating(TrialType):
    name = "emotion_rating"
    label = "Emotion rating"
    option_choices = {"scales": list(SCALES)}
    options = {
        "conditions": [],
        "trials_per_participant": None,
        "scales": ["valence", "arousal", "gems"],
        "show_video": False,
        "require_full_listen": True,
        "attention_checks": 0,  # instructed-response items: "for this clip, select 7 on ..."
    }

    def validate_block(self, block: dict[str, Any], catalog: Catalog) -> list[str]:
        problems = []
        conditions = block["conditions"]
        if not conditions or not is_name_list(conditions):
            return [f"block {block['id']!r}: 'conditions' must list at least one condition"]
        # Names first, in linear time, before the catalog is searched for them (issue 23).
        problems = condition_name_problems(block["id"], conditions, catalog)
        if problems:
            return problems
        if not is_name_list(block["scales"]) or not block["scales"]:
            return [f"block {block['id']!r}: 'scales' must be a non-empty subset of {list(SCALES)}"]
        unknown = set(block["scales"]) - set(SCALES)
        if unknown:
            problems.append(
                f"block {block['id']!r}: 'scales' must be a non-empty subset of {list(SCALES)}"
            )
        if "fit" in block["scales"] and not block["show_video"]:
            problems.append(f"block {block['id']!r}: the 'fit' scale needs show_video: true")
        segments = catalog.segments_with(conditions)
        if not segments:
            problems.append(
                f"block {block['id']!r}: no segment has a clip of every listed condition"
            )
        trials = block["trials_per_participant"]
        if trials is not None and (not isinstance(trials, int) or trials < 1):
            problems.append(f"block {block['id']!r}: 'trials_per_participant' must be >= 1")
        elif trials is not None and segments and trials > len(segments) * len(conditions):
            problems.append(
                f"block {block['id']!r}: {trials} trials asked but the set has only "
                f"{len(segments) * len(conditions)} clips of these conditions"
            )
        checks = block["attention_checks"]
        if not isinstance(checks, int) or isinstance(checks, bool) or not 0 <= checks <= 50:
            # Capped: each check is one more trial in every participant's schedule.
            problems.append(f"block {block['id']!r}: 'attention_checks' must be 0-50")
        elif checks and not {"valence", "arousal"} & set(block["scales"]):
            problems.append(
                f"block {block['id']!r}: attention checks instruct an answer on the valence or "
                "arousal scale; add one of them to 'scales'"
            )
        return problems

    def schedule(
        self, block: dict[str, Any], catalog: Catalog, assignment_index: int, rng: random.Random
    ) -> list[dict[str, Any]]:
        conditions = list(block["conditions"])
        segments = catalog.segments_with(conditions)
        trials = block["trials_per_participant"] or len(segments)
        specs = []
        for cell in latin_square_cells(len(segments), len(conditions), trials, assignment_index):
            segment = segments[cell.segment]
            condition = conditions[cell.condition]
            specs.append(
                {
                    "segment": segment.id,
                    "source": segment.source,
                    "condition": condition,
                    "conditions": [condition],
                    "list_index": assignment_index % len(conditions),
                    "clip": segment.clips[condition],
                    "duration": segment.duration,
                    "show_video": bool(block["show_video"]),
                    "is_catch": False,
                }
            )
        instructable = [s for s in ("valence", "arousal") if s in block["scales"]]
        for _ in range(block["attention_checks"]):
            check = dict(rng.choice(specs))
            check["is_catch"] = True
            check["instruction"] = {"scale": rng.choice(instructable), "value": rng.randint(1, 9)}
            specs.append(check)
        return specs

    def catch_failed(self, spec: Mapping[str, Any], answer: Mapping[str, Any]) -> bool:
        instruction = spec.get("instruction")
        return bool(instruction) and answer.get(instruction["scale"]) != instruction["value"]

    def media(self, spec: Mapping[str, Any]) -> dict[str, MediaRef]:
        media = {"clip": MediaRef("clip", spec["clip"])}
        if spec["show_video"]:
            media["video"] = MediaRef("video", spec["segment"])
        return media

    def required_slots(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        # The rated clip; the video, when shown, plays muted beside it.
        return ("clip",)

    def page_context(self, spec: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "scales": block["scales"],
            "show_video": spec["show_video"],
            "gems": GEMS9,
            "require_full_listen": block["require_full_listen"],
            "instruction": spec.get("instruction"),
        }

    def parse_answer(
        self, spec: Mapping[str, Any], block: Mapping[str, Any], form: Mapping[str, str]
    ) -> dict[str, Any]:
        problems: list[str] = []
        scales = block["scales"]
        answer: dict[str, Any] = {}
        if "valence" in scales:
            answer["valence"] = int_in_range(form, "valence", 1, 9, problems, label="valence")
        if "arousal" in scales:
            answer["arousal"] = int_in_range(form, "arousal", 1, 9, problems, label="arousal")
        if "gems" in scales:
            words = form.getlist("gems") if hasattr(form, "getlist") else form.get("gems", [])
            if isinstance(words, str):
                words = [words]
            bad = [w for w in words if w not in GEMS_KEYS]
            if bad:
                problems.append("Unknown emotion word.")
            answer["gems"] = sorted(set(words) & set(GEMS_KEYS), key=GEMS_KEYS.index)
        if "fit" in scales and spec["show_video"]:
            answer["fit"] = int_in_range(form, "fit", 1, 7, problems, label="fit to the video")
        if "tempo" in scales:
            answer["tempo"] = int_in_range(form, "tempo", 1, 7, problems, label="tempo")
        if problems:
            raise AnswerError(problems)
        answer["plays"] = play_counts(form, ("clip",))
        answer["client_rt_ms"] = client_rt_ms(form)
        return answer

    def export_fields(self, spec: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "source": spec["source"],
            "segment": spec["segment"],
            "condition": spec["condition"],
            "conditions": "|".join(spec["conditions"]),
            "list_index": spec["list_index"],
            "clip": spec["clip"],
            "valence": answer.get("valence"),
            "arousal": answer.get("arousal"),
            "gems": ";".join(answer["gems"]) if "gems" in answer else None,
            "fit": answer.get("fit"),
            "tempo": answer.get("tempo"),
            "video_shown": int(spec["show_video"]),
            "plays": answer.get("plays", {}).get("clip", 0),
            "clip_duration": spec["duration"],
            "correct_answer": _instructed(spec),
            "correct": None
            if spec.get("instruction") is None
            else int(not self.catch_failed(spec, answer)),
        }

    def min_listen_seconds(self, spec: Mapping[str, Any], durations: Mapping[str, float]) -> float:
        return float(spec["duration"])


def _instructed(spec: Mapping[str, Any]) -> str | None:
    instruction = spec.get("instruction")
    return None if instruction is None else f"{instruction['scale']}={instruction['value']}"
