"""The scheduler is a pure function: balance across participants, reproducibility, order."""

from __future__ import annotations

from collections import Counter

import pytest

from study_app.catalog import Catalog
from study_app.design import DesignError, validated_design
from study_app.scheduling import Assignment, build_schedule

CONDITIONS = ["reference", "vit_adapter", "text_bridge", "mismatched"]


def make_catalog(n_segments: int = 6) -> Catalog:
    rows = [
        (f"seg{i:02d}", f"src{i:02d}", condition, f"clip-{i}-{condition}", 4.0)
        for i in range(n_segments)
        for condition in CONDITIONS
    ]
    return Catalog.from_clips(rows)


def make_design(abx_trials=None, emotion_trials=None, abx_conditions=None) -> dict:
    return {
        "slug": "balance",
        "title": "Balance",
        "stimulus_set": "synthetic",
        "blocks": [
            {"id": "consent", "type": "consent", "text": "ok"},
            {"id": "screen", "type": "headphone_check"},
            {
                "id": "abx",
                "type": "abx",
                "conditions": abx_conditions or ["vit_adapter", "text_bridge"],
                "trials_per_participant": abx_trials,
            },
            {
                "id": "emo",
                "type": "emotion_rating",
                "conditions": CONDITIONS,
                "trials_per_participant": emotion_trials,
                "show_video": True,
                "scales": ["valence", "arousal", "fit"],
            },
            {"id": "debrief", "type": "debrief"},
        ],
    }


def schedules(design: dict, catalog: Catalog, n: int = 48):
    design = validated_design(design, catalog)
    return [build_schedule(design, catalog, Assignment(seed=1000 + i, index=i)) for i in range(n)]


def within_one(counter: Counter, keys) -> bool:
    values = [counter[k] for k in keys]
    return max(values) - min(values) <= 1


@pytest.mark.parametrize(
    ("n_segments", "abx_trials", "abx_conditions"),
    [
        (6, None, None),
        (6, 4, None),  # fewer trials than segments
        (4, 8, None),  # repetitions: every segment with both conditions
        (5, None, ["vit_adapter", "text_bridge", "mismatched"]),  # k does not divide segments
    ],
)
def test_abx_cells_balanced_over_48_participants(n_segments, abx_trials, abx_conditions):
    catalog = make_catalog(n_segments)
    all_schedules = schedules(make_design(abx_trials, abx_conditions=abx_conditions), catalog)
    cells, reference_slot, x_slot = Counter(), Counter(), Counter()
    for schedule in all_schedules:
        for trial in (t for t in schedule if t.trial_type == "abx"):
            spec = trial.spec
            cell = (spec["segment"], spec["condition"])
            cells[cell] += 1
            reference_slot[(*cell, spec["reference_slot"])] += 1
            x_slot[(*cell, spec["correct_answer"])] += 1
            # X really is a copy of the slot the answer key names
            assert spec["clip_x"] == spec["clip_" + spec["correct_answer"].lower()]
            reference = spec["clip_" + spec["reference_slot"].lower()]
            assert reference.endswith("-reference")
            generated = f"clip-{int(spec['segment'][3:])}-{spec['condition']}"
            assert {spec["clip_a"], spec["clip_b"]} == {reference, generated}
    conditions = abx_conditions or ["vit_adapter", "text_bridge"]
    all_cells = [(f"seg{i:02d}", c) for i in range(n_segments) for c in conditions]
    assert set(cells) == set(all_cells)
    assert within_one(cells, all_cells)
    for cell in all_cells:
        assert within_one(reference_slot, [(*cell, "A"), (*cell, "B")]), cell
        assert within_one(x_slot, [(*cell, "A"), (*cell, "B")]), cell


def test_each_participant_hears_each_segment_once_per_round():
    catalog = make_catalog(6)
    for schedule in schedules(make_design(), catalog):
        abx = [t.spec for t in schedule if t.trial_type == "abx"]
        assert sorted(s["segment"] for s in abx) == [f"seg{i:02d}" for i in range(6)]
        # within one participant the four arrangements cycle, so A and B stay close too
        for key in ("correct_answer", "reference_slot"):
            counts = Counter(s[key] for s in abx)
            assert abs(counts["A"] - counts["B"]) <= 2
        assert Counter(s["condition"] for s in abx) == {"vit_adapter": 3, "text_bridge": 3}


