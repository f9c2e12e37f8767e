"""axe-core on every page a participant or a researcher can see, at a desktop and a phone size.

One participant walks through a study with a block of every trial type (tests/data/
a11y_all_types.yaml). The browser only looks: each page is checked, then answered through the
test client (the same app and database), so no clip has to be played to its end and the walk
takes seconds. Any violation of impact moderate or above fails, with every one found listed.

axe-core is vendored (tests/vendor/axe-core, see its README): no npm at test time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from browser import no_horizontal_scroll, trial_type
from flow import current, valid_answer
from sqlalchemy import select

from demo_set import build_demo_set
from study_app.design import read_design_file
from study_app.extensions import db
from study_app.models import Participant, Researcher, Study
from study_app.services import create_study, import_stimulus_set

# SQLite only: the pages are the subject here, and the flow tests cover both databases.
pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.sqlite_only]

DESIGN = Path(__file__).parents[1] / "data" / "a11y_all_types.yaml"
AXE = Path(__file__).parents[1] / "vendor" / "axe-core" / "axe.min.js"
VIEWPORTS = {"1280x800": (1280, 800), "390x844": (390, 844)}
FAILING_IMPACTS = {"moderate", "serious", "critical"}
# Every page type the participant sees in the walk, for the check that none was skipped.
PARTICIPANT_PAGES = {
    "welcome",
    "consent",
    "consent with problems (400)",
    "headphone_check",
    "p808_qualification",
    "emotion_rating",
    "abx",
    "mushra",
    "similarity",
    "fit_rating",
    "fit_preference",
    "acr",
    "acr pause",
    "finished",
}
RUN_AXE = """
async () => {
  const results = await axe.run(document, {resultTypes: ['violations']});
  return results.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ')),
  }));
}
"""
# Words of the emotion checklist whose text reaches past the inside of their box (its border
# less its padding): a word such as "Transcendence" running into the border or beyond. The text
# itself is measured (a Range), since the box's scrollWidth hides an overrun within the padding.
OVERFLOWING_WORDS = """
() => [...document.querySelectorAll('.words .word')].filter(box => {
  const style = getComputedStyle(box);
  const inside = box.getBoundingClientRect().right - parseFloat(style.paddingRight)
    - parseFloat(style.borderRightWidth);
  const range = document.createRange();
  range.selectNodeContents(box);
  return [...range.getClientRects()].some(rect => rect.right > inside + 0.5);
}).map(box => box.querySelector('.word-label').textContent)
"""


class Audit:
    """Runs axe on pages at every viewport and keeps what it finds."""

    def __init__(self, page):
        self.page = page
        self.checked: list[str] = []
        self.violations: list[str] = []
        self.sideways: list[str] = []

    def check(self, name: str) -> None:
        page = self.page
        page.wait_for_load_state()
        for size, (width, height) in VIEWPORTS.items():
            page.set_viewport_size({"width": width, "height": height})
            if not page.evaluate("typeof window.axe === 'object'"):
                inject_axe(page)
            for v in page.evaluate(RUN_AXE):
                if v["impact"] in FAILING_IMPACTS:
                    self.violations.append(
                        f"{name} @ {size}: [{v['impact']}] {v['id']}: {v['help']} "
                        f"{json.dumps(v['nodes'])}"
                    )
            if not no_horizontal_scroll(page):
                self.sideways.append(f"{name} @ {size}")
        self.checked.append(name)

    def assert_clean(self) -> None:
        report = "\n".join(self.violations)
        print(report or "axe: no violations of impact moderate or above")
        assert not self.violations, f"{len(self.violations)} axe violations:\n{report}"
        assert not self.sideways, f"pages that scroll sideways: {self.sideways}"


def inject_axe(page) -> None:
    """Load axe into the page. add_script_tag(path=...) inserts an inline <script>, which the
    app's Content-Security-Policy (script-src 'self') blocks; evaluate() runs through the
    DevTools protocol, which the page's CSP does not govern, and the CSP stays on for the
    page's own scripts, as participants get it."""
    page.evaluate(AXE.read_text(encoding="utf-8") + "\n;undefined")
    assert page.evaluate("typeof window.axe === 'object'"), "axe did not load"


def eight_source_draft(app, folder: Path) -> str:
    """A draft with an ABX and an emotion-rating block on an eight-source demo set: both
    power hints then show their tables. Returns its slug."""
    build_demo_set(folder / "eight", n_sources=8, duration=1.0)
    manifest = json.loads((folder / "eight" / "manifest.json").read_text())
    manifest["name"] = "demo-eight"
    (folder / "eight" / "manifest.json").write_text(json.dumps(manifest))
    with app.app_context():
        import_stimulus_set(folder / "eight", Path(app.config["MEDIA_DIR"]))
        design = {"slug": "power-draft", "title": "Power hints", "stimulus_set": "demo-eight",
                  "blocks": [
                      {"id": "abx", "type": "abx",
                       "conditions": ["sine_resynthesis", "shuffled_notes"]},
                      {"id": "emotion", "type": "emotion_rating",
                       "conditions": ["reference", "sine_resynthesis"]}]}
        return create_study(design, db.session.scalar(select(Researcher)),
                            status="draft").slug


