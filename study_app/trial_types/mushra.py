"""MUSHRA (ITU-R BS.1534-3): one screen per segment, all stimuli rated 0-100 against an open
reference.

A screen holds the open reference (slot 'ref') and, in shuffled order behind opaque slots
's1'..'sN', a hidden reference, one clip of each listed condition and optional low-pass anchors
(3.5 kHz = BS.1534's mandatory low anchor, 7 kHz = its mid anchor). The anchors are rendered by
code from the segment's reference (`render_media`): a zero-phase FFT low-pass (raised-cosine
taper over the last 10 % below the cut-off, nothing above it). Following BS.1534-3 they are
*not* loudness-normalized: removing the highs lowers their loudness a little, as in the standard.

The hidden reference is the same recording as the open one. Every clip slot is served as its own
dithered rendition (participant.py), so the two downloads are not byte-identical, but they are
perceptually the same sound by design: that is what a hidden reference is.

Post-screening (BS.1534-3, 4.1.2): a listener who rates the hidden reference below 90 in more
than 15 % of the screens is flagged (`mushra_post_screen_flag`, the same on every row of the
listener's MUSHRA rows; see `post_screening_flag`).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import read_wav_samples, wav_bytes
from ..catalog import REFERENCE, Catalog
from . import (
    AnswerError,
    MediaRef,
    TrialType,
    client_rt_ms,
    condition_name_problems,
    is_name_list,
    play_counts,
    register,
)

ANCHOR_CUTOFFS = {"lp35": 3500.0, "lp70": 7000.0}
SCORE = re.compile(r"[0-9]{1,3}")
HIDDEN_REFERENCE_MIN = 90
MAX_FAILED_FRACTION = 0.15


def post_screening_flag(
    hidden_reference_scores: Sequence[float],
    *,
    threshold: float = HIDDEN_REFERENCE_MIN,
    max_fraction: float = MAX_FAILED_FRACTION,
) -> bool:
    """BS.1534-3 post-screening: True (exclude) when the hidden reference was rated below
    `threshold` in more than `max_fraction` of the listener's screens. No screens: not flagged."""
    scores = list(hidden_reference_scores)
    if not scores:
        return False
    below = sum(score < threshold for score in scores)
    return below / len(scores) > max_fraction


def lowpass(samples: np.ndarray, sample_rate: int, cutoff: float) -> np.ndarray:
    """Zero-phase FFT low-pass of (n,) or (n, channels) float samples: unity gain up to
    0.9 * cutoff, a raised-cosine taper to zero at `cutoff`, zero above."""
    data = np.asarray(samples, dtype=np.float64)
    n = data.shape[0]
    spectrum = np.fft.rfft(data, axis=0)
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    start = 0.9 * cutoff
    gain = np.ones_like(freqs)
    taper = (freqs > start) & (freqs < cutoff)
    gain[taper] = 0.5 * (1 + np.cos(np.pi * (freqs[taper] - start) / (cutoff - start)))
    gain[freqs >= cutoff] = 0.0
    if data.ndim == 2:
        gain = gain[:, None]
    return np.fft.irfft(spectrum * gain, n=n, axis=0)


def anchor_wav_bytes(reference: Path, cutoff: float) -> bytes:
    samples, rate = read_wav_samples(reference)
    filtered = lowpass(samples, rate, cutoff)
    peak = float(np.max(np.abs(filtered))) if filtered.size else 0.0
    if peak > 0.999:  # Gibbs overshoot can pass full scale: scale down only then
        filtered *= 0.999 / peak
    return wav_bytes(filtered, int(rate))


