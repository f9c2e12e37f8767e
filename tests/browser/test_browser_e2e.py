"""A participant takes the whole demo study in headless Chromium, on a phone-sized screen.

Every clip is played to its `ended` event before answering (the page enforces it, and we check
the lock), answers are picked at random, and the export is then compared row by row with what
was clicked.
"""

from __future__ import annotations

import csv
import io
import random

import pytest
from browser import no_horizontal_scroll, play_to_end, trial_type
from sqlalchemy import select

from study_app.export import responses_csv
from study_app.extensions import db
from study_app.models import Study

pytestmark = [pytest.mark.slow, pytest.mark.browser]

def test_participant_completes_demo_study_in_chromium(app, live_server, browser_page):
    page = browser_page
    rng = random.Random(2017)
    with app.app_context():
        study = db.session.scalar(select(Study))
        entry = study.entry_token
    page.goto(f"{live_server}/join/{entry}?PROLIFIC_PID=e2e-pid")
    with page.expect_navigation():
        page.click("#start")
    clicked: list[dict] = []
    abx_seen = 0
    for _ in range(40):
        page.wait_for_load_state()
        kind = trial_type(page)
        if kind is None:
            break
        assert no_horizontal_scroll(page), f"{kind} page scrolls sideways at 375 px"
        record: dict = {"trial_type": kind}
        if kind == "consent":
            page.check('input[name="consent"]')
        elif kind == "headphone_check":
            assert page.is_disabled("#submit")
            play_to_end(page, "tones")
            assert page.is_disabled('button[data-slot="tones"]')  # one play only
            record["answer"] = rng.choice("123")
            page.check(f'input[name="answer"][value="{record["answer"]}"]')
        elif kind == "abx":
            assert page.is_disabled("#submit")
            # Every other ABX trial by keyboard alone: a, b, x play; space ticks; enter sends.
            keyboard = abx_seen % 2 == 1
            abx_seen += 1
            for slot in "abx":
                play_to_end(page, slot, keyboard=keyboard)
            record["answer"] = rng.choice("AB")
            record["confidence"] = str(rng.randint(1, 5))
            for name in ("answer", "confidence"):
                selector = f'input[name="{name}"][value="{record[name]}"]'
                if keyboard:
                    page.focus(selector)
                    page.keyboard.press("Space")
                else:
                    page.check(selector)
            record["plays"] = ("1", "1", "1")
            if keyboard:
                page.focus("#submit")
                with page.expect_navigation():
                    page.keyboard.press("Enter")
                clicked.append(record)
                continue
        elif kind == "emotion_rating":
            assert page.is_disabled("#submit")
            play_to_end(page, "clip")
            video_time = page.evaluate("document.getElementById('video').currentTime")
            assert video_time > 0  # the muted video ran with the clip
            record["valence"] = str(rng.randint(1, 9))
            record["arousal"] = str(rng.randint(1, 9))
            record["fit"] = str(rng.randint(1, 7))
            record["tempo"] = str(rng.randint(1, 7))
            record["gems"] = sorted(rng.sample(["wonder", "power", "tension", "sadness"], 2))
            for name in ("valence", "arousal", "fit", "tempo"):
                page.check(f'input[name="{name}"][value="{record[name]}"]')
            for word in record["gems"]:
                page.check(f'input[name="gems"][value="{word}"]')
        with page.expect_navigation():
            page.click("#submit")
        clicked.append(record)
    else:
        raise AssertionError("study did not end")

    page.wait_for_selector("#completion-code")
    assert page.inner_text("#completion-code") == "DEMO-2026"
    assert no_horizontal_scroll(page)

    with app.app_context():
        study = db.session.scalar(select(Study))
        rows = list(csv.DictReader(io.StringIO(responses_csv(study))))
    answered = [r for r in clicked if r["trial_type"] != "consent"]
    rows.sort(key=lambda r: int(r["trial_index"]))
    assert [r["trial_type"] for r in rows] == [r["trial_type"] for r in answered]
    for row, record in zip(rows, answered, strict=True):
        assert row["external_id"] == "e2e-pid"
        if record["trial_type"] == "headphone_check":
            assert row["answer"] == record["answer"]
            assert row["correct"] == str(int(row["answer"] == row["correct_answer"]))
        elif record["trial_type"] == "abx":
            assert (row["answer"], row["confidence"]) == (record["answer"], record["confidence"])
            assert (row["plays_a"], row["plays_b"], row["plays_x"]) == record["plays"]
            assert row["correct"] == str(int(row["answer"] == row["correct_answer"]))
            assert int(row["rt_ms"]) >= 3 * 1000 * float(row["clip_duration"]) * 0.9
            assert row["flag_too_fast"] == "0"
        else:
            for name in ("valence", "arousal", "fit", "tempo"):
                assert row[name] == record[name], name
            gems = row["gems"].split(";")
            assert sorted(gems) == record["gems"]
            assert row["plays"] == "1" and row["video_shown"] == "1"
            assert row["flag_too_fast"] == "0"