def test_every_page_passes_axe(app, live_server, chromium, tmp_path):
    client = app.test_client()
    with app.app_context():
        study = db.session.scalar(select(Study))
        entry, slug = study.entry_token, study.slug
        draft = create_study(
            read_design_file(DESIGN) | {"slug": "a11y-draft", "title": "A draft"},
            db.session.scalar(select(Researcher)),
            status="draft",
        ).slug
    power_draft = eight_source_draft(app, tmp_path)
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    audit = Audit(page)

    # The participant ------------------------------------------------------------------------
    page.goto(f"{live_server}/join/{entry}")
    audit.check("welcome")
    with page.expect_navigation():
        page.click("#start")
    step_url = page.url
    step_path = step_url.removeprefix(live_server)
    audit.check("consent")
    # Sent without ticking the box (form.submit() skips the browser's own check; called from the
    # prototype, as the button named "submit" shadows it): the server's problems, status 400.
    with page.expect_navigation():
        page.evaluate(
            "HTMLFormElement.prototype.submit.call(document.getElementById('trial-form'))"
        )
    assert page.locator(".problems").count() == 1
    audit.check("consent with problems (400)")
    page.goto(step_url)
    overflowing_words: list[str] | None = None
    for _ in range(30):
        page.wait_for_load_state()
        kind = trial_type(page)
        if kind is None:
            break
        state = current(client, step_path)
        assert state.trial_type == kind
        is_pause = kind == "acr" and page.locator("#rest").count() == 1
        name = "acr pause" if is_pause else kind
        if name not in audit.checked:
            audit.check(name)
        if kind == "emotion_rating":
            page.set_viewport_size({"width": 1280, "height": 800})
            overflowing_words = page.evaluate(OVERFLOWING_WORDS)
        response = client.post(state.action, data=valid_answer(app, state))
        assert response.status_code == 303, (kind, response.status_code)
        page.goto(step_url)
    else:
        raise AssertionError("the study did not end")
    page.wait_for_selector("#completion-code")
    audit.check("finished")
    assert overflowing_words == [], f"emotion words overflow their boxes: {overflowing_words}"
    assert set(audit.checked) >= PARTICIPANT_PAGES, PARTICIPANT_PAGES - set(audit.checked)

    # Error pages ----------------------------------------------------------------------------
    token = step_path.split("/")[2]
    page.goto(f"{live_server}/p/{'x' * 43}/")
    audit.check("404 participant")
    page.goto(f"{live_server}/p/{token}/t/{'y' * 43}")
    assert page.locator("#back-to-study").count() == 1
    audit.check("405 participant")
    page.goto(f"{live_server}/no-such-page")
    audit.check("404")

    # The researcher -------------------------------------------------------------------------
    with app.app_context():
        public_id = db.session.scalar(select(Participant)).public_id
    page.goto(f"{live_server}/researcher/login")
    audit.check("login")
    page.fill('input[name="email"]', "owner@example.org")
    page.fill('input[name="password"]', "owner-password")
    with page.expect_navigation():
        page.click('button[type="submit"]')
    audit.check("studies")
    page.goto(f"{live_server}/researcher/studies/{slug}/")
    page.wait_for_selector("#designer .block-card")
    audit.check("designer (open study)")
    page.goto(f"{live_server}/researcher/studies/{draft}/")
    page.wait_for_selector("#designer .block-card")
    audit.check("designer (draft)")
    # The designer's power hints with their tables: a draft on an eight-source set (the demo
    # set's four are below every simulated design, and its hint has no table).
    page.goto(f"{live_server}/researcher/studies/{power_draft}/")
    page.wait_for_selector("#designer-power table.power-table >> nth=1")
    audit.check("designer (power hints)")
    if os.environ.get("SIGHTSOUND_SCREENSHOTS"):
        page.set_viewport_size({"width": 1280, "height": 800})
        page.locator("#designer-power").screenshot(
            path=str(Path(os.environ["SIGHTSOUND_SCREENSHOTS"]) / "designer-power.png"))
    # The pre-registration (issue 22): read, edited and downloaded before opening, then
    # frozen by opening the study and amended.
    page.goto(f"{live_server}/researcher/studies/{power_draft}/preregistration")
    audit.check("pre-registration (draft, with power)")
    page.goto(f"{live_server}/researcher/studies/{draft}/")
    with page.expect_navigation():
        page.click("#preregistration")
    page.fill("#plan-authors", "A. Researcher")
    page.fill("#plan-sample-size", "40")
    with page.expect_navigation():
        page.click("#plan-save")
    audit.check("pre-registration (draft)")
    with page.expect_download() as download:
        page.click("#download-md")
    markdown = Path(download.value.path()).read_text(encoding="utf-8")
    assert "# Pre-registration: A draft" in markdown and "A. Researcher" in markdown
    assert "40 listeners who complete the study." in markdown
    page.goto(f"{live_server}/researcher/studies/{draft}/")
    with page.expect_navigation():
        page.click("#open-study")
    page.goto(f"{live_server}/researcher/studies/{draft}/preregistration")
    assert "Frozen" in page.inner_text("#plan-frozen")
    page.fill("#amend-text", "Recruitment stops at 32 listeners.")
    page.fill("#amend-reason", "Funding ended.")
    with page.expect_navigation():
        page.click("#amend-save")
    assert "Recruitment stops at 32 listeners." in page.inner_text("#plan-amendments")
    audit.check("pre-registration (frozen, amended)")
    page.goto(f"{live_server}/researcher/studies/{slug}/dashboard")
    page.wait_for_selector("#participants tbody tr")
    audit.check("dashboard")
    page.goto(f"{live_server}/researcher/studies/{slug}/participants/{public_id}")
    audit.check("participant detail")
    page.goto(f"{live_server}/researcher/studies/no-such-study/")
    audit.check("404 researcher")

    # A closed study's entry link ------------------------------------------------------------
    with app.app_context():
        db.session.scalar(select(Study).where(Study.slug == slug)).status = "closed"
        db.session.commit()
    page.goto(f"{live_server}/join/{entry}")
    audit.check("closed study (403)")
    context.close()
    audit.assert_clean()
