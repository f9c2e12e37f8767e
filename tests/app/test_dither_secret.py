"""The per-slot dither is keyed by the server's SECRET_KEY: a participant who knows everything
their browser saw (URLs, pages, headers, the trial token and slot) cannot regenerate the noise,
so cannot subtract it to get the canonical file back and recognise a clip across sessions by
its bytes. Range requests of one slot still agree, and another key gives other bytes."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from flow import read_page, start, valid_answer
from sqlalchemy import select

from study_app.audio import dither_seed, dithered_rendition
from study_app.extensions import db
from study_app.models import Clip, Study, Trial
from study_app.trial_types import get_trial_type


def entry(app) -> str:
    with app.app_context():
        return db.session.scalar(select(Study.entry_token))


def first_abx(app, client, step: str, seen: list[str]):
    """Walk to the first ABX trial, keeping every page, URL and header the browser got."""
    for _ in range(100):
        response = client.get(step)
        seen.append(response.get_data(as_text=True))
        seen.extend(f"{k}: {v}" for k, v in response.headers.items())
        page = read_page(response)
        if page.trial_type == "abx":
            return page
        client.post(page.action, data=valid_answer(app, page))
    raise AssertionError("no ABX trial")


def clip_of(app, trial_token: str, slot: str) -> str | None:
    """The imported clip a slot plays (server side), None for anything else."""
    with app.app_context():
        trial = db.session.scalar(select(Trial).where(Trial.token == trial_token))
        ref = get_trial_type(trial.trial_type).media(trial.spec)[slot]
        return ref.key if ref.kind == "clip" else None


def canonical_of(app, trial_token: str, slot: str) -> bytes:
    """The canonical file behind a slot (server side: what the dither must keep hidden)."""
    key = clip_of(app, trial_token, slot)
    with app.app_context():
        name = db.session.scalar(select(Clip.media_file).where(Clip.key == key))
        return (Path(app.config["MEDIA_DIR"]) / name).read_bytes()


def test_the_noise_cannot_be_regenerated_from_what_the_browser_sees(app, client, demo_study):
    seen: list[str] = []
    step = start(client, entry(app))
    page = first_abx(app, client, step, seen)
    trial_token = page.action.rsplit("/", 1)[1]
    participant_token = step.strip("/").split("/")[1]
    x_url = next(u for u in page.media if u.endswith("/m/x"))
    response = client.get(x_url)
    served = response.get_data()
    seen.extend([x_url, *page.media, *(f"{k}: {v}" for k, v in response.headers.items())])
    canonical = canonical_of(app, trial_token, "x")
    assert served != canonical and len(served) == len(canonical)

    # Every seed a participant could build from what the browser had: the old derivation
    # (trial token / slot), the URLs, the tokens, each header and page, and HMACs keyed by them.
    visible = [trial_token, participant_token, "x", x_url, entry(app), *seen]
    candidates = {f"{trial_token}/x", f"{trial_token}/{'x'}", x_url, f"{participant_token}/x"}
    candidates |= set(visible)
    for key in (trial_token, participant_token, entry(app), ""):
        message = f"{trial_token}/x".encode()
        candidates.add(hmac.new(key.encode(), message, hashlib.sha256).hexdigest())
        candidates.add(dither_seed(key or "-", trial_token, "x"))
    for seed in candidates:
        assert dithered_rendition(canonical, seed) != served, seed[:60]
    # ...while the server's own secret does reproduce it: the candidates were built the way
    # the app builds its seed, and only the key was missing.
    own_seed = dither_seed(app.config["SECRET_KEY"], trial_token, "x")
    assert dithered_rendition(canonical, own_seed) == served


def test_two_sessions_differ_ranges_agree_and_the_key_matters(app, client, demo_study):
    first = start(client, entry(app))
    page = first_abx(app, client, first, [])
    trial_token = page.action.rsplit("/", 1)[1]
    mine_by_clip = {clip_of(app, trial_token, u.rsplit("/", 1)[1]): u for u in page.media}

    # another whole session, keeping the bytes of every clip it is served
    other = app.test_client()
    second = start(other, entry(app))
    theirs_by_clip: dict[str, bytes] = {}
    for _ in range(100):
        later = read_page(other.get(second))
        if later.trial_type is None:
            break
        for url in later.media:
            clip = clip_of(app, later.action.rsplit("/", 1)[1], url.rsplit("/", 1)[1])
            if clip is not None:
                theirs_by_clip[clip] = other.get(url).get_data()
        other.post(later.action, data=valid_answer(app, later))
    shared = sorted(set(mine_by_clip) & set(theirs_by_clip))
    assert shared, "the two sessions met no clip in common"
    for clip in shared:  # the same clip, other bytes (and so another hash), the same length
        mine, theirs = client.get(mine_by_clip[clip]).get_data(), theirs_by_clip[clip]
        assert mine != theirs and len(mine) == len(theirs)
    a_url = mine_by_clip[shared[0]]
    mine = client.get(a_url).get_data()

    # Range requests of one slot agree with the whole download, piece by piece
    pieces = [
        client.get(a_url, headers={"Range": f"bytes={lo}-{hi}"}).get_data()
        for lo, hi in ((0, 999), (1000, 4999), (5000, len(mine) - 1))
    ]
    assert b"".join(pieces) == mine

    # a different SECRET_KEY gives different bytes for the same slot; the rendition cache
    # (keyed by the seed) serves each key its own bytes, and the old ones again after
    secret = app.config["SECRET_KEY"]
    try:
        app.config["SECRET_KEY"] = "another-secret"
        rekeyed = client.get(a_url).get_data()
    finally:
        app.config["SECRET_KEY"] = secret
    assert rekeyed != mine and len(rekeyed) == len(mine)
    assert client.get(a_url).get_data() == mine


def test_dither_seed_is_keyed_and_separates_slots():
    seed = dither_seed("k", "tok", "x")
    assert seed == dither_seed(b"k", "tok", "x")
    assert len({seed, dither_seed("k2", "tok", "x"), dither_seed("k", "tok", "a")}) == 3
    # no ambiguity between (token, slot) splits
    assert dither_seed("k", "ab", "c") != dither_seed("k", "a", "bc")
