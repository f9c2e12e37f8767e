"""Headless Chromium at 375 px through the second half of issue 7's trial types: the P.808
qualification, the 2AFC audio-video fit preference and ACR with gold, trapping and pause items;
a MUSHRA screen that requires full listening; and audio-video drift over a 30 s clip. The export is
compared with what was clicked. SQLite only (the flow tests cover both databases)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from browser import no_horizontal_scroll, play_to_end, trial_type
from sqlalchemy import select

from study_app.export import responses_csv
from study_app.extensions import db
from study_app.models import Study, Trial

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.sqlite_only]

DATA = Path(__file__).parents[1] / "data"

# Sample (video time - audio time) on every animation frame while either clip plays.
SAMPLE_DRIFT = """
(slot) => {
  const video = document.getElementById('video');
  const audio = document.getElementById('audio-' + slot);
  window.__drift = window.__drift || [];
  function sample() {
    if (!audio.paused && !audio.ended && audio.currentTime > 0.1) {
      window.__drift.push([audio.currentTime, video.currentTime - audio.currentTime]);
    }
    if (!audio.ended) requestAnimationFrame(sample);
  }
  requestAnimationFrame(sample);
}
"""


def _join(page, base: str, entry: str) -> None:
    page.goto(f"{base}/join/{entry}")
    with page.expect_navigation():
        page.click("#start")


def _spec(app, page) -> dict:
    action = page.get_attribute("#trial-form", "action")
    with app.app_context():
        return db.session.scalar(select(Trial).where(Trial.token == action.rsplit("/", 1)[1])).spec


def _rows(app) -> list[dict]:
    with app.app_context():
        return list(csv.DictReader(io.StringIO(responses_csv(db.session.scalar(select(Study))))))


def test_p808_and_fit_preference_in_chromium(
    app, make_study, long_demo_set_dir, app_url, browser_page
):
    _, entry = make_study(DATA / "p808_2afc_study.yaml", long_demo_set_dir)
    page = browser_page
    _join(page, app_url, entry)
    clicked: list[tuple[str, dict]] = []
    for _ in range(30):
        page.wait_for_load_state()
        kind = trial_type(page)
        if kind is None:
            break
        assert no_horizontal_scroll(page), f"{kind} page scrolls sideways at 375 px"
        spec = _spec(app, page)
        record: dict = {}
        if kind == "consent":
            page.check('input[name="consent"]')
        elif kind == "p808_qualification":
            assert page.is_disabled("#submit")
            page.check('input[name="hearing"][value="normal"]')
            page.check('input[name="device"][value="earbuds"]')
            page.check('input[name="environment"][value="quiet"]')
            for i in range(1, len(spec["tone_counts"]) + 1):
                play_to_end(page, f"t{i}")
            for i, count in enumerate(spec["tone_counts"], 1):
                # the test cannot hear the beeps: it reads the true count from the server
                page.fill(f'input[name="count_t{i}"]', str(count))
        elif kind == "fit_preference":
            assert page.is_disabled("#submit")
            play_to_end(page, "a")
            assert page.is_disabled("#submit")  # B not heard yet
            play_to_end(page, "b")
            record = {"answer": "AB"[len(clicked) % 2], "strength": str(1 + len(clicked) % 3)}
            page.check(f'input[name="answer"][value="{record["answer"]}"]')
            page.check(f'input[name="strength"][value="{record["strength"]}"]')
        elif kind == "acr" and spec["item"] == "rest":
            assert page.is_disabled("#submit")  # the pause's countdown
            page.wait_for_function(
                "() => !document.getElementById('submit').disabled", timeout=10_000
            )
        elif kind == "acr":
            assert page.is_disabled("#submit")
            play_to_end(page, "clip")
            rating = spec.get("correct_answer") or 2 + len(clicked) % 3
            record = {"rating": str(rating), "item": spec["item"]}
            page.check(f'input[name="rating"][value="{rating}"]')
        with page.expect_navigation():
            page.click("#submit")
        clicked.append((kind, record))
    else:
        raise AssertionError("study did not end")
    page.wait_for_selector("#completion-code")

    rows = _rows(app)
    assert {r["excluded"] for r in rows} == {"0"}  # nothing too fast, every check passed
    assert [r["qualification_passed"] for r in rows if r["trial_type"] == "p808_qualification"] == [
        "1"
    ]
    preference = [r for r in rows if r["trial_type"] == "fit_preference"]
    assert [
        (r["answer"], r["preference_strength"], r["plays_a"], r["plays_b"]) for r in preference
    ] == [(c["answer"], c["strength"], "1", "1") for k, c in clicked if k == "fit_preference"]
    acr = [r for r in rows if r["trial_type"] == "acr"]
    assert [(r["acr_item"], r["acr_rating"]) for r in acr] == [
        (c["item"], c["rating"]) for k, c in clicked if k == "acr" and c
    ]
    assert sorted(r["acr_item"] for r in acr) == [
        "gold",
        "gold",
        "rating",
        "rating",
        "rating",
        "trap",
    ]


def test_fit_preference_stays_in_sync_over_30_s(
    app, make_study, tmp_path_factory, app_url, browser_page
):
    """Drift between the muted video and the music under one video frame (1/25 s) over 30 s
    clips, sampled on every animation frame, with A and then B (99 % of frames; a rare stall
    must be repaired quickly)."""
    from demo_set import build_demo_set

    set_dir = tmp_path_factory.mktemp("set_30s")
    build_demo_set(set_dir, n_sources=2, duration=30.0)
    design = tmp_path_factory.mktemp("design") / "design.yaml"
    design.write_text(
        "format: sightsound-design/1\nslug: drift\ntitle: Drift\nstimulus_set: demo\n"
        "completion: {code: DRIFT}\nblocks:\n"
        "  - {id: fit, type: fit_preference, conditions: [reference, mismatched],"
        " trials_per_participant: 1}\n"
    )
    _, entry = make_study(design, set_dir)
    page = browser_page
    _join(page, app_url, entry)
    assert trial_type(page) == "fit_preference"
    for slot in ("a", "b"):
        page.evaluate(SAMPLE_DRIFT, slot)
        before = page.evaluate("window.__ended.length")
        page.click(f'button.player[data-slot="{slot}"]')
        page.wait_for_function(
            "([before, id]) => window.__ended.slice(before).includes(id)",
            arg=[before, f"audio-{slot}"],
            timeout=60_000,
        )
    samples = page.evaluate("window.__drift")
    assert max(t for t, _ in samples) > 29.5  # sampled to the end of both clips
    assert len(samples) > 300
    worst_index = max(range(len(samples)), key=lambda i: abs(samples[i][1]))
    worst_at, worst = samples[worst_index][0], abs(samples[worst_index][1])
    over = sum(abs(d) >= 1 / 25 for _, d in samples)
    around = samples[max(0, worst_index - 6) : worst_index + 6]
    report = (
        f"audio-video drift over {len(samples)} frames: worst {1000 * worst:.1f} ms at "
        f"{worst_at:.2f} s of the clip, {over} frames at or over one video frame; around it "
        f"(audio s, video - audio ms): {[(round(t, 3), round(1000 * d, 1)) for t, d in around]}"
    )
    print(report)
    # Held in sync: 99 % of frames within one video frame. A momentary stall of the browser's
    # decoder on a loaded machine (once in CI: 10 of 3,577 frames over, the worst 113 ms at
    # 29.5 s) is the seek's to repair, so a larger excursion only has to be brief.
    drifts = sorted(abs(d) for _, d in samples)
    assert drifts[int(0.99 * len(drifts))] < 1 / 25, report
    assert over <= 0.01 * len(samples) and worst < 0.2, report
    page.check('input[name="answer"][value="B"]')
    page.check('input[name="strength"][value="3"]')
    with page.expect_navigation():
        page.click("#submit")
    page.wait_for_selector("#completion-code")


def test_mushra_requires_full_listening(app, make_study, app_url, browser_page):
    design = DATA / "mushra_full_listen.yaml"
    _, entry = make_study(design)
    page = browser_page
    _join(page, app_url, entry)
    assert trial_type(page) == "mushra"
    page.wait_for_selector('#mushra[data-loaded="true"]')
    slots = [
        "ref",
        *page.eval_on_selector_all("input.mushra-slider", "els => els.map(e => e.dataset.slot)"),
    ]
    for i, slot in enumerate(slots):
        assert page.is_disabled("#submit"), f"unlocked before {slot} was heard"
        button = "#mushra-ref" if slot == "ref" else f'button.mushra-play[data-slot="{slot}"]'
        page.click(button)
        # heard in two pieces for the first sample (switching keeps the count), else in one go
        if i == 1:
            page.wait_for_timeout(1500)
            page.click("#mushra-ref")
            page.click(button)
        page.wait_for_function(
            "(slot) => document.getElementById('mushra').mushraState().heard[slot] >= 2.95",
            arg=slot,
            timeout=15_000,
        )
    heard = page.evaluate("document.getElementById('mushra').mushraState().heard")
    assert all(heard[s] >= 2.95 for s in slots)
    # all heard, but the sliders start unset: Next waits for every one of them to be set
    page.wait_for_timeout(300)  # the lock is re-checked every 250 ms
    assert page.is_disabled("#submit")
    for slot in slots[1:]:
        page.focus(f'input.mushra-slider[data-slot="{slot}"]')
        page.keyboard.press("End")
    page.wait_for_function("() => !document.getElementById('submit').disabled", timeout=5_000)
