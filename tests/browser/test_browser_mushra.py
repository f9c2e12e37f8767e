"""The MUSHRA screen as webMUSHRA lays it out, in headless Chromium on a desktop (1280x800) and a
phone (390x844): the Reference's waveform drawn, a loop region dragged on it (and set by keys),
one vertical slider per sample under its play button beside the five quality bands, sliders that
start unset and must each be set, the keyboard shortcuts, no sideways scrolling; the answer is
then read back from the server's export. Each clip is fetched on its first play, never on load,
so the export's listening evidence tells a screen rated unheard from one played through.

SIGHTSOUND_SCREENSHOTS=docs/screenshots makes the test (re)write mushra-desktop.png and
mushra-phone.png there (the README shows them)."""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

import pytest
from browser import MUSHRA_STATE as STATE
from browser import drag_loop, no_horizontal_scroll, touch_drag, trial_type
from sqlalchemy import select

from study_app.export import responses_csv
from study_app.extensions import db
from study_app.models import Study

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.sqlite_only]

DESIGN = Path(__file__).parents[1] / "data" / "mushra_similarity_fit_study.yaml"
VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 844)}
BANDS = ["Excellent", "Good", "Fair", "Poor", "Bad"]
# Pixels of the canvas that are not its plain background: the drawn waveform (and playhead).
INKED_PIXELS = """
() => {
  const c = document.getElementById('mushra-wave');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let inked = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 0 && !(d[i] === 238 && d[i + 1] === 241 && d[i + 2] === 245)) inked++;
  }
  return {inked: inked, total: c.width * c.height};
}
"""
# Every visible control's box: buttons, sliders, the waveform, the shortcut list.
CONTROL_BOXES = """
() => Array.from(document.querySelectorAll(
  '#mushra button, #mushra input[type=range], #mushra-wave, .mushra-keys summary, #submit'
)).map(e => {
  const r = e.getBoundingClientRect();
  return {id: e.id || e.dataset.slot || e.tagName, left: r.left, right: r.right};
})
"""


