"""MUSHRA's "rate every sample" rule holds on the server, not only in mushra.js: sliders start
unset (no default score a participant could leave as an answer), an answer with an unset slider
or without the page's "every slider moved" mark is refused with a 400 naming the samples, and
every numeric field must be a finite number in its range. SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from flow import read_page, start
from sqlalchemy import func, select

from study_app.extensions import db
from study_app.models import Response

DESIGN = Path(__file__).parents[1] / "data" / "mushra_similarity_fit_study.yaml"


@pytest.fixture
def mushra_page(app, client, make_study):
    _, token = make_study(DESIGN)
    step = start(client, token)
    client.post(read_page(client.get(step)).action, data={"consent": "yes"})
    page = read_page(client.get(step))
    assert page.trial_type == "mushra"
    return page


def answers(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(Response.id)))


def complete(page) -> dict[str, str]:
    slots = re.findall(r'name="score_(s\d+)"', page.html)
    assert len(slots) == 5
    return {f"score_{s}": str(40 + i) for i, s in enumerate(slots)} | {"moved": "all"}


def test_sliders_start_unset(mushra_page):
    html = mushra_page.html
    # the submitted score fields are empty until the participant sets a slider...
    fields = re.findall(r'<input type="hidden" name="score_(s\d+)" value="([^"]*)">', html)
    assert len(fields) == 5 and all(value == "" for _, value in fields)
    # ...and the visible sliders submit nothing themselves (their resting value is no answer)
    sliders = re.findall(r'<input type="range"[^>]*>', html)
    assert len(sliders) == 5
    assert not any("name=" in s for s in sliders)
    assert all('class="mushra-slider unset"' in s for s in sliders)


def test_an_unset_slider_is_refused_naming_the_samples(app, client, mushra_page):
    data = complete(mushra_page)
    slots = [k for k in data if k.startswith("score_")]
    data[slots[1]] = ""  # set on the page's first load: empty
    del data[slots[3]]  # or not sent at all
    response = client.post(mushra_page.action, data=data)
    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert "not set yet: sample 2, sample 4" in text
    assert answers(app) == 1  # the consent only


def test_an_answer_without_the_moved_mark_is_refused(app, client, mushra_page):
    data = complete(mushra_page)
    for moved in (None, "", "some", "none"):
        sent = {k: v for k, v in data.items() if k != "moved"}
        if moved is not None:
            sent["moved"] = moved
        response = client.post(mushra_page.action, data=sent)
        assert response.status_code == 400, moved
        assert "Please move every slider" in response.get_data(as_text=True)
    assert answers(app) == 1
    assert client.post(mushra_page.action, data=data).status_code == 303
    assert answers(app) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("score", "nan"),
        ("score", "inf"),
        ("score", "-inf"),
        ("score", "1e2"),
        ("score", "101"),
        ("score", "-1"),
        ("score", "50.5"),
        ("score", "\uff15\uff10"),  # fullwidth "50": int() would take it
        ("plays_ref", "nan"),
        ("plays_ref", "-1"),
        ("rt_ms", "inf"),
        ("rt_ms", "nan"),
        ("rt_ms", "-5"),
    ],
)
def test_numeric_fields_must_be_finite_and_in_range(app, client, mushra_page, field, value):
    data = complete(mushra_page)
    if field == "score":
        field = next(k for k in data if k.startswith("score_"))
    data[field] = value
    response = client.post(mushra_page.action, data=data)
    assert response.status_code == 400
    assert field in response.get_data(as_text=True)  # the problem names the field
    assert answers(app) == 1


def test_a_complete_answer_keeps_the_scores_given(app, client, mushra_page):
    data = complete(mushra_page) | {"plays_ref": "2", "rt_ms": "12345.6"}
    assert client.post(mushra_page.action, data=data).status_code == 303
    with app.app_context():
        stored = db.session.scalars(select(Response.answer).order_by(Response.id)).all()[-1]
    assert stored["scores"] == {
        k.removeprefix("score_"): int(v) for k, v in data.items() if k.startswith("score_")
    }
    assert stored["plays"]["ref"] == 2 and stored["client_rt_ms"] in (12345, 12346)


# ---- the Reference's waveform outline (issue 23) ---------------------------------------------
# The page draws the Reference from an outline the server computes, so that drawing it fetches
# no audio (the media log, listening.py, then records only clips fetched to be played).

PEAKS_URL = re.compile(r'data-peaks="([^"]+)"')


def reference_file(app, trial_token: str) -> Path:
    from study_app.models import Clip, Trial

    with app.app_context():
        trial = db.session.scalar(select(Trial).where(Trial.token == trial_token))
        name = db.session.scalar(
            select(Clip.media_file).where(Clip.key == trial.spec["reference_clip"])
        )
    return Path(app.config["MEDIA_DIR"]) / name


def test_the_reference_outline_is_the_current_screens_only_and_fixed_in_size(
    app, client, make_study, mushra_page
):
    import numpy as np

    from study_app.audio import PEAK_BUCKETS, read_wav_info, read_wav_samples
    from study_app.export import responses_csv
    from study_app.models import Study, Trial

    url = PEAKS_URL.search(mushra_page.html).group(1)
    base, slot = url.rsplit("/peaks/", 1)
    token = mushra_page.action.rsplit("/", 1)[1]
    assert slot == "ref" and base.endswith(f"/t/{token}")
    got = client.get(url)
    assert got.status_code == 200 and got.mimetype == "application/octet-stream"
    assert got.headers["Cache-Control"] == "private, no-store"
    body = got.get_data()
    assert len(body) == 8 + 2 * PEAK_BUCKETS
    # the header is the Reference's length and rate; the pairs are its outline
    clip = reference_file(app, token)
    info = read_wav_info(clip)
    assert np.frombuffer(body[:8], "<u4").tolist() == [info.frames, info.sample_rate]
    pairs = np.frombuffer(body[8:], np.int8).reshape(PEAK_BUCKETS, 2)
    assert (pairs[:, 0] <= pairs[:, 1]).all()
    samples, _ = read_wav_samples(clip)
    assert pairs.max() == round(127 * float(samples.max()))
    assert pairs.min() == round(127 * float(samples.min()))
    # the open Reference only: a hidden slot's outline could tell an anchor from the rest
    for hidden in re.findall(r'name="score_(s\d+)"', mushra_page.html) + ["x", "video"]:
        assert client.get(f"{base}/peaks/{hidden}").status_code == 404, hidden
    # the next screen's (not reached yet) and another participant's: as if they did not exist
    with app.app_context():
        participant_id = db.session.scalar(select(Trial.participant_id).where(Trial.token == token))
        tokens = db.session.scalars(
            select(Trial.token)
            .where(Trial.participant_id == participant_id, Trial.trial_type == "mushra")
            .order_by(Trial.trial_index)
        ).all()
    assert tokens[0] == token
    next_url = url.replace(token, tokens[1])
    assert client.get(next_url).status_code == 404
    other = app.test_client()
    with app.app_context():
        entry = db.session.scalar(select(Study.entry_token))
    other_step = start(other, entry)
    other.post(read_page(other.get(other_step)).action, data={"consent": "yes"})
    other_page = read_page(other.get(other_step))
    other_url = PEAKS_URL.search(other_page.html).group(1)
    assert other.get(other_url).status_code == 200
    ours, theirs = url.split("/")[2], other_url.split("/")[2]
    assert client.get(other_url.replace(theirs, ours)).status_code == 404  # their screen's
    # once the screen is answered its outline is gone, and the next one's has the same size
    assert client.post(mushra_page.action, data=complete(mushra_page)).status_code == 303
    assert client.get(url).status_code == 404
    second = client.get(next_url)
    assert second.status_code == 200 and len(second.get_data()) == len(body)
    assert second.get_data() != body  # (another segment's Reference)
    # an outline is not audio fetched: the listening evidence does not count it
    with app.app_context():
        rows = list(csv.DictReader(io.StringIO(responses_csv(db.session.scalar(select(Study))))))
    screen = [r for r in rows if r["trial_type"] == "mushra"]
    assert screen and {r["media_fetched"] for r in screen} == {""}


def test_an_outline_has_one_size_whatever_the_clip(tmp_path):
    """8 + 2 * PEAK_BUCKETS bytes for a clip of 10 frames, 3 s stereo or 7 s mono at another
    rate; each bucket the min and max of its share of the frames, over every channel."""
    import numpy as np

    from study_app.audio import PEAK_BUCKETS, waveform_peaks, write_wav

    clips = {
        "tiny": (np.linspace(-1, 1, 10), 48_000),
        "stereo": (0.5 * np.sin(np.arange(3 * 44_100)[:, None] / [7.0, 11.0]), 44_100),
        "long": (0.1 * np.sin(np.arange(7 * 16_000) / 5.0), 16_000),
    }
    for name, (samples, rate) in clips.items():
        write_wav(tmp_path / f"{name}.wav", samples, rate)
        body = waveform_peaks(tmp_path / f"{name}.wav")
        assert len(body) == 8 + 2 * PEAK_BUCKETS, name
        assert np.frombuffer(body[:8], "<u4").tolist() == [len(samples), rate]
        pairs = np.frombuffer(body[8:], np.int8).reshape(-1, 2).astype(float) / 127
        frames = samples if samples.ndim == 2 else samples[:, None]
        edges = np.arange(PEAK_BUCKETS + 1) * len(frames) // PEAK_BUCKETS
        for b in (0, PEAK_BUCKETS // 3, PEAK_BUCKETS - 1):
            part = frames[edges[b] : edges[b + 1]]
            want = [part.min(), part.max()] if len(part) else [0.0, 0.0]
            assert pairs[b] == pytest.approx(want, abs=1 / 127), (name, b)
