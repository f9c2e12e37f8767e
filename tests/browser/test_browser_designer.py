"""A researcher builds a two-block study in the designer, previews it, opens it; a participant
completes it; the dashboard shows the completion without a reload. Headless Chromium."""

from __future__ import annotations

import pytest
from browser import RECORD_ENDED, play_to_end

from study_app.extensions import db
from study_app.models import Researcher

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def take_abx_trial(page) -> None:
    for slot in "abx":
        play_to_end(page, slot)
    page.check('input[name="answer"][value="A"]')
    page.check('input[name="confidence"][value="4"]')
    with page.expect_navigation():
        page.click("#submit")


def take_study(page) -> None:
    page.check('input[name="consent"]')
    with page.expect_navigation():
        page.click("#submit")
    take_abx_trial(page)
    page.wait_for_selector("#completion-code")


def test_researcher_designs_previews_opens_and_monitors(app, live_server, chromium):
    with app.app_context():
        db.session.add(r := Researcher(email="designer@example.org"))
        r.set_password("designer-password")
        db.session.commit()
    researcher = chromium.new_context(viewport={"width": 1100, "height": 900})
    researcher.add_init_script(RECORD_ENDED)
    page = researcher.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{live_server}/researcher/login")
    page.fill('input[name="email"]', "designer@example.org")
    page.fill('input[name="password"]', "designer-password")
    with page.expect_navigation():
        page.click('button[type="submit"]')

    page.select_option('select[name="stimulus_set"]', "demo")
    page.fill('#new-study input[name="title"]', "Browser-built study")
    page.fill('#new-study input[name="slug"]', "browser-built")
    with page.expect_navigation():
        page.click("#new-study button[type=submit]")
    page.wait_for_selector(".block-card[data-block-type=consent]")

    # Add an ABX block comparing both generated conditions, one trial per participant.
    page.select_option("#add-block-type", "abx")
    page.click("#add-block")
    abx = page.locator(".block-card[data-block-type=abx]")
    abx.locator('input[data-key="conditions"][value="sine_resynthesis"]').check()
    abx.locator('input[data-key="conditions"][value="shuffled_notes"]').check()
    abx.locator('input[data-key="trials_per_participant"]').fill("1")
    page.fill("#design-code", "BROWSER-OK")
    page.click("#save-design")
    page.wait_for_selector("#designer-problems.saved")
    assert page.inner_text("#designer-problems") == "Saved."
    assert page.locator(".block-card").count() == 3  # the study card and two blocks
    # The ABX block's power hint: one trial over the demo set's 4 sources is below every
    # simulated design, and the hint says so instead of showing numbers.
    page.wait_for_selector("#designer-power .power-hint[data-block=abx]")
    assert "smaller than every simulated design" in page.inner_text("#designer-power")

    # Preview opens a participant session in a new tab; it is marked and not counted.
    with researcher.expect_page() as new_tab:
        page.click("#preview")
    preview = new_tab.value
    preview.wait_for_load_state()
    assert preview.is_visible("#preview-banner")
    take_study(preview)
    assert preview.inner_text("#completion-code") == "BROWSER-OK"
    preview.close()

    with page.expect_navigation():
        page.click("#open-study")
    assert page.inner_text("#study-status") == "open"
    link = page.input_value("#participant-link")

    page.goto(f"{live_server}/researcher/studies/browser-built/dashboard")
    page.wait_for_function("() => document.getElementById('n-started').textContent === '0'")

    participant_context = chromium.new_context(viewport={"width": 375, "height": 740})
    participant_context.add_init_script(RECORD_ENDED)
    participant = participant_context.new_page()
    participant.set_default_timeout(30_000)
    participant.goto(link + "?PROLIFIC_PID=browser-pid")
    with participant.expect_navigation():
        participant.click("#start")
    take_study(participant)

    # The dashboard polls: no reload needed to see the completion.
    page.wait_for_function(
        "() => document.getElementById('n-completed').textContent.trim() === '1'", timeout=20_000
    )
    assert page.inner_text("#n-started") == "1"
    assert "browser-pid" in page.inner_text("#participants")