@register
class Mushra(TrialType):
    name = "mushra"
    label = "MUSHRA (BS.1534)"
    open_slots = ("ref",)  # the labelled Reference
    options = {
        "conditions": [],
        "trials_per_participant": None,  # screens; default: one per segment
        "anchors": ["lp35"],  # any of lp35 (3.5 kHz), lp70 (7 kHz)
        "hidden_reference": True,
        "require_full_listen": False,
    }
    export_columns = (
        "stimulus_role",
        "stimulus_slot",
        "mushra_score",
        "mushra_hidden_ref_score",
        "mushra_post_screen_flag",
    )

    def validate_block(self, block: dict[str, Any], catalog: Catalog) -> list[str]:
        bid = block["id"]
        conditions = block["conditions"]
        if not is_name_list(conditions):
            return [f"block {bid!r}: 'conditions' must be a list of condition names"]
        problems = []
        if REFERENCE in conditions:
            problems.append(
                f"block {bid!r}: the reference is always on a MUSHRA screen; "
                "do not list it among 'conditions'"
            )
        # Names first, in linear time, before the catalog is searched for them (issue 23).
        problems.extend(condition_name_problems(bid, conditions, catalog))
        if problems:
            return problems
        anchors = block["anchors"]
        if not is_name_list(anchors) or set(anchors) - set(ANCHOR_CUTOFFS):
            problems.append(f"block {bid!r}: 'anchors' must be a subset of {list(ANCHOR_CUTOFFS)}")
        segments = catalog.segments_with([REFERENCE, *conditions])
        if not segments:
            problems.append(f"block {bid!r}: no segment has a reference and every condition")
        trials = block["trials_per_participant"]
        if trials is not None and (
            not isinstance(trials, int) or isinstance(trials, bool) or trials < 1
        ):
            problems.append(f"block {bid!r}: 'trials_per_participant' must be >= 1")
        elif trials is not None and segments and trials > len(segments):
            problems.append(
                f"block {bid!r}: {trials} screens asked but only {len(segments)} "
                "segments have every condition"
            )
        if not isinstance(block["hidden_reference"], bool):
            problems.append(f"block {bid!r}: 'hidden_reference' must be true or false")
        elif not block["hidden_reference"] and not conditions and not anchors:
            problems.append(f"block {bid!r}: a MUSHRA screen needs something to rate")
        return problems

    def schedule(
        self, block: dict[str, Any], catalog: Catalog, assignment_index: int, rng: random.Random
    ) -> list[dict[str, Any]]:
        conditions = list(block["conditions"])
        segments = catalog.segments_with([REFERENCE, *conditions])
        n = len(segments)
        trials = block["trials_per_participant"] or n
        start = (assignment_index * trials) % n  # successive participants use segments evenly
        specs = []
        for offset in range(trials):
            segment = segments[(start + offset) % n]
            reference = segment.clips[REFERENCE]
            stimuli = []
            if block["hidden_reference"]:
                stimuli.append(
                    {
                        "role": "hidden_reference",
                        "condition": REFERENCE,
                        "clip": reference,
                        "kind": "clip",
                        "key": reference,
                    }
                )
            for anchor in block["anchors"]:
                stimuli.append(
                    {
                        "role": "anchor",
                        "condition": f"anchor_{anchor}",
                        "clip": reference,
                        "kind": "anchor",
                        "key": f"{anchor}:{reference}",
                    }
                )
            for condition in conditions:
                clip = segment.clips[condition]
                stimuli.append(
                    {
                        "role": "condition",
                        "condition": condition,
                        "clip": clip,
                        "kind": "clip",
                        "key": clip,
                    }
                )
            rng.shuffle(stimuli)
            for i, stimulus in enumerate(stimuli, 1):
                stimulus["slot"] = f"s{i}"
            specs.append(
                {
                    "segment": segment.id,
                    "source": segment.source,
                    "conditions": [REFERENCE, *conditions],
                    "reference_clip": reference,
                    "stimuli": stimuli,
                    "duration": segment.duration,
                    "is_catch": False,
                }
            )
        return specs

    def media(self, spec: Mapping[str, Any]) -> dict[str, MediaRef]:
        media = {"ref": MediaRef("clip", spec["reference_clip"])}
        for s in spec["stimuli"]:
            media[s["slot"]] = MediaRef(s["kind"], s["key"])
        return media

    def required_slots(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        # Every sample rated (hidden reference and anchors included) and the open Reference the
        # scale is anchored to: a score says how close a sample is to it (ITU-R BS.1534).
        return ("ref", *(s["slot"] for s in spec["stimuli"]))

    def render_media(self, ref: MediaRef, clip_file: Callable[[str], Path]) -> bytes | None:
        if ref.kind != "anchor":
            return None
        anchor, _, clip = ref.key.partition(":")
        if anchor not in ANCHOR_CUTOFFS:
            return None
        return anchor_wav_bytes(clip_file(clip), ANCHOR_CUTOFFS[anchor])

    def page_context(self, spec: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "slots": [s["slot"] for s in spec["stimuli"]],
            # mushra.js enforces it (Web Audio, not the <audio> players that trial.js locks)
            "mushra_full_listen": block["require_full_listen"],
            "require_full_listen": False,
        }

    def parse_answer(
        self, spec: Mapping[str, Any], block: Mapping[str, Any], form: Mapping[str, str]
    ) -> dict[str, Any]:
        """Scores of every sample, each one set by the participant (BS.1534 asks for every
        stimulus to be rated). The page's sliders start unset and their score fields empty, so
        an empty or missing score is a slider never set: refused, naming the samples. Every
        numeric field must be a finite number in its range, else refused naming the field."""
        problems: list[str] = []
        scores = {}
        unset = []
        for i, s in enumerate(spec["stimuli"], 1):
            field = f"score_{s['slot']}"
            raw = (form.get(field) or "").strip()
            if not raw:
                unset.append(f"sample {i}")
            elif not SCORE.fullmatch(raw) or not 0 <= int(raw) <= 100:
                # (ASCII digits only: no "nan", "inf", "1e2" or Unicode digits get through)
                problems.append(f"{field} (sample {i}): the score must be a whole number 0-100.")
            else:
                scores[s["slot"]] = int(raw)
        if unset:
            problems.insert(0, f"Please set every slider; not set yet: {', '.join(unset)}.")
        elif form.get("moved") != "all":
            # The page sets moved=all once every slider was set; an answer without it did not
            # come from a page on which every slider was moved.
            problems.append("Please move every slider (rate every sample).")
        slots = ("ref", *(s["slot"] for s in spec["stimuli"]))
        plays: dict[str, int] = {}
        rt_ms = None
        try:
            plays = play_counts(form, slots)
        except AnswerError as exc:
            problems.extend(exc.problems)
        try:
            rt_ms = client_rt_ms(form)
        except AnswerError as exc:
            problems.extend(exc.problems)
        if problems:
            raise AnswerError(problems)
        return {"scores": scores, "plays": plays, "client_rt_ms": rt_ms}

    def export_rows(
        self, spec: Mapping[str, Any], answer: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        scores = answer["scores"]
        plays = answer.get("plays", {})
        hidden = next(
            (scores[s["slot"]] for s in spec["stimuli"] if s["role"] == "hidden_reference"), None
        )
        return [
            {
                "source": spec["source"],
                "segment": spec["segment"],
                "condition": s["condition"],
                "conditions": "|".join(spec["conditions"]),
                "clip": s["clip"],
                "stimulus_role": s["role"],
                "stimulus_slot": s["slot"],
                "mushra_score": scores[s["slot"]],
                "mushra_hidden_ref_score": hidden,
                "mushra_post_screen_flag": None,  # filled per listener by participant_rows
                "plays": plays.get(s["slot"], 0),
                "clip_duration": spec["duration"],
            }
            for s in spec["stimuli"]
        ]

    def participant_rows(self, rows: list[dict[str, Any]]) -> None:
        screens = {}
        for row in rows:
            if row.get("stimulus_role") == "hidden_reference":
                screens[row["trial_index"]] = row["mushra_score"]
        flag = int(post_screening_flag(list(screens.values())))
        for row in rows:
            row["mushra_post_screen_flag"] = flag if screens else None

    def min_listen_seconds(self, spec: Mapping[str, Any], durations: Mapping[str, float]) -> float:
        return float(spec["duration"]) if math.isfinite(spec["duration"]) else 0.0
