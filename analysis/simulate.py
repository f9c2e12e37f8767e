"""Simulate a study with known truth and write it in the real export format.

Used by the tests (does the report recover the truth?) and by ``scripts/bench_analysis.py``.
Listeners differ: each has their own ABX skill and rating bias, and sources differ in difficulty,
so the data have the participant and source variance the mixed models expect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import export_contract
from analysis.load import GEMS_WORDS


@dataclass
class Truth:
    """What the simulated listeners really perceive."""

    # Probability of a correct ABX answer per generated condition (typical listener).
    abx_accuracy: dict[str, float] = field(
        default_factory=lambda: {"at_chance": 0.5, "distinguishable": 0.85}
    )
    # Generated conditions whose clips carry the reference's emotion; others get unrelated ones.
    keeps_emotion: tuple[str, ...] = ("keeps_emotion",)
    loses_emotion: tuple[str, ...] = ("loses_emotion",)
    participant_logit_sd: float = 0.4
    source_logit_sd: float = 0.2
    rating_noise_sd: float = 1.2
    participant_bias_sd: float = 0.6
    # fit_preference (2AFC) trials: Bradley-Terry log-worth of each condition's fit to the video,
    # P(i preferred to j) = 1 / (1 + exp(-(w_i - w_j))); log 4 = 1.386: preferred 80% of the time.
    fit_worth: dict[str, float] = field(
        default_factory=lambda: {"fits_video": 1.3863, "fits_loosely": 0.0, "mismatched": -1.0}
    )
    # acr trials (P.808): true mean quality of each condition on the 1-5 scale.
    acr_quality: dict[str, float] = field(
        default_factory=lambda: {"reference": 4.4, "good": 3.6, "poor": 2.0}
    )
    acr_noise_sd: float = 0.6
    acr_listener_sd: float = 0.3


def simulate_export(
    out_dir: str | Path,
    participants: int = 60,
    abx_trials: int = 24,
    rating_trials: int = 24,
    sources: int = 8,
    segments_per_source: int = 2,
    truth: Truth | None = None,
    failed_screening_share: float = 0.05,
    failed_catch_share: float = 0.05,
    too_fast_share: float = 0.02,
    seed: int = 0,
    fit_preference_trials: int = 0,
    acr_trials: int = 0,
    acr_careless_share: float = 0.0,
) -> tuple[Path, Path]:
    """Write ``responses.csv`` and ``study.json`` for a simulated study; return their paths.

    Each participant does 6 headphone-check trials, ``abx_trials`` ABX trials (2 of them catch
    trials) and ``rating_trials`` emotion ratings over ``reference``, the generated conditions
    and ``mismatched`` (music of another source). Participants who fail screening or catch
    items answer at random, so exclusions matter.

    Optional later trial types (off by default, so the export is the same as without them):

    * ``fit_preference_trials`` 2AFC trials per participant over all pairs of
      ``truth.fit_worth`` (Bradley-Terry truth), in counterbalanced A/B order, with a strength
      of preference 1-3;
    * ``acr_trials`` P.808 ACR ratings per participant over ``truth.acr_quality``, plus two
      gold-standard items (the reference, expected 5; a degraded one, expected 1) and one
      trapping item, and one ``p808_qualification`` row (failed by those who fail screening).
      Careless listeners (failed screening or catch, plus a share ``acr_careless_share`` of the
      others) rate at random; those who fail catch items or are careless here also fail the
      trap. As the app does, failing any gold or trap item sets ``flag_failed_catch`` on all of
      the listener's rows.

    These draw from their own random stream, so switching them on leaves the other trial types'
    correctness and ratings unchanged (response times, too-fast flags and ABX slot order are
    drawn per row, so those change with the number of rows).
    """
    truth = truth or Truth()
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    abx_conditions = list(truth.abx_accuracy)
    rating_conditions = ["reference", *truth.keeps_emotion, *truth.loses_emotion, "mismatched"]
    source_ids = [f"src{i:02d}" for i in range(sources)]
    segment_ids = [f"{s}_seg{j}" for s in source_ids for j in range(segments_per_source)]
    segment_source = np.repeat(np.arange(sources), segments_per_source)

    # Per-source true emotion (valence, arousal) and GEMS words.
    source_emotion = rng.uniform(2.5, 7.5, size=(sources, 2))
    source_words = np.array([rng.choice(len(GEMS_WORDS), 2, replace=False) for _ in source_ids])
    source_logit = rng.normal(0, truth.source_logit_sd, sources)

    failed_screening = rng.random(participants) < failed_screening_share
    failed_catch = (rng.random(participants) < failed_catch_share) & ~failed_screening
    careless = failed_screening | failed_catch
    skill = rng.normal(0, truth.participant_logit_sd, participants)
    bias = rng.normal(0, truth.participant_bias_sd, size=(participants, 2))
    frames = []

    # Headphone check: 6 trials; pass = at least 5 correct.
    n_hp = 6
    hp_person = np.repeat(np.arange(participants), n_hp)
    hp_correct = np.where(failed_screening[hp_person], rng.random(hp_person.size) < 0.4, True)
    frames.append(
        pd.DataFrame(
            {
                "participant_idx": hp_person,
                "block": "screening",
                "block_index": 1,
                "trial_type": "headphone_check",
                "trial_in_block": np.tile(np.arange(n_hp), participants),
                "is_catch": 0,
                "correct": hp_correct.astype(int),
            }
        )
    )

    # ABX: cells rotate through (segment, condition) per participant (Latin-square-like).
    cells = [(s, c) for s in range(len(segment_ids)) for c in range(len(abx_conditions))]
    abx_person = np.repeat(np.arange(participants), abx_trials)
    position = np.tile(np.arange(abx_trials), participants)
    cell = (position + abx_person * 3) % len(cells)
    segment = np.array([cells[i][0] for i in cell], dtype=int)
    condition = np.array([cells[i][1] for i in cell], dtype=int)
    is_catch = position < 2
    p_true = np.array([truth.abx_accuracy[c] for c in abx_conditions])[condition]
    logit = np.log(p_true / (1 - p_true)) + skill[abx_person]
    logit = logit + source_logit[segment_source[segment]]
    p = 1 / (1 + np.exp(-logit))
    p = np.where(is_catch, 0.97, p)  # catch trials are easy for attentive listeners
    p = np.where(careless[abx_person], 0.5, p)
    abx_correct = rng.random(abx_person.size) < p
    # Failing a catch item is what flags those participants.
    abx_correct = np.where(is_catch & failed_catch[abx_person], False, abx_correct)
    frames.append(
        pd.DataFrame(
            {
                "participant_idx": abx_person,
                "block": "realism",
                "block_index": 2,
                "trial_type": "abx",
                "trial_in_block": position,
                "is_catch": is_catch.astype(int),
                "segment_idx": segment,
                "condition": np.array(abx_conditions)[condition],
                "correct": abx_correct.astype(int),
                "confidence": rng.integers(1, 6, abx_person.size),
            }
        )
    )

    # Emotion ratings.
    rate_person = np.repeat(np.arange(participants), rating_trials)
    r_position = np.tile(np.arange(rating_trials), participants)
    r_cells = [(s, c) for s in range(len(segment_ids)) for c in range(len(rating_conditions))]
    r_cell = (r_position + rate_person * 5) % len(r_cells)
    r_segment = np.array([r_cells[i][0] for i in r_cell], dtype=int)
    r_condition = np.array([rating_conditions[r_cells[i][1]] for i in r_cell], dtype=object).astype(
        str
    )
    r_source = segment_source[r_segment]
    # Each clip carries one emotion: the reference's (reference and keeps_emotion clips), that
    # of another source (mismatched), or one of its own unrelated to the video (loses_emotion).
    # Fixed per clip, as a generated clip is one fixed piece of audio.
    segment_emotion = rng.uniform(2.5, 7.5, size=(len(segment_ids), 2))
    segment_words = np.array([rng.choice(len(GEMS_WORDS), 2, replace=False) for _ in segment_ids])
    keeps = np.isin(r_condition, ["reference", *truth.keeps_emotion])
    mismatched = r_condition == "mismatched"
    carried = np.where(keeps, r_source, np.where(mismatched, (r_source + 1) % sources, -1))
    own = carried < 0
    target = np.where(own[:, None], segment_emotion[r_segment], source_emotion[carried])
    words = np.where(own[:, None], segment_words[r_segment], source_words[carried])
    emotion = target + bias[rate_person]
    emotion = emotion + rng.normal(0, truth.rating_noise_sd, emotion.shape)
    emotion = np.where(careless[rate_person, None], rng.uniform(1, 9, emotion.shape), emotion)
    emotion = np.clip(np.rint(emotion), 1, 9).astype(int)
    picks = rng.random((rate_person.size, len(GEMS_WORDS))) < 0.05
    true_word = np.zeros_like(picks)
    true_word[np.arange(rate_person.size)[:, None], words] = True
    picks |= true_word & (rng.random(picks.shape) < 0.75)
    gems = [";".join(w for w, on in zip(GEMS_WORDS, row, strict=True) if on) for row in picks]
    fits = np.where(keeps, 5.5, 3.0) + rng.normal(0, 1, rate_person.size)
    frames.append(
        pd.DataFrame(
            {
                "participant_idx": rate_person,
                "block": "emotion",
                "block_index": 3,
                "trial_type": "emotion_rating",
                "trial_in_block": r_position,
                "is_catch": 0,
                "segment_idx": r_segment,
                "condition": r_condition,
                "valence": emotion[:, 0],
                "arousal": emotion[:, 1],
                "gems": gems,
                "fit": np.clip(np.rint(fits), 1, 7).astype(int),
                "video_shown": 1,
                "tempo": rng.integers(1, 8, rate_person.size),
                "plays": 1,
            }
        )
    )

    new_columns: list[str] = []
    acr_failed = np.zeros(participants, dtype=bool)
    if fit_preference_trials or acr_trials:
        extra = np.random.default_rng([seed, 808])
        new_columns = NEW_TYPE_COLUMNS
        if fit_preference_trials:
            frames.append(
                _fit_preference_frame(
                    extra, truth, participants, fit_preference_trials, len(segment_ids), careless
                )
            )
        if acr_trials:
            acr_careless = careless | (extra.random(participants) < acr_careless_share)
            fails_trap = acr_careless & ~failed_screening
            acr_frame, acr_failed = _acr_frames(
                extra, truth, participants, acr_trials, len(segment_ids), acr_careless, fails_trap
            )
            frames.append(acr_frame)
            frames.append(_qualification_frame(extra, participants, failed_screening))

    rows = pd.concat(frames, ignore_index=True)
    rows = rows.sort_values(["participant_idx", "block_index", "trial_in_block"], kind="stable")
    rows = rows.reset_index(drop=True)
    person = rows["participant_idx"].to_numpy()
    rows["trial_index"] = rows.groupby("participant_idx").cumcount()
    rows["participant"] = [f"P{i + 1}" for i in person]
    has_segment = rows["segment_idx"].notna()
    seg = rows["segment_idx"].fillna(0).astype(int).to_numpy()
    rows["segment"] = np.where(has_segment, np.array(segment_ids)[seg], "")
    rows["source"] = np.where(has_segment, np.array(source_ids)[segment_source[seg]], "")
    rows["clip_duration"] = np.where(has_segment, 8.0, 1.0)
    clips_heard = np.select(
        [rows["trial_type"] == "abx", rows["trial_type"] == "fit_preference"], [3, 2], 1
    )
    heard_ms = clips_heard * rows["clip_duration"] * 1000
    too_fast = rng.random(len(rows)) < too_fast_share
    rows["rt_ms"] = np.where(too_fast, heard_ms * 0.5, heard_ms + rng.gamma(2, 1500, len(rows)))
    rows["rt_ms"] = rows["rt_ms"].astype(int)
    rows["flag_failed_screening"] = failed_screening[person].astype(int)
    rows["flag_failed_catch"] = (failed_catch | acr_failed)[person].astype(int)
    rows["flag_too_fast"] = too_fast.astype(int)
    rows["excluded"] = (
        rows[["flag_failed_screening", "flag_failed_catch", "flag_too_fast"]]
        .any(axis=1)
        .astype(int)
    )
    _fill_abx_slots(rows, rng)
    _fill_new_types(rows)
    _write_responses(rows, participants, out / "responses.csv", new_columns)
    blocks = []
    if acr_trials:
        blocks.append({"id": "qualification", "type": "p808_qualification", "tone_trials": 2})
    if fit_preference_trials:
        blocks.append(
            {
                "id": "preference",
                "type": "fit_preference",
                "conditions": list(truth.fit_worth),
                "trials_per_participant": fit_preference_trials,
            }
        )
    if acr_trials:
        blocks.append(
            {
                "id": "quality",
                "type": "acr",
                "conditions": list(truth.acr_quality),
                "trials_per_participant": acr_trials,
                "gold_questions": 2,
                "trapping_questions": 1,
            }
        )
    study = _study_json(
        source_ids,
        segment_ids,
        segment_source,
        abx_conditions,
        rating_conditions,
        abx_trials,
        rating_trials,
        source_emotion,
        extra_blocks=blocks,
        participants=participants,
    )
    (out / "study.json").write_text(json.dumps(study, indent=2), encoding="utf-8")
    return out / "responses.csv", out / "study.json"


# Columns of the later trial types written by the simulation (appended after ``excluded``),
# in export_contract's order.
NEW_TYPE_COLUMNS = [
    name
    for name in export_contract.names()
    if export_contract.BY_NAME[name].optional
    and set(export_contract.BY_NAME[name].trial_types or ())
    & {"fit_preference", "acr", "p808_qualification"}
]
# Core columns that _fill_abx_slots rewrites for every row; the new trial types carry their
# values in "new_<column>" until _fill_new_types puts them back.
_CARRIED = (
    "conditions",
    "clip",
    "clip_a",
    "clip_b",
    "correct_answer",
    "answer",
    "plays_a",
    "plays_b",
)
P808_GOLD_HIGH, P808_GOLD_LOW, P808_TRAP = "p808_gold_high", "p808_gold_low", "p808_trap"


def _fit_preference_frame(
    rng: np.random.Generator,
    truth: Truth,
    participants: int,
    trials: int,
    segments: int,
    careless: np.ndarray,
) -> pd.DataFrame:
    """2AFC fit trials: cells (segment, pair) rotate per participant; A/B order at random."""
    names = list(truth.fit_worth)
    worth = np.array([truth.fit_worth[n] for n in names])
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    cells = [(s, k) for s in range(segments) for k in range(len(pairs))]
    person = np.repeat(np.arange(participants), trials)
    position = np.tile(np.arange(trials), participants)
    cell = (position + person * 7) % len(cells)
    segment = np.array([cells[c][0] for c in cell], dtype=int)
    pair = np.array([pairs[cells[c][1]] for c in cell]).reshape(-1, 2)
    swap = rng.random(person.size) < 0.5
    a = np.where(swap, pair[:, 1], pair[:, 0])
    b = np.where(swap, pair[:, 0], pair[:, 1])
    p_a = 1.0 / (1.0 + np.exp(-(worth[a] - worth[b])))
    p_a = np.where(careless[person], 0.5, p_a)
    chose_a = rng.random(person.size) < p_a
    chosen = np.where(chose_a, a, b)
    other = np.where(chose_a, b, a)
    # Strength: stronger when the chosen condition really fits better, by more.
    lead = 1.0 / (1.0 + np.exp(-(worth[chosen] - worth[other])))
    strength = 1 + rng.binomial(2, np.clip(2 * lead - 1, 0.1, 0.9))
    strength = np.where(careless[person], rng.integers(1, 4, person.size), strength)
    label = np.array(names)
    return pd.DataFrame(
        {
            "participant_idx": person,
            "block": "preference",
            "block_index": 5,
            "trial_type": "fit_preference",
            "trial_in_block": position,
            "is_catch": 0,
            "segment_idx": segment,
            "condition_a": label[a],
            "condition_b": label[b],
            "preferred_condition": label[chosen],
            "preference_strength": strength,
            "video_shown": 1,
            "new_conditions": np.char.add(np.char.add(label[a], "|"), label[b]),
            "new_answer": np.where(chose_a, "A", "B"),
            "new_plays_a": 1,
            "new_plays_b": 1,
            "_clip_a_condition": label[a],
            "_clip_b_condition": label[b],
        }
    )


def _acr_frames(
    rng: np.random.Generator,
    truth: Truth,
    participants: int,
    trials: int,
    segments: int,
    careless: np.ndarray,
    fails_trap: np.ndarray,
) -> tuple[pd.DataFrame, np.ndarray]:
    """P.808 ACR block: ``trials`` rated clips, two gold items and one trap per participant, in
    a random order. Returns the rows and who failed a gold or trap item (the app's rule)."""
    names = list(truth.acr_quality)
    quality = np.array([truth.acr_quality[n] for n in names])
    cells = [(s, c) for s in range(segments) for c in range(len(names))]
    clip_effect = rng.normal(0, 0.2, len(cells))
    listener = rng.normal(0, truth.acr_listener_sd, participants)
    per = trials + 3
    person = np.repeat(np.arange(participants), per)
    slot = np.tile(np.arange(per), participants)
    rated = slot < trials
    cell = (slot + person * 5) % len(cells)
    segment = np.array([cells[c][0] for c in cell], dtype=int)
    condition = np.array([cells[c][1] for c in cell], dtype=int)
    value = quality[condition] + clip_effect[cell] + listener[person]
    value = value + rng.normal(0, truth.acr_noise_sd, person.size)
    rating = np.clip(np.rint(value), 1, 5).astype(int)
    kind = np.where(rated, "rating", np.where(slot == trials + 2, "trap", "gold"))
    label = np.where(
        rated,
        np.array(names)[condition],
        np.where(slot == trials, P808_GOLD_HIGH, np.where(slot == trials + 1, P808_GOLD_LOW, "")),
    )
    label = np.where(kind == "trap", P808_TRAP, label)
    expected = np.select(
        [label == P808_GOLD_HIGH, label == P808_GOLD_LOW, kind == "trap"],
        [5, 1, rng.integers(1, 6, person.size)],
        0,
    )
    # Attentive listeners: gold within one category of the answer, trap exactly as told.
    near = rng.random(person.size) < 0.3
    rating = np.where(label == P808_GOLD_HIGH, np.where(near, 4, 5), rating)
    rating = np.where(label == P808_GOLD_LOW, np.where(near, 2, 1), rating)
    rating = np.where(kind == "trap", expected, rating)
    rating = np.where(careless[person], rng.integers(1, 6, person.size), rating)
    off_by = rng.integers(1, 5, person.size)  # a wrong trap answer: any other category
    wrong_trap = (expected - 1 + off_by) % 5 + 1
    rating = np.where((kind == "trap") & fails_trap[person], wrong_trap, rating)
    correct = np.where(
        kind == "gold",
        np.abs(rating - expected) <= 1,
        np.where(kind == "trap", rating == expected, False),
    )
    is_catch = kind != "rating"
    failed = np.zeros(participants, dtype=bool)
    np.logical_or.at(failed, person, is_catch & ~correct)
    order = np.argsort(person * per + rng.random(person.size), kind="stable")
    position = np.empty_like(slot)
    position[order] = np.tile(np.arange(per), participants)
    frame = pd.DataFrame(
        {
            "participant_idx": person,
            "block": "quality",
            "block_index": 6,
            "trial_type": "acr",
            "trial_in_block": position,
            "is_catch": is_catch.astype(int),
            "segment_idx": segment,
            "condition": label,
            "acr_item": kind,
            "acr_rating": rating,
            "correct": np.where(is_catch, correct.astype(float), np.nan),
            "video_shown": 0,
            "plays": 1,
            "new_conditions": label,
            "new_answer": rating.astype(str),
            "new_correct_answer": np.where(is_catch, expected.astype(str), ""),
            "_clip_condition": label,
        }
    )
    return frame, failed


def _qualification_frame(
    rng: np.random.Generator, participants: int, failed_screening: np.ndarray
) -> pd.DataFrame:
    """One P.808 qualification row per participant; those who fail screening fail it."""
    errors = np.where(failed_screening, rng.integers(2, 5, participants), 0)
    return pd.DataFrame(
        {
            "participant_idx": np.arange(participants),
            "block": "qualification",
            "block_index": 4,
            "trial_type": "p808_qualification",
            "trial_in_block": 0,
            "is_catch": 0,
            "qualification_passed": (~failed_screening).astype(int),
            "hearing_reported_normal": np.where(
                failed_screening, rng.random(participants) < 0.5, True
            ).astype(int),
            "listening_device": rng.choice(["headphones", "earbuds"], participants),
            "tone_count_errors": errors,
        }
    )


def _fill_new_types(rows: pd.DataFrame) -> None:
    """Put back the core columns of the later trial types that _fill_abx_slots rewrote."""
    for column in _CARRIED:
        carried = f"new_{column}"
        if carried in rows:
            has = rows[carried].notna()
            rows[column] = rows[column].astype(object)
            rows.loc[has, column] = rows.loc[has, carried]
    segment = rows["segment"].astype(str)
    for column, source in (
        ("clip_a", "_clip_a_condition"),
        ("clip_b", "_clip_b_condition"),
        ("clip", "_clip_condition"),
    ):
        if source in rows:
            has = rows[source].notna()
            rows.loc[has, column] = segment[has] + "_" + rows.loc[has, source].astype(str)


def _fill_abx_slots(rows: pd.DataFrame, rng: np.random.Generator) -> None:
    abx = rows["trial_type"] == "abx"
    reference_in_a = rng.random(len(rows)) < 0.5
    x_is_a = rng.random(len(rows)) < 0.5
    ref_clip = rows["segment"] + "_reference"
    gen_clip = rows["segment"] + "_" + rows["condition"].fillna("")
    rows["clip_a"] = np.where(abx, np.where(reference_in_a, ref_clip, gen_clip), "")
    rows["clip_b"] = np.where(abx, np.where(reference_in_a, gen_clip, ref_clip), "")
    rows["clip_x"] = np.where(abx, np.where(x_is_a, rows["clip_a"], rows["clip_b"]), "")
    rows["reference_slot"] = np.where(abx, np.where(reference_in_a, "A", "B"), "")
    truth = np.where(x_is_a, "A", "B")
    wrong = np.where(x_is_a, "B", "A")
    hp_truth = rng.integers(1, 4, len(rows)).astype(str)
    hp_wrong = ((hp_truth.astype(int) % 3) + 1).astype(str)
    correct = rows["correct"].fillna(0).astype(bool).to_numpy()
    headphone = rows["trial_type"] == "headphone_check"
    rows["correct_answer"] = np.where(abx, truth, np.where(headphone, hp_truth, ""))
    rows["answer"] = np.where(
        abx,
        np.where(correct, truth, wrong),
        np.where(headphone, np.where(correct, hp_truth, hp_wrong), ""),
    )
    rows["conditions"] = np.where(
        abx, "reference|" + rows["condition"].fillna(""), rows["condition"].fillna("")
    )
    rating = rows["trial_type"] == "emotion_rating"
    rows["clip"] = np.where(rating, rows["segment"] + "_" + rows["condition"].fillna(""), "")
    for slot in ("plays_a", "plays_b", "plays_x"):
        rows[slot] = np.where(abx, 1, np.nan)


# Every export has these (export_contract's non-optional columns, up to ``excluded``).
COLUMN_ORDER = [column.name for column in export_contract.COLUMNS if not column.optional]


def _write_responses(
    rows: pd.DataFrame, participants: int, path: Path, new_columns: list[str] | None = None
) -> None:
    index = rows["participant_idx"].astype(int)
    rows["study"] = "simulated"
    rows["assignment_index"] = index
    rows["list_index"] = index % 4
    rows["external_id"] = ""
    start = pd.Timestamp("2026-11-25T10:00:00Z") + pd.to_timedelta(index * 3600, unit="s")
    presented = start + pd.to_timedelta(rows["trial_index"] * 60, unit="s")
    answered = presented + pd.to_timedelta(rows["rt_ms"], unit="ms")
    rows["presented_at"] = presented.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    rows["answered_at"] = answered.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    new_columns = list(new_columns or [])
    out = rows.reindex(columns=COLUMN_ORDER + new_columns)
    for column in out.columns:
        # whole numbers with empty cells would be written as floats ("3.0"): nullable Int64
        if export_contract.BY_NAME[column].kind in ("int", "bool") and out[column].isna().any():
            out[column] = out[column].astype("Int64")
    out["condition"] = out["condition"].where(out["trial_type"] != "headphone_check", "")
    out.to_csv(path, index=False)


def _study_json(
    source_ids,
    segment_ids,
    segment_source,
    abx_conditions,
    rating_conditions,
    abx_trials,
    rating_trials,
    source_emotion,
    extra_blocks: list[dict] | None = None,
    participants: int = 0,
) -> dict:
    clips = []
    extra_blocks = extra_blocks or []
    later = {c for block in extra_blocks for c in block.get("conditions", [])}
    conditions = sorted({"reference", *abx_conditions, *rating_conditions, *later})
    for index, segment in enumerate(segment_ids):
        for condition in conditions:
            clip = {
                "id": f"{segment}_{condition}",
                "segment": segment,
                "condition": condition,
                "path": f"audio/{segment}_{condition}.wav",
                "sha256": "0" * 64,
                "sample_rate": 48000,
                "channels": 1,
                "duration": 8.0,
                "loudness_lufs": -23.0,
            }
            if condition != "reference":
                clip["provenance"] = {"model": f"simulated-{condition}", "code_version": "sim"}
            clips.append(clip)
        del index
    manifest = {
        "schema_version": "1.0",
        "name": "simulated",
        "fit_for_studies": False,
        "sources": [
            {
                "id": s,
                "video": f"video/{s}.mp4",
                "metadata": {"emotion": {"valence": float(v), "arousal": float(a)}},
            }
            for s, (v, a) in zip(source_ids, source_emotion, strict=True)
        ],
        "segments": [
            {"id": seg, "source": source_ids[segment_source[i]], "start": 0.0, "duration": 8.0}
            for i, seg in enumerate(segment_ids)
        ],
        "clips": clips,
    }
    design = {
        "format": "sightsound-design/1",
        "slug": "simulated",
        "title": "Simulated study",
        "stimulus_set": "simulated",
        "blocks": [
            {"id": "consent", "type": "consent", "text": "Simulated."},
            {"id": "screening", "type": "headphone_check", "trials": 6, "pass_threshold": 5},
            {
                "id": "realism",
                "type": "abx",
                "conditions": abx_conditions,
                "trials_per_participant": abx_trials,
            },
            {
                "id": "emotion",
                "type": "emotion_rating",
                "conditions": rating_conditions,
                "trials_per_participant": rating_trials,
                "scales": ["valence", "arousal", "gems", "fit", "tempo"],
                "show_video": True,
            },
            *extra_blocks,
            {"id": "debrief", "type": "debrief", "text": "Thanks."},
        ],
    }
    return {
        "format": "sightsound-export/1",
        "study": {
            "slug": "simulated",
            "title": "Simulated study",
            "status": "closed",
            "created_at": "2026-11-25T09:00:00Z",
            "exported_at": "2026-11-26T09:00:00Z",
            "app_version": "0.1.0",
            # Every simulated participant starts and finishes (the careless ones included).
            "participants_started": participants,
            "participants_completed": participants,
        },
        "design": design,
        "manifest": manifest,
    }
