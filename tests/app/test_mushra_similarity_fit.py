"""Issue 7 trial types: MUSHRA (BS.1534-3), similarity to the reference, audio-video fit rating.

Pure rules (post-screening, anchors, scheduling) are tested directly; the whole flow (pages,
blind media, answers, export rows) through Flask's test client on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import random
import re
from pathlib import Path

import numpy as np
import pytest
from flow import read_page, start
from sqlalchemy import select

from study_app.audio import read_wav_samples
from study_app.catalog import Catalog
from study_app.export import export_columns, responses_csv
from study_app.extensions import db
from study_app.models import Study
from study_app.stimulus_set import load_stimulus_set
from study_app.trial_types import AnswerError, get_trial_type
from study_app.trial_types.mushra import ANCHOR_CUTOFFS, anchor_wav_bytes, post_screening_flag

DESIGN = Path(__file__).parents[1] / "data" / "mushra_similarity_fit_study.yaml"


# BS.1534-3 post-screening ----------------------------------------------------------------------


def test_post_screening_flags_more_than_15_percent_below_90():
    assert not post_screening_flag([])
    assert not post_screening_flag([100] * 10)
    assert not post_screening_flag([90] * 10)  # 90 itself is not below 90
    # 1 of 7 screens = 14.3 %: kept; 2 of 7 = 28.6 %: flagged
    assert not post_screening_flag([89] + [100] * 6)
    assert post_screening_flag([89, 50] + [100] * 5)
    # exactly 15 % is not "more than 15 %"
    assert not post_screening_flag([80] * 3 + [95] * 17)
    assert post_screening_flag([80] * 4 + [95] * 16)
    assert post_screening_flag([0])
    assert not post_screening_flag([89.9, 95], max_fraction=0.5)


# Anchors -----------------------------------------------------------------------------------------


def _energy_above(samples: np.ndarray, rate: int, cutoff: float) -> tuple[float, float]:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64), axis=0)) ** 2
    freqs = np.fft.rfftfreq(samples.shape[0], 1.0 / rate)
    return float(spectrum[freqs >= cutoff].sum()), float(spectrum.sum())


@pytest.mark.parametrize("anchor", sorted(ANCHOR_CUTOFFS))
def test_anchors_are_low_passed(demo_set_dir, anchor):
    """Energy above the cut-off is at least 40 dB below (a) the reference's own energy above the
    cut-off and (b) the reference's total energy; below the cut-off the anchor is unchanged."""
    stimuli = load_stimulus_set(demo_set_dir)
    cutoff = ANCHOR_CUTOFFS[anchor]
    checked_relative = []
    for clip in [c for c in stimuli.clips if c.condition == "reference"][:3]:
        path = demo_set_dir / clip.path if not clip.path.is_absolute() else clip.path
        reference, rate = read_wav_samples(path)
        low_passed, anchor_rate = read_wav_samples(io.BytesIO(anchor_wav_bytes(path, cutoff)))
        assert anchor_rate == rate and low_passed.shape == reference.shape
        anchor_high, _ = _energy_above(low_passed, rate, cutoff)
        ref_high, ref_total = _energy_above(reference, rate, cutoff)
        assert 10 * np.log10(anchor_high / ref_total) < -40
        if 10 * np.log10(ref_high / ref_total) > -30:
            # where the reference has real content above the cut-off, that content is removed;
            # (a demo clip with almost nothing above 7 kHz has only 16-bit rounding noise there,
            # which the anchor's own rounding reproduces)
            assert 10 * np.log10(anchor_high / ref_high) < -40
            checked_relative.append(clip.id)
        # the pass band is kept: below 0.9 * cut-off the spectra agree closely
        spec_a = np.fft.rfft(low_passed[:, 0].astype(np.float64))
        spec_r = np.fft.rfft(reference[:, 0].astype(np.float64))
        band = np.fft.rfftfreq(reference.shape[0], 1.0 / rate) < 0.9 * cutoff
        error = np.sum(np.abs(spec_a[band] - spec_r[band]) ** 2) / np.sum(np.abs(spec_r[band]) ** 2)
        assert error < 1e-3
    assert checked_relative  # at least one clip had content above the cut-off to remove


# Scheduling ------------------------------------------------------------------------------------


def _catalog() -> Catalog:
    rows = [
        (f"seg{i}", f"src{i}", cond, f"seg{i}_{cond}", 3.0)
        for i in range(4)
        for cond in ("reference", "sys_a", "sys_b", "mismatched")
    ]
    return Catalog.from_clips(rows)


