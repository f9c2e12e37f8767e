"""report.html in Debian's Chromium at 1280x800: no sideways scrolling (page or table), the
verdicts section first and on the first screen, every figure drawn inside the page.

SIGHTSOUND_SCREENSHOTS=docs/screenshots makes the test (re)write report-1280.png there (the
first screen: title, verdicts, who was analysed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser import chromium_browser

from analysis.load import read_export
from analysis.report import ReportConfig, write_report
from analysis.simulate import simulate_export

pytestmark = [pytest.mark.slow, pytest.mark.browser]

WIDTH, HEIGHT = 1280, 800
# Elements whose right edge lies beyond the viewport, for a failure message that names them.
WIDER_THAN_VIEWPORT = """
() => Array.from(document.querySelectorAll('body *'))
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
  .map(e => e.tagName + (e.id ? '#' + e.id : '') + (e.className && e.className.baseVal === undefined
       ? '.' + e.className : ''))
  .slice(0, 10)
"""
# Table boxes whose table is wider than the box (they would scroll sideways on their own).
SCROLLING_TABLES = """
() => Array.from(document.querySelectorAll('.tablebox'))
  .filter(b => b.scrollWidth > b.clientWidth + 1)
  .map(b => b.closest('section').id + ': ' + b.scrollWidth + ' > ' + b.clientWidth)
"""


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    # Small and fast (a few seconds of R), but every part of the page: ABX and ratings with
    # exclusions, fit-preference and ACR blocks (the widest tables).
    folder = tmp_path_factory.mktemp("report")
    paths = simulate_export(folder / "export", participants=30, abx_trials=14,
                            rating_trials=16, sources=6, fit_preference_trials=6,
                            acr_trials=8, seed=5)
    write_report(read_export(*paths), folder / "report",
                 ReportConfig(n_boot=100, n_permutations=100))
    return folder / "report" / "report.html"


def test_report_reads_at_1280_px_without_sideways_scrolling(report_html):
    with chromium_browser() as browser:
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.goto(report_html.as_uri())
        page.wait_for_load_state("load")
        # plotly draws each figure into an SVG; wait until every figure has one.
        page.wait_for_function(
            "document.querySelectorAll('.js-plotly-plot').length > 0 && "
            "Array.from(document.querySelectorAll('.js-plotly-plot'))"
            ".every(p => p.querySelector('svg.main-svg'))")

        assert page.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth + 1"
        ), page.evaluate(WIDER_THAN_VIEWPORT)
        assert page.evaluate(SCROLLING_TABLES) == []
        figures = page.evaluate(
            "Array.from(document.querySelectorAll('.js-plotly-plot'))"
            ".map(p => p.getBoundingClientRect().right)")
        assert figures and max(figures) <= WIDTH

        sections = page.evaluate(
            "Array.from(document.querySelectorAll('body > section')).map(s => s.id)")
        assert sections[:3] == ["verdicts", "analysed", "models"]
        # The verdicts are read first: the section starts on the first screen, right under
        # the title, and holds one sentence per condition and question.
        top = page.evaluate("document.getElementById('verdicts').getBoundingClientRect().top")
        assert top < HEIGHT / 4
        verdicts = page.locator("#verdicts li").all_inner_texts()
        assert any("could tell it from the real recording" in v for v in verdicts)
        assert len(verdicts) >= 4

        if os.environ.get("SIGHTSOUND_SCREENSHOTS"):
            folder = Path(os.environ["SIGHTSOUND_SCREENSHOTS"])
            folder.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(folder / "report-1280.png"))


def test_as_planned_and_deviations_come_right_after_the_verdicts(tmp_path):
    """With a pre-registration in the export (issue 22), the report's second section is "As
    planned / Deviations", on the first screen under the verdicts, and the page still reads at
    1280 px without sideways scrolling."""
    from prereg_plans import write_plan

    paths = simulate_export(tmp_path / "export", participants=32, abx_trials=10,
                            rating_trials=12, sources=6, seed=7)
    write_plan(paths, sample_size=40)
    write_report(read_export(*paths), tmp_path / "report",
                 ReportConfig(n_boot=50, n_permutations=50, equivalence_margin=0.15))
    with chromium_browser() as browser:
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.goto((tmp_path / "report" / "report.html").as_uri())
        page.wait_for_load_state("load")
        sections = page.evaluate(
            "Array.from(document.querySelectorAll('body > section')).map(s => s.id)")
        assert sections[:3] == ["verdicts", "preregistration", "analysed"]
        assert page.inner_text("#preregistration h2") == "As planned / Deviations"
        deviations = page.locator("#preregistration li.deviation").all_inner_texts()
        assert any("stopped early: 32 of 40 planned listeners" in d for d in deviations)
        assert any(d.startswith("equivalence margin: planned +/-0.1; analysed +/-0.15")
                   for d in deviations)
        headings = page.locator("#preregistration h3").all_inner_texts()
        assert headings[0] == "Deviations" and "As planned" in headings
        verdicts = page.locator("#verdicts li").all_inner_texts()
        assert verdicts and all(v.startswith(("Pre-registered (H", "Exploratory: "))
                                for v in verdicts)
        assert page.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth + 1"
        ), page.evaluate(WIDER_THAN_VIEWPORT)


# Each figure's title: its box against the viewport.
FIGURE_TITLES = """
() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => {
  const title = p.querySelector('text.gtitle');
  const box = title ? title.getBoundingClientRect() : null;
  const figure = p.getBoundingClientRect();
  return {section: p.closest('section').querySelector('h2').textContent,
          text: title ? title.textContent : null,
          left: box && box.left, right: box && box.right, width: window.innerWidth,
          top: box && box.top, figure_top: figure.top};
})
"""


def test_figure_titles_fit_a_390_px_phone_screen(report_html):
    # Issue 21: plotly never wraps a title, and at 390 px the long ones were cut at the
    # right edge. Every figure has its title, and the title's box lies inside the viewport
    # and starts inside its figure.
    with chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(report_html.as_uri())
        page.wait_for_load_state("load")
        page.wait_for_function(
            "document.querySelectorAll('.js-plotly-plot').length > 0 && "
            "Array.from(document.querySelectorAll('.js-plotly-plot'))"
            ".every(p => p.querySelector('svg.main-svg'))")
        titles = page.evaluate(FIGURE_TITLES)
        assert len(titles) >= 4
        for title in titles:
            assert title["text"], title
            assert title["left"] >= 0 and title["right"] <= title["width"], title
            # and not above the figure, where the SVG cuts off its first lines
            assert title["top"] >= title["figure_top"], title