@pytest.fixture(params=sorted(VIEWPORTS))
def sized_page(request, chromium):
    width, height = VIEWPORTS[request.param]
    phone = request.param == "phone"
    context = chromium.new_context(
        viewport={"width": width, "height": height},
        is_mobile=phone,
        has_touch=phone,
        device_scale_factor=2 if phone else 1,
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    # A Content-Security-Policy violation (an inline style or script) is reported as a
    # console error; so is any script error.
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield request.param, page
    assert errors == [], errors


def state(page) -> dict:
    return page.evaluate(STATE)


def wait_for_state(page, condition: str) -> None:
    """Wait until `condition` (JavaScript on the player's state `s`) holds."""
    page.wait_for_function(f"() => (s => {condition})({STATE})")


def check_layout(page, slots: list[str], size: str) -> None:
    width = page.evaluate("window.innerWidth")
    assert no_horizontal_scroll(page), f"the MUSHRA page scrolls sideways at {size}"
    for box in page.evaluate(CONTROL_BOXES):
        assert box["left"] >= 0 and box["right"] <= width + 1, f"{box['id']} is off screen"
    sliders = [page.locator(f'input.mushra-slider[data-slot="{s}"]').bounding_box() for s in slots]
    buttons = [page.locator(f'button.mushra-play[data-slot="{s}"]').bounding_box() for s in slots]
    # one vertical slider per sample, side by side, each under its own play button
    for i, (slider, button) in enumerate(zip(sliders, buttons, strict=True)):
        assert slider["height"] >= 200  # (vertical: checked below by where a touch lands)
        assert slider["width"] >= 44, "a slider column narrower than a finger"
        assert abs(slider["y"] - sliders[0]["y"]) < 1
        assert button["y"] + button["height"] <= slider["y"] + 1
        centre = slider["x"] + slider["width"] / 2
        assert button["x"] <= centre <= button["x"] + button["width"]
        if i:
            assert slider["x"] > sliders[i - 1]["x"] + sliders[i - 1]["width"] - 1
    # the sliders share out the width left of the scale: the last column ends at the content's
    # right edge, and on a phone they fill most of the screen
    content = page.locator(".mushra-items").bounding_box()
    assert sliders[-1]["x"] + sliders[-1]["width"] >= content["x"] + content["width"] - 2
    used = sum(s["width"] for s in sliders)
    assert used >= (0.6 if size == "phone" else 0.5) * width
    # the five bands, top to bottom, beside the first slider and spanning its travel
    names = page.locator(".mushra-band-name")
    assert names.all_inner_texts() == BANDS
    bands = [page.locator(".mushra-band").nth(i).bounding_box() for i in range(5)]
    # (inset by half a thumb: they span the thumb's travel; see below that a touch on a band
    # gives a score in it)
    assert 0 < bands[0]["y"] - sliders[0]["y"] < 15
    assert 0 < sliders[0]["y"] + sliders[0]["height"] - bands[-1]["y"] - bands[-1]["height"] < 15
    for band in range(5):
        label = names.nth(band).bounding_box()
        assert label["x"] + label["width"] <= sliders[0]["x"] + 1
    # labels meant for screen readers only take no room on screen
    hidden = page.locator("#mushra .visually-hidden").first.bounding_box()
    assert hidden["width"] <= 1 and hidden["height"] <= 1
    page.locator(".mushra-keys").scroll_into_view_if_needed()
    assert page.locator(".mushra-keys").is_visible()
    assert "loop on / off" in page.inner_text(".mushra-keys")


def assert_player_loops(page, start: float, end: float, tolerance: float = 0.05) -> None:
    now = state(page)
    assert now["loop"]["on"]
    assert abs(now["loop"]["start"] - start) < tolerance, now["loop"]
    assert abs(now["loop"]["end"] - end) < tolerance, now["loop"]
    # every playing source (one per clip) loops over exactly that region
    assert len(now["sourceLoops"]) == 6
    for loop_start, loop_end in now["sourceLoops"]:
        assert loop_start == pytest.approx(now["loop"]["start"], abs=1e-6)
        assert loop_end == pytest.approx(now["loop"]["end"], abs=1e-6)


def test_mushra_page_in_chromium(app, live_server, sized_page):
    size, page = sized_page
    with app.app_context():
        entry = db.session.scalar(select(Study.entry_token))
    page.goto(f"{live_server}/join/{entry}")
    with page.expect_navigation():
        page.click("#start")
    assert trial_type(page) == "consent"
    page.check('input[name="consent"]')
    with page.expect_navigation():
        page.click("#submit")
    assert trial_type(page) == "mushra"
    page.wait_for_selector('#mushra[data-loaded="true"]', timeout=30_000)
    slots = page.eval_on_selector_all("input.mushra-slider", "els => els.map(e => e.dataset.slot)")
    assert len(slots) == 5

    # the Reference's waveform is drawn
    pixels = page.evaluate(INKED_PIXELS)
    assert pixels["total"] > 0 and pixels["inked"] > 0.05 * pixels["total"], pixels
    check_layout(page, slots, size)
    duration = state(page)["duration"]
    assert duration == pytest.approx(3.0, abs=0.05)

    # keyboard: R plays the Reference, 1-5 switch between the samples at the running playhead
    page.keyboard.press("r")
    # (its first play: audible once fetched and decoded)
    wait_for_state(page, "s.audible === 'ref'")
    page.wait_for_timeout(400)
    before = state(page)
    clock = time.monotonic()
    assert before["slot"] == "ref" and before["position"] > 0.1
    assert page.get_attribute("#mushra-ref", "aria-pressed") == "true"
    for i, slot in enumerate(slots, 1):
        page.keyboard.press(str(i))
        page.wait_for_timeout(120)
        assert state(page)["slot"] == slot
        assert page.get_attribute(f'button.mushra-play[data-slot="{slot}"]', "aria-pressed") == (
            "true"
        )
    after = state(page)
    elapsed = time.monotonic() - clock
    # five switches later the one shared playhead has moved on with the clock (modulo the 3 s
    # clip), never restarted
    off = (after["position"] - before["position"] - elapsed) % duration
    assert min(off, duration - off) < 0.15, (before, after, elapsed)
    # (the buttons by pointer too)
    page.click(f'button.mushra-play[data-slot="{slots[0]}"]')
    assert state(page)["slot"] == slots[0]
    wait_for_state(page, "s.decoded.length === 6")  # (each fetched on its first play)

    # a loop region dragged on the waveform (by finger on the phone): the player loops
    # exactly there
    drag_loop(page, 0.6, 1.8, duration, touch=size == "phone")
    page.wait_for_timeout(100)
    assert_player_loops(page, 0.6, 1.8)
    assert state(page)["slot"] == slots[0]
    for _ in range(6):  # 1.5 s: it came round the loop at least once and stayed inside it
        page.wait_for_timeout(250)
        assert 0.6 - 0.05 <= state(page)["position"] <= 1.8 + 0.05
    assert "0.6" in page.inner_text("#mushra-loop-text")
    # L (and the Loop button) turn it off and on: off, the whole clip plays
    page.keyboard.press("l")
    now = state(page)
    assert not now["loop"]["on"] and now["sourceLoops"][0] == [0, pytest.approx(duration)]
    assert page.get_attribute("#mushra-loop", "aria-pressed") == "false"
    page.click("#mushra-loop")
    assert_player_loops(page, 0.6, 1.8)

    # keyboard fallback: [ and ] set the loop's start and end at the playhead
    page.locator("#mushra-wave").focus()
    page.keyboard.press("Home")  # the focused waveform: Home = the region's start
    assert state(page)["position"] == pytest.approx(0.6, abs=0.1)
    page.keyboard.press("l")  # loop off: Home and the arrows reach the whole clip
    page.keyboard.press("Home")
    for _ in range(2):
        page.keyboard.press("ArrowRight")  # +0.25 s each
    mark = state(page)["position"]
    assert mark == pytest.approx(0.5, abs=0.25)
    page.keyboard.press("[")
    start = state(page)["loop"]["start"]
    assert start == pytest.approx(mark, abs=0.1)
    page.wait_for_timeout(500)
    page.keyboard.press("]")
    end = state(page)["loop"]["end"]
    assert end - start == pytest.approx(0.5, abs=0.25)
    assert_player_loops(page, start, end)

    # S stops
    page.keyboard.press("s")
    assert state(page)["slot"] is None and state(page)["sourceLoops"] == []
    assert state(page)["position"] == pytest.approx(start)  # back to the loop's start
    assert page.evaluate("document.getElementById('mushra').dataset.playing") == ""
    plays = {s: page.input_value(f'input[name="plays_{s}"]') for s in ["ref", *slots]}
    assert plays == {"ref": "1", slots[0]: "2", **{s: "1" for s in slots[1:]}}

    # sliders start unset (no handle, no value) and each must be set before Next unlocks
    assert page.locator("input.mushra-slider.unset").count() == 5
    assert all(page.input_value(f'input[name="score_{s}"]') == "" for s in slots)
    assert page.is_disabled("#submit")
    scores = {}
    for i, slot in enumerate(slots):
        selector = f'input.mushra-slider[data-slot="{slot}"]'
        assert page.is_disabled("#submit"), f"Next enabled with {5 - i} sliders unset"
        if i == 0:
            # pointer: a touch level with the middle of the "Good" band is a score of about
            # 70 (the top is 100: the slider really is vertical, and the bands are drawn
            # where their scores are)
            page.locator(selector).scroll_into_view_if_needed()
            box = page.locator(selector).bounding_box()
            good = page.locator(".mushra-band").nth(1).bounding_box()
            page.mouse.click(box["x"] + box["width"] / 2, good["y"] + good["height"] / 2)
            scores[slot] = page.input_value(selector)
            assert 68 <= int(scores[slot]) <= 72, scores[slot]
            if size == "phone":
                # a finger dragged up the slider moves it (it does not scroll the page)
                scroll = page.evaluate("window.scrollY")
                x = box["x"] + box["width"] / 2
                fair = page.locator(".mushra-band").nth(2).bounding_box()
                top = page.locator(".mushra-band").nth(0).bounding_box()["y"]
                start_y = fair["y"] + fair["height"] / 2
                touch_drag(page, [(x, start_y + (top - start_y) * i / 8) for i in range(9)])
                scores[slot] = page.input_value(selector)
                assert int(scores[slot]) >= 98, scores[slot]
                assert page.evaluate("window.scrollY") == scroll
        else:
            page.focus(selector)
            # keys: up 1, page up 10, Home 0, End 100
            if i == 1:
                page.keyboard.press("ArrowUp")  # from the unset resting place, 50
                scores[slot] = "51"
            elif i == 2:
                page.keyboard.press("PageUp")
                page.keyboard.press("ArrowDown")
                scores[slot] = "59"
            elif i == 3:
                page.keyboard.press("Home")
                page.keyboard.press("PageUp")
                page.keyboard.press("PageUp")
                scores[slot] = "20"
            else:
                page.keyboard.press("End")
                scores[slot] = "100"
            assert page.input_value(selector) == scores[slot]
        assert page.input_value(f'input[name="score_{slot}"]') == scores[slot]
        assert page.inner_text(f'output[data-for="{slot}"]') == scores[slot]
        assert page.locator(selector).evaluate("e => e.classList.contains('unset')") is False
    assert page.get_attribute(f'input.mushra-slider[data-slot="{slots[3]}"]', "aria-valuetext") == (
        "20, poor"
    )
    assert page.input_value('input[name="moved"]') == "all"
    assert page.is_enabled("#submit")
    check_layout(page, slots, size)

    if os.environ.get("SIGHTSOUND_SCREENSHOTS"):
        # a loop region on the waveform and the playhead inside it, for the README
        drag_loop(page, 0.8, 2.1, duration)
        page.locator("#mushra-wave").focus()
        page.keyboard.press("Home")
        page.keyboard.press("ArrowRight")
        page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
        folder = Path(os.environ["SIGHTSOUND_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"mushra-{size}.png"), full_page=True)

    with page.expect_navigation():
        page.click("#submit")
    assert trial_type(page) == "mushra"  # the block's second screen

    with app.app_context():
        study = db.session.scalar(select(Study))
        rows = list(csv.DictReader(io.StringIO(responses_csv(study))))
    screen = [r for r in rows if r["trial_type"] == "mushra"]
    assert {r["stimulus_slot"]: r["mushra_score"] for r in screen} == scores
    assert {r["stimulus_slot"]: r["plays"] for r in screen} == {s: plays[s] for s in slots}


# ---- fetch on first play ------------------------------------------------------------------
# Issue 23: the page fetches a slot's audio the first time it is played, never on load, so the
# server's listening evidence (listening.py) means something: a screen rated without playing
# shows nothing fetched and is flagged unheard; one with every clip played shows each whole.

# Records, from before any page script runs, what the player asks Web Audio for (gain ramps and
# source starts, on the context's clock) and each key press, so the delay from a key press to
# the clip becoming audible can be read off the context's own clock.
AUDIO_PROBE = """
(() => {
  const log = window.__audioLog = [];
  const Base = window.AudioContext;
  window.AudioContext = class extends Base {
    constructor(...args) { super(...args); window.__audioContext = this; }
  };
  const ramp = AudioParam.prototype.linearRampToValueAtTime;
  AudioParam.prototype.linearRampToValueAtTime = function (value, end) {
    log.push({kind: 'ramp', value: value, end: end, wall: performance.now()});
    return ramp.call(this, value, end);
  };
  const start = AudioBufferSourceNode.prototype.start;
  AudioBufferSourceNode.prototype.start = function (when, offset) {
    log.push({kind: 'start', when: when, offset: offset, wall: performance.now()});
    return start.apply(this, arguments);
  };
  window.addEventListener('keydown', (e) => {
    const ctx = window.__audioContext;
    log.push({kind: 'key', key: e.key, wall: performance.now(),
              ctx: ctx ? ctx.currentTime : null});
  }, true);
})();
"""


@pytest.fixture
def desktop_page(chromium):
    page = chromium.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(30_000)
    page.add_init_script(AUDIO_PROBE)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    audio_requests: list[str] = []  # the slots of every media request, in order
    page.on(
        "request",
        lambda r: audio_requests.append(r.url.rsplit("/", 1)[1]) if "/m/" in r.url else None,
    )
    yield page, audio_requests
    assert errors == [], errors


def open_mushra_screen(app, live_server, page) -> list[str]:
    """Join, consent, and stand on the first MUSHRA screen, ready; its sample slots."""
    with app.app_context():
        entry = db.session.scalar(select(Study.entry_token))
    page.goto(f"{live_server}/join/{entry}")
    with page.expect_navigation():
        page.click("#start")
    page.check('input[name="consent"]')
    with page.expect_navigation():
        page.click("#submit")
    assert trial_type(page) == "mushra"
    page.wait_for_selector('#mushra[data-loaded="true"]', timeout=30_000)
    return page.eval_on_selector_all("input.mushra-slider", "els => els.map(e => e.dataset.slot)")


def set_every_slider(page, slots: list[str]) -> None:
    for slot in slots:
        page.focus(f'input.mushra-slider[data-slot="{slot}"]')
        page.keyboard.press("End")
    page.locator("#submit").focus()  # (keys below must not reach a slider)
    assert page.input_value('input[name="moved"]') == "all"


def first_screen_evidence(app) -> tuple[dict[str, float], str]:
    """The export's listening evidence of the first MUSHRA screen: the fraction of each slot
    sent before the answer (slots never fetched absent) and its flag_unheard."""
    with app.app_context():
        study = db.session.scalar(select(Study))
        rows = list(csv.DictReader(io.StringIO(responses_csv(study))))
    screen = [r for r in rows if r["trial_type"] == "mushra"]
    assert screen and len({r["trial_index"] for r in screen}) == 1
    fetched = screen[0]["media_fetched"]
    fractions = {k: float(v) for k, v in (p.split(":") for p in fetched.split(";") if p)}
    flags = {r["flag_unheard"] for r in screen}
    assert len(flags) == 1
    return fractions, flags.pop()


def test_a_screen_rated_without_playing_fetched_nothing(app, live_server, desktop_page):
    """On load the page fetches the Reference's outline (to draw it), no audio; a participant
    who sets every slider without playing anything is flagged unheard, nothing fetched."""
    page, audio_requests = desktop_page
    slots = open_mushra_screen(app, live_server, page)
    pixels = page.evaluate(INKED_PIXELS)  # the Reference's waveform is drawn all the same
    assert pixels["inked"] > 0.05 * pixels["total"], pixels
    assert state(page)["duration"] == pytest.approx(3.0, abs=0.05)
    set_every_slider(page, slots)
    with page.expect_navigation():
        page.click("#submit")
    fractions, unheard = first_screen_evidence(app)
    assert fractions == {}  # not one byte of any slot, the Reference included
    assert unheard == "1"
    assert audio_requests == []


def switch_delays(log: list[dict]) -> list[dict]:
    """Per key press: the delay to the audible start of the clip it selects, on the context's
    clock (the ramp of its gain to 1, or its source's start when that is later) and in wall
    time from the key to the script's scheduling of that ramp."""
    out = []
    for i, event in enumerate(log):
        if event["kind"] != "key" or event["ctx"] is None:
            continue
        later = log[i + 1 :]
        upto = next((j for j, e in enumerate(later) if e["kind"] == "key"), len(later))
        window = later[:upto]
        on = next((e for e in window if e["kind"] == "ramp" and e["value"] == 1), None)
        if on is None:
            continue
        started = [e["when"] for e in window if e["kind"] == "start" and e["wall"] <= on["wall"]]
        audible = max([on["end"] - 0.005, *started])
        out.append(
            {
                "key": event["key"],
                "ctx_ms": 1000 * (audible - event["ctx"]),
                "wall_ms": on["wall"] - event["wall"],
            }
        )
    return out


def test_played_slots_are_fetched_once_and_switch_in_step(app, live_server, desktop_page):
    """Each slot is fetched when first played, once; after that switching is as before the
    change (no fetch, the gain moves at once) and every source plays the shared playhead's
    sample; the evidence shows every slot whole and no flag."""
    page, audio_requests = desktop_page
    slots = open_mushra_screen(app, live_server, page)
    keys = ["r", *(str(i) for i in range(1, len(slots) + 1))]
    for key in keys:  # the first play of each: fetched and decoded then
        page.keyboard.press(key)
        page.wait_for_timeout(150)
    wait_for_state(page, f"s.decoded.length === {len(slots) + 1} && s.audible !== null")
    first = switch_delays(page.evaluate("window.__audioLog"))
    mark = len(page.evaluate("window.__audioLog"))
    for _ in range(3):  # switching after the first play
        for key in keys:
            page.keyboard.press(key)
            page.wait_for_timeout(60)
    later = switch_delays(page.evaluate("window.__audioLog")[mark:])
    print_delays("first play", first)
    print_delays("switch after first play", later)
    assert len(later) == 3 * len(keys)
    assert sorted(audio_requests) == sorted(["ref", *slots])  # each once, when first played
    assert state(page)["slot"] == slots[-1]

    # every source started on a frame of the context, at the offset the shared clock had
    # reached then: all six play the same sample at every moment
    now = state(page)
    rate, clock = now["sampleRate"], now["clock"]
    span = now["duration"]  # (no loop region: the whole clip)
    assert sorted(s["slot"] for s in now["sourceStarts"]) == sorted(["ref", *slots])
    for source in now["sourceStarts"]:
        assert source["when"] * rate == pytest.approx(round(source["when"] * rate), abs=1e-3)
        expected = (source["when"] - clock["startedAt"] + clock["offset"]) % span
        assert source["offset"] == pytest.approx(expected, abs=1e-6), source

    page.keyboard.press("s")
    set_every_slider(page, slots)
    with page.expect_navigation():
        page.click("#submit")
    fractions, unheard = first_screen_evidence(app)
    assert fractions == {slot: 1.0 for slot in ["ref", *slots]}
    assert unheard == "0"


def print_delays(what: str, delays: list[dict]) -> None:
    """The measured delays, for the record (run with -s): figures, not assertions."""
    ctx = sorted(d["ctx_ms"] for d in delays)
    wall = sorted(d["wall_ms"] for d in delays)
    if ctx:
        print(
            f"\n{what}: n={len(ctx)} audio-clock delay median {ctx[len(ctx) // 2]:.1f} ms "
            f"max {ctx[-1]:.1f} ms; key to scheduling median {wall[len(wall) // 2]:.1f} ms "
            f"max {wall[-1]:.1f} ms"
        )
