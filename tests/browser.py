"""What every browser test needs: the app served on a free local port, Debian's Chromium driven
by Playwright (which cannot download a browser of its own here), and the page steps the browser
tests share (playing a clip to its end, the trial type shown, MUSHRA's state and loop drags).
The fixtures built on these are in tests/browser/conftest.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from werkzeug.serving import make_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    # this machine's network is closed: no background connections to be refused
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@contextmanager
def serving(app) -> Iterator[str]:
    """The app served by a threaded werkzeug server on 127.0.0.1; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@contextmanager
def chromium_browser():
    """A headless Chromium (Debian's) launched through Playwright, closed afterwards."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (make test does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# Record every media element's `ended` event (it does not bubble, so listen while capturing).
RECORD_ENDED = """
window.__ended = [];
document.addEventListener('ended', e => window.__ended.push(e.target.id), true);
"""


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def play_to_end(page, slot: str, *, keyboard: bool = False) -> None:
    before = page.evaluate("window.__ended.length")
    if keyboard:
        page.keyboard.press(slot)
    else:
        page.click(f'button.player[data-slot="{slot}"]')
    page.wait_for_function(
        "([before, id]) => window.__ended.slice(before).includes(id)",
        arg=[before, f"audio-{slot}"],
        timeout=30_000,
    )


def trial_type(page) -> str | None:
    form = page.query_selector("#trial-form")
    if form is None:
        return None
    return form.get_attribute("class").split("trial-")[1].split()[0]


# The MUSHRA player's state, as its page exposes it.
MUSHRA_STATE = "document.getElementById('mushra').mushraState()"


def touch_drag(page, points: list[tuple[float, float]]) -> None:
    """A one-finger drag through `points` (viewport pixels), as a phone's touchscreen sends it:
    the page's touch-action decides whether it scrolls or reaches the control."""
    cdp = page.context.new_cdp_session(page)
    kinds = ["touchStart"] + ["touchMove"] * (len(points) - 1)
    for kind, (x, y) in zip(kinds, points, strict=True):
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def drag_loop(page, start: float, end: float, duration: float, *, touch: bool = False) -> None:
    """Drag on the waveform from `start` to `end` seconds, by mouse or by finger."""
    page.locator("#mushra-wave").scroll_into_view_if_needed()
    box = page.locator("#mushra-wave").bounding_box()
    y = box["y"] + box["height"] / 2

    def x(t: float) -> float:
        return box["x"] + box["width"] * t / duration

    path = [x(start) + (x(end) - x(start)) * i / 8 for i in range(9)]
    if touch:
        touch_drag(page, [(px, y) for px in path])
        return
    page.mouse.move(path[0], y)
    page.mouse.down()
    for px in path[1:]:
        page.mouse.move(px, y)
    page.mouse.up()