def _block(kind: str, **options):
    from study_app.design import with_defaults

    return with_defaults({"id": kind, "type": kind, **options})


def test_mushra_screen_has_every_stimulus_in_shuffled_opaque_slots():
    mushra = get_trial_type("mushra")
    block = _block("mushra", conditions=["sys_a", "sys_b"], anchors=["lp35", "lp70"])
    assert mushra.validate_block(block, _catalog()) == []
    orders = set()
    for seed in range(20):
        specs = mushra.schedule(block, _catalog(), seed, random.Random(seed))
        assert len(specs) == 4
        for spec in specs:
            roles = sorted(s["role"] for s in spec["stimuli"])
            assert roles == ["anchor", "anchor", "condition", "condition", "hidden_reference"]
            assert [s["slot"] for s in spec["stimuli"]] == ["s1", "s2", "s3", "s4", "s5"]
            media = mushra.media(spec)
            assert set(media) == {"ref", "s1", "s2", "s3", "s4", "s5"}
            assert media["ref"].kind == "clip" and media["ref"].key == spec["reference_clip"]
            orders.add(tuple(s["condition"] for s in spec["stimuli"]))
    assert len(orders) > 10  # shuffled per screen


def test_mushra_validation():
    mushra = get_trial_type("mushra")
    catalog = _catalog()
    assert mushra.validate_block(_block("mushra", conditions=["nope"]), catalog)
    assert mushra.validate_block(_block("mushra", conditions=["reference"]), catalog)
    assert mushra.validate_block(_block("mushra", conditions=["sys_a"], anchors=["lp99"]), catalog)
    assert mushra.validate_block(
        _block("mushra", conditions=["sys_a"], trials_per_participant=5), catalog
    )


def test_mushra_answers_are_checked():
    mushra = get_trial_type("mushra")
    block = _block("mushra", conditions=["sys_a"], anchors=["lp35"])
    spec = mushra.schedule(block, _catalog(), 0, random.Random(1))[0]
    good = {"score_s1": "100", "score_s2": "20", "score_s3": "55", "moved": "all"}
    assert mushra.parse_answer(spec, block, good)["scores"] == {"s1": 100, "s2": 20, "s3": 55}
    for bad in (
        {"score_s1": "100", "score_s2": "20", "moved": "all"},
        {k: v for k, v in good.items() if k != "moved"},  # no "every slider moved": refused
        good | {"score_s3": "101"},
        good | {"score_s3": "-1"},
        good | {"score_s3": "x"},
        good | {"moved": "some"},
    ):
        with pytest.raises(AnswerError):
            mushra.parse_answer(spec, block, bad)
    assert mushra.parse_answer(spec, block, good | {"moved": "all"})


def test_similarity_and_fit_are_latin_squares():
    for kind, conditions in (
        ("similarity", ["sys_a", "sys_b"]),
        ("fit_rating", ["reference", "mismatched"]),
    ):
        trial_type = get_trial_type(kind)
        block = _block(kind, conditions=conditions)
        assert trial_type.validate_block(block, _catalog()) == []
        cells = {}
        for n in range(4):
            for spec in trial_type.schedule(block, _catalog(), n, random.Random(n)):
                cells[(spec["segment"], spec["condition"])] = (
                    cells.get((spec["segment"], spec["condition"]), 0) + 1
                )
        assert len(cells) == 8 and set(cells.values()) == {2}


# The whole flow ----------------------------------------------------------------------------------


@pytest.fixture
def mushra_similarity_fit_study(make_study):
    return make_study(DESIGN)


def _answers(page, clicked: list):
    if page.trial_type == "consent":
        return {"consent": "yes"}
    if page.trial_type == "mushra":
        slots = re.findall(r'name="score_(s\d+)"', page.html)
        # the listener gives 95 to every sample on the first screen and 60 on the second
        score = 95 if not any(c[0] == "mushra" for c in clicked) else 60
        data = {f"score_{s}": str(score - i) for i, s in enumerate(slots)}
        data |= {"moved": "all", "plays_ref": "2"} | {f"plays_{s}": "1" for s in slots}
        clicked.append(("mushra", data))
        return data
    if page.trial_type == "similarity":
        data = {"similarity": str(len(clicked) % 7 + 1), "plays_ref": "1", "plays_clip": "2"}
    elif page.trial_type == "fit_rating":
        data = {"fit": str(len(clicked) % 7 + 1), "plays_clip": "1"}
    else:
        raise AssertionError(page.trial_type)
    clicked.append((page.trial_type, data))
    return data


