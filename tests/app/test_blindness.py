"""Nothing a participant's browser receives may reveal a clip's condition.

We play a whole session and keep every response (HTML, audio, video, redirects); then scan
bodies, URLs and headers for condition names, clip/segment/source ids and file names, and check
that audio responses are indistinguishable but for their samples.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from flow import read_page, start, valid_answer
from sqlalchemy import select

from study_app.extensions import db
from study_app.models import Clip, Participant, Segment, Study, Trial
from study_app.stimulus_set import load_stimulus_set


def wav_chunks(data: bytes) -> list[str]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    chunks, offset = [], 12
    while offset + 8 <= len(data):
        name, size = struct.unpack("<4sI", data[offset : offset + 8])
        chunks.append(name.decode("latin-1"))
        offset += 8 + size + (size & 1)
    return chunks


def secrets_of(app, demo_set_dir: Path) -> set[str]:
    stimuli = load_stimulus_set(demo_set_dir)
    names = set(stimuli.conditions())
    names |= {c.id for c in stimuli.clips} | {s.id for s in stimuli.segments}
    names |= {s.id for s in stimuli.sources}
    names |= {c.path.name for c in stimuli.clips} | {c.path.stem for c in stimuli.clips}
    names |= {s.video.name for s in stimuli.sources}
    names.add(str(demo_set_dir))
    with app.app_context():
        names |= set(db.session.scalars(select(Clip.media_file)))
        names |= {v for v in db.session.scalars(select(Segment.video_file)) if v}
    return names


DATA = Path(__file__).parents[1] / "data"
DEMO_DESIGN = Path(__file__).parents[2] / "stimuli" / "demo_study.yaml"
# Every trial type, on the stimulus set it needs (P.808 trapping clips need 5 s clips).
STUDIES = {
    "demo": (DEMO_DESIGN, "demo_set_dir"),
    "mushra-similarity-fit": (DATA / "mushra_similarity_fit_study.yaml", "demo_set_dir"),
    "p808-2afc": (DATA / "p808_2afc_study.yaml", "long_demo_set_dir"),
}
SCRIPT_SRC = re.compile(r'<script src="([^"]+)"')
PEAKS_SRC = re.compile(r'\sdata-peaks="([^"]+)"')  # the waveform outline a page's script fetches
# Names of items that are not conditions of the set but must stay hidden all the same.
HIDDEN_ITEMS = {
    "p808_gold_high",
    "p808_gold_low",
    "p808_trap",
    "anchor_lp35",
    "anchor_lp70",
    "lp35",
    "lp70",
    "hidden_reference",
    "p808_tones",
}


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_nothing_participant_facing_names_a_condition(request, app, client, make_study, study):
    design, set_fixture = STUDIES[study]
    set_dir = request.getfixturevalue(set_fixture)
    _, token = make_study(design, set_dir)
    forbidden = secrets_of(app, set_dir) | HIDDEN_ITEMS
    seen: list[tuple[str, dict, bytes]] = []  # (url, headers, body)

    def fetch(method, url, **kwargs):
        response = getattr(client, method)(url, **kwargs)
        seen.append((url, dict(response.headers), response.get_data()))
        return response

    fetch("get", f"/join/{token}")
    step = fetch("post", f"/join/{token}").headers["Location"]
    audio_headers_by_trial = []
    for _ in range(100):
        page = read_page(fetch("get", step))
        if page.trial_type is None:
            break
        headers_of_trial = {}
        for url in page.media:
            response = fetch("get", url)
            assert response.status_code == 200
            headers_of_trial[url.rsplit("/", 1)[1]] = dict(response.headers)
            if response.mimetype == "audio/wav":
                assert wav_chunks(response.get_data()) == ["fmt ", "data"]
        for url in PEAKS_SRC.findall(page.html):
            assert fetch("get", url).status_code == 200
        audio_headers_by_trial.append((page.trial_type, headers_of_trial))
        response = fetch("post", page.action, data=valid_answer(app, page))
        assert response.status_code == 303, page.trial_type
    else:
        raise AssertionError("study did not end")
    # the scripts the pages load are participant-facing too
    pages = [
        body.decode("utf-8")
        for _, h, body in seen
        if h.get("Content-Type", "").startswith("text/html")
    ]
    for script in sorted({src for html in pages for src in SCRIPT_SRC.findall(html)}):
        assert fetch("get", script).status_code == 200

    with app.app_context():
        tokens = {t for (t,) in db.session.execute(select(Trial.token))}
        tokens |= set(db.session.scalars(select(Participant.token)))
        tokens.add(token)

    def scrub(text: str) -> str:
        for value in tokens:  # random tokens could contain a short id by chance
            text = text.replace(value, "<token>")
        return text

    for url, headers, body in seen:
        texts = [scrub(url)] + [scrub(f"{k}: {v}") for k, v in headers.items()]
        if headers.get("Content-Type", "").startswith(("text/", "application/javascript")):
            texts.append(scrub(body.decode("utf-8")))
        for text in texts:
            for secret in forbidden:
                assert not re.search(
                    rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", text
                ), f"{secret!r} leaked in {url}"

    for trial_type, headers_by_slot in audio_headers_by_trial:
        for slot_headers in headers_by_slot.values():
            assert "ETag" not in slot_headers
            assert "Content-Disposition" not in slot_headers
        # Every audio slot of a trial looks the same on the wire (same length, no validators
        # that differ): ABX's A, B and X; MUSHRA's reference, hidden reference, anchors and
        # conditions; the 2AFC's A and B.
        if trial_type == "headphone_check":
            continue  # screening tones and the calibration noise: no condition to hide
        comparable = {
            frozenset((k, v) for k, v in h.items() if k != "Date")
            for h in headers_by_slot.values()
            if h.get("Content-Type") == "audio/wav"
        }
        assert len(comparable) <= 1, trial_type


def test_audio_supports_range_requests(app, client, demo_study):
    with app.app_context():
        token = db.session.scalar(select(Study.entry_token))
    step = start(client, token)
    client.post(read_page(client.get(step)).action, data={"consent": "yes"})
    page = read_page(client.get(step))
    tones = next(u for u in page.media if u.endswith("/m/tones"))
    full = client.get(tones)
    partial = client.get(tones, headers={"Range": "bytes=0-99"})
    assert partial.status_code == 206
    assert partial.headers["Content-Range"] == f"bytes 0-99/{len(full.get_data())}"
    assert partial.get_data() == full.get_data()[:100]
    assert partial.headers["Accept-Ranges"] == "bytes"
    tail = client.get(tones, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.get_data() == full.get_data()[-10:]


def test_abx_slots_are_never_byte_identical(app, client, demo_study):
    """X is a copy of A or B, but each slot is served with its own inaudible dither, so a
    participant cannot find the answer by comparing downloads."""
    import numpy as np

    with app.app_context():
        token = db.session.scalar(select(Study.entry_token))
    step = start(client, token)
    for _ in range(200):
        page = read_page(client.get(step))
        if page.trial_type == "abx":
            break
        data = {"consent": {"consent": "yes"}, "headphone_check": {"answer": "1"}}.get(
            page.trial_type, {"valence": "5", "arousal": "5", "fit": "4", "tempo": "4"}
        )
        client.post(page.action, data=data)
    bodies = {url.rsplit("/", 1)[1]: client.get(url).get_data() for url in page.media}
    assert len({bodies["a"], bodies["b"], bodies["x"]}) == 3
    assert len(bodies["a"]) == len(bodies["b"]) == len(bodies["x"])
    samples = {k: np.frombuffer(v[44:], dtype="<i2").astype(int) for k, v in bodies.items()}
    # ...yet X still is A or B to within one least significant bit of 16-bit audio
    closest = min(("a", "b"), key=lambda s: np.abs(samples[s] - samples["x"]).max())
    assert np.abs(samples[closest] - samples["x"]).max() <= 2
    other = "b" if closest == "a" else "a"
    assert np.abs(samples[other] - samples["x"]).max() > 100
    # the same slot gives the same bytes again, and Range requests agree with them
    x_url = next(u for u in page.media if u.endswith("/m/x"))
    assert client.get(x_url).get_data() == bodies["x"]
    part = client.get(x_url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.get_data() == bodies["x"][1000:2000]


def test_dither_is_triangular_one_lsb_and_clips_at_full_scale():
    """The served rendition is the canonical samples plus noise in {-1, 0, +1} (1/4, 1/2, 1/4),
    clipped to 16 bits, bit for bit as the plain widen-add-clip formula gives it."""
    import hashlib
    import struct

    import numpy as np

    from study_app.audio import dithered_rendition

    rng = np.random.default_rng(0)
    samples = rng.integers(-32768, 32768, 40_000).astype("<i2")
    samples[:10_000:2], samples[1:10_000:2] = 32767, -32768  # full scale, both ways
    header = b"RIFF" + struct.pack("<I", 36 + 2 * samples.size) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, 48_000, 96_000, 2, 16)
    header += b"data" + struct.pack("<I", 2 * samples.size)
    served = dithered_rendition(header + samples.tobytes(), "trial/x")
    assert served[:44] == header
    out = np.frombuffer(served[44:], dtype="<i2").astype(np.int32)

    seeded = np.random.default_rng(int.from_bytes(hashlib.sha256(b"trial/x").digest()[:8], "big"))
    bits = np.frombuffer(seeded.bytes(samples.size), dtype=np.uint8).astype(np.int32)
    expected = np.clip(samples.astype(np.int32) + (bits & 1) - ((bits >> 1) & 1), -32768, 32767)
    assert np.array_equal(out, expected)
    noise = out[10_000:] - samples[10_000:].astype(np.int32)
    shares = [np.mean(noise == step) for step in (-1, 0, 1)]
    assert np.allclose(shares, [0.25, 0.5, 0.25], atol=0.01)
    assert out[:10_000:2].max() == 32767 and out[1:10_000:2].min() == -32768
