"""A participant takes one block of each issue-7 trial type (MUSHRA, similarity, audio-video fit)
in headless Chromium at 375 px, partly by keyboard; the export is compared with what was done.
SQLite only: the database adds nothing here that the flow tests do not already cover on both."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from browser import MUSHRA_STATE as STATE
from browser import drag_loop, no_horizontal_scroll, play_to_end, trial_type
from sqlalchemy import select

from study_app.export import responses_csv
from study_app.extensions import db
from study_app.models import Study

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.sqlite_only]

DESIGN = Path(__file__).parents[1] / "data" / "mushra_similarity_fit_study.yaml"

# Sample (video time - audio time) on every animation frame while the clip plays.
SAMPLE_DRIFT = """
() => {
  const video = document.getElementById('video');
  const audio = document.getElementById('audio-clip');
  window.__drift = [];
  function sample() {
    if (!audio.paused && !audio.ended && audio.currentTime > 0.1) {
      window.__drift.push(video.currentTime - audio.currentTime);
    }
    if (!audio.ended) requestAnimationFrame(sample);
  }
  requestAnimationFrame(sample);
}
"""


def _mushra_screen(page, screen: int) -> dict:
    page.wait_for_selector('#mushra[data-loaded="true"]', timeout=30_000)
    slots = page.eval_on_selector_all("input.mushra-slider", "els => els.map(e => e.dataset.slot)")
    assert len(slots) == 5
    # the open reference, then every sample: switching keeps the shared playhead running
    page.click("#mushra-ref")
    # (its first play: audible once fetched and decoded)
    page.wait_for_function(f"() => {STATE}.audible === 'ref'")
    page.wait_for_timeout(400)
    before = page.evaluate("document.getElementById('mushra').mushraState()")
    assert before["slot"] == "ref" and before["position"] > 0.1
    for slot in slots:
        page.click(f'button.mushra-play[data-slot="{slot}"]')
        page.wait_for_timeout(150)
    after = page.evaluate("document.getElementById('mushra').mushraState()")
    assert after["slot"] == slots[-1]
    # all sources share one clock: the playhead advanced continuously (modulo the loop)
    assert after["position"] != before["position"]
    # loop a region dragged on the Reference's waveform and listen long enough for the
    # whole-clip minimum
    drag_loop(page, 0.5, 1.5, page.evaluate(f"{STATE}.duration"))
    page.wait_for_timeout(300)
    state = page.evaluate(STATE)
    assert state["loop"]["on"] and 0.45 <= state["position"] <= 1.55
    page.wait_for_timeout(2600)
    assert page.evaluate("document.getElementById('mushra').dataset.playing") == slots[-1]
    # Sliders start unset (no default score): empty score fields, Next disabled until all set
    assert page.locator("input.mushra-slider.unset").count() == len(slots)
    assert all(page.input_value(f'input[name="score_{s}"]') == "" for s in slots)
    assert page.is_disabled("#submit")
    scores = {}
    for i, slot in enumerate(slots):
        selector = f'input.mushra-slider[data-slot="{slot}"]'
        assert page.is_disabled("#submit"), f"Next enabled with {len(slots) - i} sliders unset"
        if screen == 1 and i == 0:
            # a click on the track where the unset slider rests (the middle) is a rating too
            page.click(selector)
            scores[slot] = page.input_value(selector)
            assert page.input_value(f'input[name="score_{slot}"]') == scores[slot]
            assert 40 <= int(scores[slot]) <= 60
            continue
        page.focus(selector)
        if screen == 0:
            # by keyboard: Home = 0, then Right-arrow steps of one
            page.keyboard.press("End")
            for _ in range(i * 3):
                page.keyboard.press("ArrowLeft")
            scores[slot] = str(100 - i * 3)
        else:
            page.keyboard.press("Home")
            for _ in range(10 + i):
                page.keyboard.press("ArrowRight")
            scores[slot] = str(10 + i)
    assert page.input_value('input[name="moved"]') == "all"
    assert page.locator("input.mushra-slider.unset").count() == 0
    assert {s: page.input_value(f'input[name="score_{s}"]') for s in slots} == scores
    assert page.is_enabled("#submit")
    page.click("#mushra-stop")
    return {"scores": scores, "plays": {s: "1" for s in slots}}


def test_mushra_similarity_fit_in_chromium(app, live_server, browser_page):
    page = browser_page
    with app.app_context():
        entry = db.session.scalar(select(Study.entry_token))
    page.goto(f"{live_server}/join/{entry}")
    with page.expect_navigation():
        page.click("#start")
    clicked: list[tuple[str, dict]] = []
    drifts: list[float] = []
    for _ in range(20):
        page.wait_for_load_state()
        kind = trial_type(page)
        if kind is None:
            break
        assert no_horizontal_scroll(page), f"{kind} page scrolls sideways at 375 px"
        record: dict = {}
        if kind == "consent":
            page.check('input[name="consent"]')
        elif kind == "mushra":
            record = _mushra_screen(page, sum(c[0] == "mushra" for c in clicked))
        elif kind == "similarity":
            assert page.is_disabled("#submit")
            play_to_end(page, "ref")
            play_to_end(page, "clip")
            record["similarity"] = str(2 + len(clicked))
            page.focus(f'input[name="similarity"][value="{record["similarity"]}"]')
            page.keyboard.press("Space")
        elif kind == "fit_rating":
            assert page.is_disabled("#submit")
            page.evaluate(SAMPLE_DRIFT)
            play_to_end(page, "clip")
            samples = page.evaluate("window.__drift")
            assert len(samples) > 20
            drifts.extend(samples)
            record["fit"] = str(1 + len(clicked))
            page.check(f'input[name="fit"][value="{record["fit"]}"]')
        with page.expect_navigation():
            page.click("#submit")
        clicked.append((kind, record))
    else:
        raise AssertionError("study did not end")
    page.wait_for_selector("#completion-code")
    # In sync: 95 % of the samples within one 25 fps frame, none beyond two. A busy machine
    # delays single animation frames (a CI run saw one at 42 ms); a broken sync drifts by
    # hundreds. (test_browser_p808_2afc's 30 s drift test holds the long run to 99 %.)
    offsets = sorted(abs(d) for d in drifts)
    assert offsets[int(0.95 * len(offsets))] < 1 / 25 and offsets[-1] < 2 / 25, offsets[-5:]

    with app.app_context():
        study = db.session.scalar(select(Study))
        rows = list(csv.DictReader(io.StringIO(responses_csv(study))))
    mushra_records = [r for k, r in clicked if k == "mushra"]
    assert len(mushra_records) == 2
    for screen, record in enumerate(mushra_records):
        screen_rows = [
            r for r in rows if r["trial_type"] == "mushra" and r["trial_in_block"] == str(screen)
        ]
        assert {r["stimulus_slot"]: r["mushra_score"] for r in screen_rows} == record["scores"]
        assert {r["stimulus_slot"]: r["plays"] for r in screen_rows} == record["plays"]
        assert all(r["flag_too_fast"] == "0" for r in screen_rows)
        # the server saw every clip of the screen downloaded whole before the answer
        assert {r["media_fetched"] for r in screen_rows} == {
            ";".join(f"{s}:1.00" for s in ("ref", "s1", "s2", "s3", "s4", "s5"))
        }
        assert {(r["flag_unheard"], r["flag_too_quick"]) for r in screen_rows} == {("0", "0")}
    # screen 1 gave the hidden reference a score in 10..14 (or about 50 by the click): 1 of 2
    # screens below 90 -> flagged
    assert {r["mushra_post_screen_flag"] for r in rows if r["trial_type"] == "mushra"} == {"1"}
    similarity = [r["similarity"] for r in rows if r["trial_type"] == "similarity"]
    assert similarity == [r["similarity"] for k, r in clicked if k == "similarity"]
    fit = [r for r in rows if r["trial_type"] == "fit_rating"]
    assert [r["fit"] for r in fit] == [r["fit"] for k, r in clicked if k == "fit_rating"]
    assert all(r["plays"] == "1" and r["flag_too_fast"] == "0" for r in fit)
    # played to the end through <audio> (Range requests): heard whole, by the server's log
    heard = [r for r in rows if r["trial_type"] in ("similarity", "fit_rating")]
    assert all(r["flag_unheard"] == "0" for r in heard)
