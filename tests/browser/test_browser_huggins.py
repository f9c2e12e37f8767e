"""The Huggins-pitch screen (Milne et al., 2021) in Chromium: the physical fact it rests on.

Two participants take a 6-trial Huggins block. Each plays every trial on the page as served
(two channels, dithered per slot), and a detector written in Web Audio picks the interval:
it renders, in an OfflineAudioContext, what reaches the two ears, takes left ear minus right ear,
band-passes it at 600 Hz and picks the interval with the most energy there.

- "headphones": each channel reaches its own ear. The target interval is the only one where the
  ears differ, so the detector finds it every time and the participant passes (6 of 6).
- "loudspeakers": the two channels are summed in Web Audio into one signal (a mono downmix, as
  two loudspeakers mix in the air) and that signal reaches both ears. The ears then receive the
  same signal, the interaural difference is exactly zero in every interval, and the same detector
  has nothing to choose by: it falls back to the first interval, which with the targets balanced
  over positions (2 per interval) is right 2 of 6 times, chance, and the participant fails the
  screen and is screened out.

SQLite only; marked slow and browser.
"""

from __future__ import annotations

import csv
import io

import pytest
from browser import RECORD_ENDED, play_to_end, trial_type
from sqlalchemy import select

from study_app.export import responses_csv
from study_app.extensions import db
from study_app.models import Study

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.sqlite_only]

DESIGN = {
    "format": "sightsound-design/1",
    "slug": "huggins-browser",
    "title": "Huggins screen",
    "stimulus_set": "demo",
    "completion": {"code": "HP-DONE", "screened_out_code": "HP-OUT"},
    "blocks": [
        {
            "id": "screen",
            "type": "headphone_check",
            "method": "huggins",
            "trials": 6,
            "pass_threshold": 5,
            "exclude_on_fail": True,
        },
        {"id": "debrief", "type": "debrief", "text": "Thanks."},
    ],
}

# The detector. `mix` is "headphones" (each channel to its own ear) or "loudspeakers" (the two
# channels summed into one signal that reaches both ears). Returns the energy of the interaural
# difference near 600 Hz in each 1-s interval (the intervals start at 0, 1.5 and 3 s).
DETECT = """
async (mix) => {
  const audio = document.getElementById('audio-tones');
  const bytes = await (await fetch(audio.currentSrc)).arrayBuffer();
  const buffer = await new OfflineAudioContext(2, 1, 44100).decodeAudioData(bytes);
  const ctx = new OfflineAudioContext(2, buffer.length, buffer.sampleRate);
  const source = new AudioBufferSourceNode(ctx, {buffer: buffer});
  let ears;
  if (mix === 'loudspeakers') {
    const mono = new GainNode(ctx, {
      channelCount: 1, channelCountMode: 'explicit', channelInterpretation: 'speakers'});
    source.connect(mono);  // the stereo -> mono downmix: (L + R) / 2
    ears = new ChannelMergerNode(ctx, {numberOfInputs: 2});
    mono.connect(ears, 0, 0);
    mono.connect(ears, 0, 1);
  } else {
    ears = new GainNode(ctx);  // left channel to the left ear, right to the right
    source.connect(ears);
  }
  const split = new ChannelSplitterNode(ctx, {numberOfOutputs: 2});
  ears.connect(split);
  const difference = new GainNode(ctx, {channelCount: 1, channelCountMode: 'explicit'});
  const minus = new GainNode(ctx, {gain: -1});
  split.connect(difference, 0);
  split.connect(minus, 1);
  minus.connect(difference);
  const band = new BiquadFilterNode(ctx, {type: 'bandpass', frequency: 600, Q: 600 / 72});
  difference.connect(band);
  band.connect(ctx.destination);
  source.start();
  const out = (await ctx.startRendering()).getChannelData(0);
  const rate = buffer.sampleRate;
  return [0, 1, 2].map(function (i) {
    let energy = 0;
    const from = Math.round(i * 1.5 * rate), to = from + rate;
    for (let k = from; k < to; k++) energy += out[k] * out[k];
    return energy;
  });
}
"""


def take_screen(browser, url: str, mix: str) -> tuple[list[list[float]], str]:
    """One participant (own browser context, own cookies) answers with the detector's choice:
    the interval with the most energy, the first one on a tie. Returns the detector's energies
    per trial and the completion code shown at the end."""
    context = browser.new_context()
    context.add_init_script(RECORD_ENDED)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    with page.expect_navigation():
        page.click("#start")
    energies: list[list[float]] = []
    for _ in range(10):
        page.wait_for_load_state()
        if trial_type(page) != "headphone_check":
            break
        assert "faint tone" in page.inner_text("#trial-form")
        assert page.is_disabled("#submit")
        play_to_end(page, "tones")  # as a participant must: the answers unlock after it
        scores = page.evaluate(DETECT, mix)
        energies.append(scores)
        choice = str(scores.index(max(scores)) + 1)
        page.check(f'input[name="answer"][value="{choice}"]')
        with page.expect_navigation():
            page.click("#submit")
    if trial_type(page) == "debrief":
        with page.expect_navigation():
            page.click("#submit")
    page.wait_for_selector("#completion-code")
    code = page.inner_text("#completion-code")
    context.close()
    return energies, code


def test_huggins_detector_hears_headphones_but_not_loudspeakers(app, live_server, chromium):
    with app.app_context():
        entry = db.session.scalar(select(Study.entry_token))
    url = f"{live_server}/join/{entry}"
    headphones, code_headphones = take_screen(chromium, url, "headphones")
    loudspeakers, code_loudspeakers = take_screen(chromium, url, "loudspeakers")

    assert len(headphones) == len(loudspeakers) == 6
    for scores in headphones:
        top, rest = max(scores), sorted(scores)[:2]
        # The target stands far above the others, whose ears differ only by the dither.
        assert top > 1000 * max(rest), scores  # more than 30 dB (measured: see the report)
    # Summed into one signal, both ears get the same samples: no interaural difference at all.
    assert all(max(scores) == 0.0 for scores in loudspeakers), loudspeakers
    assert code_headphones == "HP-DONE"
    assert code_loudspeakers == "HP-OUT"  # failed the screen, session ended

    with app.app_context():
        study = db.session.scalar(select(Study))
        rows = list(csv.DictReader(io.StringIO(responses_csv(study))))
    by_person: dict[str, list[dict]] = {}
    for row in rows:
        by_person.setdefault(row["participant"], []).append(row)
    first, second = (
        by_person[p] for p in sorted(by_person, key=lambda p: by_person[p][0]["presented_at"])
    )
    for person in (first, second):
        assert [r["headphone_method"] for r in person] == ["huggins"] * 6
        assert sorted(r["correct_answer"] for r in person) == ["1", "1", "2", "2", "3", "3"]
    assert sum(int(r["correct"]) for r in first) == 6
    assert {r["flag_failed_screening"] for r in first} == {"0"}
    # the detector's fixed fallback against balanced targets: exactly chance, 2 of 6
    assert [r["answer"] for r in second] == ["1"] * 6
    assert sum(int(r["correct"]) for r in second) == 2
    assert {r["flag_failed_screening"] for r in second} == {"1"}