def test_mushra_similarity_fit_flow_and_export(app, client, mushra_similarity_fit_study):
    slug, token = mushra_similarity_fit_study
    step = start(client, token)
    clicked: list = []
    media_by_type: dict[str, list[str]] = {}
    for _ in range(50):
        page = read_page(client.get(step))
        if page.trial_type is None:
            break
        media_by_type.setdefault(page.trial_type, []).extend(page.media)
        for url in page.media:
            response = client.get(url)
            assert response.status_code == 200, url
        response = client.post(page.action, data=_answers(page, clicked))
        assert response.status_code == 303
    else:
        raise AssertionError("study did not end")
    assert "NEW-TYPES" in page.html
    assert [c[0] for c in clicked] == ["mushra"] * 2 + ["similarity"] * 2 + ["fit_rating"] * 2
    # MUSHRA pages: open reference plus 5 opaque slots (hidden ref, 2 anchors, 2 conditions)
    assert {u.rsplit("/", 1)[1] for u in media_by_type["mushra"]} == {
        "ref",
        "s1",
        "s2",
        "s3",
        "s4",
        "s5",
    }
    with app.app_context():
        study = db.session.scalar(select(Study).where(Study.slug == slug))
        text = responses_csv(study)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == export_columns()
    mushra = [r for r in rows if r["trial_type"] == "mushra"]
    assert len(mushra) == 2 * 5
    for screen, (_, data) in enumerate(c for c in clicked if c[0] == "mushra"):
        screen_rows = [r for r in mushra if r["trial_in_block"] == str(screen)]
        assert {r["stimulus_slot"]: r["mushra_score"] for r in screen_rows} == {
            k.removeprefix("score_"): v for k, v in data.items() if k.startswith("score_")
        }
        roles = sorted(r["stimulus_role"] for r in screen_rows)
        assert roles == ["anchor", "anchor", "condition", "condition", "hidden_reference"]
        conds = {r["condition"] for r in screen_rows}
        assert conds == {
            "reference",
            "anchor_lp35",
            "anchor_lp70",
            "sine_resynthesis",
            "shuffled_notes",
        }
        hidden = next(r for r in screen_rows if r["stimulus_role"] == "hidden_reference")
        assert {r["mushra_hidden_ref_score"] for r in screen_rows} == {hidden["mushra_score"]}
        assert all(r["plays"] == "1" for r in screen_rows)
    # hidden reference: first screen >= 91 (scores 95..91), second < 90 (60..56) -> 1 of 2 = 50 %
    assert {r["mushra_post_screen_flag"] for r in mushra} == {"1"}
    similarity = [r for r in rows if r["trial_type"] == "similarity"]
    assert [r["similarity"] for r in similarity] == [
        c[1]["similarity"] for c in clicked if c[0] == "similarity"
    ]
    assert all(r["plays_ref"] == "1" and r["plays"] == "2" for r in similarity)
    assert {r["condition"] for r in similarity} <= {"sine_resynthesis", "shuffled_notes"}
    fit = [r for r in rows if r["trial_type"] == "fit_rating"]
    assert [r["fit"] for r in fit] == [c[1]["fit"] for c in clicked if c[0] == "fit_rating"]
    assert all(r["video_shown"] == "1" for r in fit)
    # other types' rows leave the new columns empty
    assert all(r["mushra_score"] == "" for r in rows if r["trial_type"] != "mushra")


def test_mushra_anchor_and_hidden_reference_are_served_blind(
    app, client, mushra_similarity_fit_study
):
    _, token = mushra_similarity_fit_study
    step = start(client, token)
    client.post(read_page(client.get(step)).action, data={"consent": "yes"})
    page = read_page(client.get(step))
    assert page.trial_type == "mushra"
    bodies = {u.rsplit("/", 1)[1]: client.get(u) for u in page.media}
    assert all(r.mimetype == "audio/wav" for r in bodies.values())
    data = {k: r.get_data() for k, r in bodies.items()}
    # every slot has the same length (anchors keep the reference's format) ...
    assert len({len(v) for v in data.values()}) == 1
    # ... and no two slots are byte-identical, not even the hidden and the open reference
    assert len(set(data.values())) == len(data)
    # the headers of the slots do not differ either (anchors are rendered, clips dithered)
    comparable = [{k: v for k, v in r.headers.items() if k != "Date"} for r in bodies.values()]
    assert all(c == comparable[0] for c in comparable)
    # the anchor is cached: a second request gives the same bytes
    for slot, body in data.items():
        assert client.get(page.media[list(data).index(slot)]).get_data() == body
