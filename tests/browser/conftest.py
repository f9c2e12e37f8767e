"""The browser room: the app served on a free local port and driven in headless Chromium.

One Chromium is launched for the room (on first use) and closed when the run leaves the room;
each test gets it with no context open and its contexts are closed after it, so no cookies,
storage or pages pass from one test to the next. Every module here is marked slow and browser.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from browser import RECORD_ENDED, chromium_browser, serving

ROOM = Path(__file__).resolve().parent


class _SharedChromium:
    """The room's one Chromium, started by the first test that asks for it."""

    def __init__(self) -> None:
        self._stack: ExitStack | None = None
        self.browser = None

    def get(self):
        if self.browser is None:
            self._stack = ExitStack()
            self.browser = self._stack.enter_context(chromium_browser())
        return self.browser

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack, self.browser = None, None


_shared = _SharedChromium()


def pytest_runtest_teardown(item, nextitem):
    # Close Chromium once the run leaves the room (as a package-scoped fixture would).
    if nextitem is None or ROOM not in nextitem.path.parents:
        _shared.close()


def pytest_sessionfinish(session):
    _shared.close()


@pytest.fixture
def chromium():
    """Headless Chromium with no context open; whatever contexts the test opens are closed after
    it."""
    browser = _shared.get()
    assert browser.contexts == [], "a previous test's browser context is still open"
    yield browser
    for context in list(browser.contexts):
        context.close()


@pytest.fixture
def browser_page(chromium):
    """A phone-sized page (375 x 740, touch) that records every media `ended` event."""
    context = chromium.new_context(
        viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True
    )
    context.add_init_script(RECORD_ENDED)
    page = context.new_page()
    page.set_default_timeout(30_000)
    return page


@pytest.fixture
def app_url(app):
    """The app served by a threaded werkzeug server; its base URL."""
    with serving(app) as url:
        yield url


@pytest.fixture
def live_server(request, app_url, make_study, tmp_path):
    """`app_url` with the module's study created first: its DESIGN (a design file, or a design
    as a dict), or the demo study where the module has none."""
    design = getattr(request.module, "DESIGN", None)
    if isinstance(design, dict):
        path = tmp_path / "design.yaml"
        path.write_text(yaml.safe_dump(design))
        design = path
    if design is None:
        make_study()
    else:
        make_study(design)
    return app_url