def test_emotion_conditions_balanced_by_latin_square():
    catalog = make_catalog(8)
    cells = Counter()
    for schedule in schedules(make_design(), catalog):
        emotion = [t.spec for t in schedule if t.trial_type == "emotion_rating"]
        assert len(emotion) == 8
        assert Counter(s["condition"] for s in emotion) == {c: 2 for c in CONDITIONS}
        for spec in emotion:
            cells[(spec["segment"], spec["condition"])] += 1
    keys = [(f"seg{i:02d}", c) for i in range(8) for c in CONDITIONS]
    assert within_one(cells, keys)
    assert min(cells.values()) == 12  # 48 participants / 4 lists


def test_schedule_is_reproducible_from_seed_and_index():
    catalog = make_catalog()
    design = validated_design(make_design(), catalog)
    first = build_schedule(design, catalog, Assignment(seed=42, index=7))
    again = build_schedule(design, catalog, Assignment(seed=42, index=7))
    assert first == again


def test_trial_order_is_randomized_per_participant():
    catalog = make_catalog()
    design = validated_design(make_design(), catalog)
    orders = {
        tuple(
            t.spec["segment"]
            for t in build_schedule(design, catalog, Assignment(seed, 0))
            if t.trial_type == "abx"
        )
        for seed in range(20)
    }
    assert len(orders) > 10


def test_blocks_keep_design_order():
    catalog = make_catalog()
    schedule = schedules(make_design(), catalog, n=1)[0]
    types = [t.trial_type for t in schedule]
    assert types == (
        ["consent"] + ["headphone_check"] * 6 + ["abx"] * 6 + ["emotion_rating"] * 6 + ["debrief"]
    )
    headphone = [t.spec for t in schedule if t.trial_type == "headphone_check"]
    assert all(s["quiet_position"] != s["antiphase_position"] for s in headphone)


def test_design_errors_are_all_listed():
    catalog = make_catalog(4)
    design = make_design(abx_trials=99, abx_conditions=["vit_adapter", "no_such_system"])
    design["blocks"].append({"id": "abx", "type": "mystery"})
    design["blocks"][1]["trails"] = 6
    with pytest.raises(DesignError) as error:
        validated_design(design, catalog)
    text = str(error.value)
    assert "mystery" in text and "trails" in text
    design = make_design(abx_trials=99, abx_conditions=["vit_adapter", "no_such_system"])
    with pytest.raises(DesignError) as error:
        validated_design(design, catalog)
    assert "no_such_system" in str(error.value)
    design = make_design(abx_trials=99)
    with pytest.raises(DesignError) as error:
        validated_design(design, catalog)
    assert "99 trials asked" in str(error.value)


def test_catch_trials_repetitions_and_attention_checks():
    catalog = make_catalog(4)
    design = make_design()
    design["blocks"][2] |= {"repetitions": 2, "catch_trials": 2}
    design["blocks"][3] |= {"attention_checks": 1}
    for schedule in schedules(design, catalog, n=8):
        abx = [t.spec for t in schedule if t.trial_type == "abx"]
        regular = [s for s in abx if not s["is_catch"]]
        catch = [s for s in abx if s["is_catch"]]
        assert len(regular) == 8 and len(catch) == 2
        # each pair comes twice, X copying the other slot the second time
        pairs = Counter((s["clip_a"], s["clip_b"]) for s in regular)
        assert set(pairs.values()) == {2}
        for pair in pairs:
            answers = {s["correct_answer"] for s in regular if (s["clip_a"], s["clip_b"]) == pair}
            assert answers == {"A", "B"}
        for spec in catch:
            assert spec["clip_a"] != spec["clip_b"]
            assert spec["clip_a"].endswith("-reference") and spec["clip_b"].endswith("-reference")
            assert spec["clip_x"] == spec["clip_" + spec["correct_answer"].lower()]
        checks = [
            t.spec for t in schedule if t.trial_type == "emotion_rating" and t.spec["is_catch"]
        ]
        assert len(checks) == 1
        assert checks[0]["instruction"]["scale"] in ("valence", "arousal")


def test_catch_failures_are_detected_per_type():
    from study_app.trial_types import get_trial_type

    abx, emotion = get_trial_type("abx"), get_trial_type("emotion_rating")
    catch = {"is_catch": True, "correct_answer": "B"}
    assert abx.catch_failed(catch, {"answer": "A"})
    assert not abx.catch_failed(catch, {"answer": "B"})
    assert not abx.catch_failed({"is_catch": False, "correct_answer": "B"}, {"answer": "A"})
    check = {"is_catch": True, "instruction": {"scale": "arousal", "value": 7}}
    assert emotion.catch_failed(check, {"arousal": 3, "valence": 7})
    assert not emotion.catch_failed(check, {"arousal": 7})

