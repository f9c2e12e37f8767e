"""Media at static-file cost (issue 24): under MEDIA_ACCEL_REDIRECT the app authorises a media
request and nginx sends the trial slot's rendition (X-Accel-Redirect), logging what it wrote;
the app ingests that log into the same per-slot evidence as when it sends the bytes itself.

The end-to-end test starts /usr/sbin/nginx (Debian package `nginx-light`) in front of a real
Werkzeug server and drives the same fetches through both paths. SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import http.client
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flow import evidence_of, read_page, shift_presented, start, valid_answer
from nginx_front import NGINX, PREFIX, accel, nginx_in_front
from sqlalchemy import select
from werkzeug.exceptions import NotFound

from study_app import media_accel
from study_app.audio import dither_seed, dithered_rendition
from study_app.export import responses_csv
from study_app.extensions import db
from study_app.models import Participant, Study, Trial
from study_app.services import MEDIA_MTIME
from study_app.trial_types import get_trial_type

# Headers that differ between any two servers and say nothing about a clip.
SERVER_HEADERS = {"server", "date", "connection", "keep-alive"}


def entry(app) -> str:
    with app.app_context():
        return db.session.scalar(select(Study.entry_token))


def to_first(app, client, step: str, kind: str):
    """Answer every trial before the first `kind` one (media read whole); its page."""
    for _ in range(100):
        page = read_page(client.get(step))
        if page.trial_type == kind:
            return page
        for url in page.media:
            client.get(url, buffered=True)
        assert client.post(page.action, data=valid_answer(app, page)).status_code == 303
    raise AssertionError("study did not end")


def media_of(page) -> dict[str, str]:
    return {url.rsplit("/", 1)[1]: url for url in page.media}


def token_of(page) -> str:
    return page.action.rsplit("/", 1)[1]


def export_row(app, trial_token: str) -> dict[str, str]:
    with app.app_context():
        trial = db.session.scalar(select(Trial).where(Trial.token == trial_token))
        public_id, index = trial.participant.public_id, str(trial.trial_index)
        text = responses_csv(db.session.scalar(select(Study)))
    (row,) = [
        r
        for r in csv.DictReader(io.StringIO(text))
        if r["participant"] == public_id and r["trial_index"] == index
    ]
    return row


def count_media_requests(app) -> list[str]:
    """From now on, the URL of every request the app's media route gets, in a list."""
    seen: list[str] = []
    view = app.view_functions["participant.media"]

    def counted(**kwargs):
        from flask import request

        seen.append(request.path)
        return view(**kwargs)

    app.view_functions["participant.media"] = counted
    return seen


# Renditions -------------------------------------------------------------------------------------


def test_rendition_names_are_opaque_and_keyed():
    name = media_accel.rendition_name("secret", "T" * 43, "a")
    assert len(name) == 40 and all(c in "0123456789abcdef" for c in name)
    others = {
        media_accel.rendition_name("secret", "T" * 43, "b"),
        media_accel.rendition_name("secret", "U" * 43, "a"),
        media_accel.rendition_name("other", "T" * 43, "a"),
    }
    assert name not in others and len(others) == 3
    # never the dither seed (which must stay secret), whatever its length
    assert not dither_seed("secret", "T" * 43, "a").startswith(name)


def test_evidence_keys_are_signed():
    key = media_accel.evidence_key("secret", 12, "x", 5000)
    assert media_accel.read_evidence_key("secret", key) == (12, "x", 5000)
    assert media_accel.read_evidence_key("other", key) is None
    forged = key.replace(".5000.", ".9000.")
    assert media_accel.read_evidence_key("secret", forged) is None
    assert media_accel.read_evidence_key("secret", "12.x.5000") is None


def test_the_accel_path_answers_with_the_app_paths_bytes_on_disk(app, client, demo_study, tmp_path):
    """The same participant's slot through both paths: the rendition on disk holds exactly the
    bytes the app path sends, under an opaque name, with the fixed mtime; no two slots of the
    trial are byte-identical; the browser-visible headers carry nothing new."""
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    urls = media_of(page)
    served = {slot: client.get(url, buffered=True) for slot, url in urls.items()}
    accel(app, tmp_path)
    rendered = {}
    for slot, url in urls.items():
        response = client.get(url, buffered=True)
        assert response.status_code == 200 and response.get_data() == b""
        name = media_accel.rendition_name("test-secret", token_of(page), slot)
        assert response.headers["X-Accel-Redirect"] == PREFIX + name
        assert response.headers["Content-Type"] == served[slot].headers["Content-Type"]
        assert response.headers["Cache-Control"] == served[slot].headers["Cache-Control"]
        assert "Content-Disposition" not in response.headers
        path = tmp_path / "renditions" / name
        rendered[slot] = path.read_bytes()
        assert rendered[slot] == served[slot].get_data()
        assert path.stat().st_mtime == MEDIA_MTIME
        evidence = response.headers["X-SightSound-Evidence"]
        key = media_accel.read_evidence_key("test-secret", evidence)
        assert key is not None and key[1:] == (slot, len(rendered[slot]))
    assert len(set(rendered.values())) == 3  # a, b, x: no two byte-identical
    # several ranges at once: 416 on both paths, counted on neither
    several = {"Range": "bytes=0-1,5-6"}
    assert client.get(urls["a"], headers=several, buffered=True).status_code == 416
    accel(app, tmp_path, on=False)
    assert client.get(urls["a"], headers=several, buffered=True).status_code == 416
    assert not list((tmp_path / "renditions").glob("*.tmp"))
    # each accel request counted (the throttle's window), no bytes until nginx's log says so
    assert {s: (r, n) for s, (r, _, n) in evidence_of(app, token_of(page)).items()} == {
        s: ([[0, len(rendered[s])]], 2) for s in "abx"
    }


def test_servers_racing_to_render_write_one_whole_file(tmp_path):
    header = b"RIFF" + (36 + 200_000).to_bytes(4, "little") + b"WAVEfmt " + bytes(20) + b"data"
    source = tmp_path / "clip.wav"
    source.write_bytes(header + (200_000).to_bytes(4, "little") + os.urandom(200_000))
    expected = dithered_rendition(source.read_bytes(), "seed")
    with ThreadPoolExecutor(8) as pool:
        sizes = list(
            pool.map(
                lambda _: media_accel.ensure_rendition(
                    tmp_path / "r", "n" * 40, source, "audio/wav", "seed"
                ),
                range(16),
            )
        )
    assert set(sizes) == {len(expected)}
    assert (tmp_path / "r" / ("n" * 40)).read_bytes() == expected
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["n" * 40]


# Disk budget ------------------------------------------------------------------------------------


def abx_through_nginx(app, client, tmp_path):
    """(step URL, the first ABX page, the renditions folder), its three slots fetched through
    the accel path, so their renditions are on disk."""
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    accel(app, tmp_path)
    for url in page.media:
        client.get(url, buffered=True)
    return step, page, tmp_path / "renditions"


def test_media_gc_keeps_the_current_trials_renditions_only(app, client, demo_study, tmp_path):
    step, page, renditions = abx_through_nginx(app, client, tmp_path)
    current = {p.name for p in renditions.iterdir()}
    assert len(current) == 3
    (renditions / ("f" * 40)).write_bytes(b"an answered trial's rendition")
    (renditions / ".stale.tmp").write_bytes(b"a crashed render")
    os.utime(renditions / ".stale.tmp", (0, 0))  # (ctime cannot be set: young, so kept)
    result = app.test_cli_runner().invoke(args=["media-gc"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in renditions.iterdir()} == current | {".stale.tmp"}
    with app.app_context():
        live = media_accel.live_names("test-secret")
    assert live >= current
    later = time.time() + 2 * 3600
    collected = media_accel.collect(renditions, live, now=later)
    assert collected.deleted == 1 and not (renditions / ".stale.tmp").exists()
    # over the byte budget: the oldest go first, until the rest fit
    sizes = sorted(p.stat().st_size for p in renditions.iterdir())
    collected = media_accel.collect(renditions, live, max_bytes=sizes[-1])
    assert collected.kept == 1 and collected.bytes_kept <= sizes[-1]
    # past the age limit (an abandoned session): gone, and made again on the next request
    media_accel.collect(renditions, live, max_age_hours=1, now=later)
    assert not list(renditions.iterdir())
    client.post(page.action, data=valid_answer(app, page))  # the next trial now
    page = read_page(client.get(step))
    for url in page.media:
        assert client.get(url, buffered=True).status_code == 200
    with app.app_context():
        assert media_accel.live_names("test-secret") == {p.name for p in renditions.iterdir()}


def test_an_answer_deletes_its_trials_renditions_at_once(app, client, demo_study, tmp_path):
    """Renditions live as long as their trial is current: the answer deletes them (without
    that they piled up until the next `media-gc`: 40 GB in ten minutes of 2,000
    participants). A repeated submit of the answered trial deletes nothing else."""
    step, page, renditions = abx_through_nginx(app, client, tmp_path)
    assert len(list(renditions.iterdir())) == 3
    unrelated = renditions / ("f" * 40)  # another participant's current trial
    unrelated.write_bytes(b"theirs")
    answer = valid_answer(app, page)
    assert client.post(page.action, data=answer).status_code == 303
    assert [p.name for p in renditions.iterdir()] == [unrelated.name]
    following = read_page(client.get(step))
    for url in following.media:
        assert client.get(url, buffered=True).status_code == 200
    fetched = {p.name for p in renditions.iterdir()} - {unrelated.name}
    assert len(fetched) == len(following.media)
    assert client.post(page.action, data=answer).status_code == 303  # the same answer again
    assert {p.name for p in renditions.iterdir()} == fetched | {unrelated.name}


def test_a_rendition_that_cannot_be_deleted_does_not_fail_the_answer(
    app, client, demo_study, tmp_path, monkeypatch
):
    """The answer is stored before its renditions are deleted: a deletion refused (EACCES)
    is logged and left to `media-gc`, and the participant gets the acknowledgement."""
    step, page, renditions = abx_through_nginx(app, client, tmp_path)

    def refused(self, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", refused)
    assert client.post(page.action, data=valid_answer(app, page)).status_code == 303
    monkeypatch.undo()
    assert len(list(renditions.iterdir())) == 3  # left for media-gc
    assert token_of(read_page(client.get(step))) != token_of(page)  # the answer counted


def test_a_full_renditions_folder_falls_back_to_the_app_path(
    app, client, demo_study, tmp_path, monkeypatch
):
    """No room for a rendition (ENOSPC: the memory folder full): the participant still gets
    the slot's own bytes, from the app path, which records them as evidence itself. Any other
    error (a missing clip) still fails as before."""
    import errno

    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    urls = media_of(page)
    expected = client.get(urls["a"], buffered=True).get_data()  # the app path's bytes
    accel(app, tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(media_accel, "ensure_rendition", full)
    response = client.get(urls["a"], buffered=True)
    assert response.status_code == 200 and "X-Accel-Redirect" not in response.headers
    assert response.get_data() == expected
    ranges, _, requests = evidence_of(app, token_of(page))["a"]
    assert ranges == [[0, len(expected)]] and requests == 2

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(media_accel, "ensure_rendition", broken)
    with pytest.raises(OSError):  # (testing mode lets the error through: a 500 otherwise)
        client.get(urls["b"], buffered=True)


# The log ---------------------------------------------------------------------------------------


def log_line(key: str, status: int, sent: int, content_range: str = "", at: float | None = None):
    at = time.time() if at is None else at
    fields = f'{at:.3f} rid{status}{sent} {status} {sent} "OK" "{key}" "{content_range}"'
    return f"sightsound-media/1 {fields}\n"


def test_ingest_merges_once_refuses_forgeries_and_late_bytes(app, client, demo_study, tmp_path):
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    accel(app, tmp_path)
    client.get(media_of(page)["a"], buffered=True)
    ((_, total, _),) = evidence_of(app, token_of(page)).values()
    with app.app_context():
        trial_id = db.session.scalar(select(Trial.id).where(Trial.token == token_of(page)))
    key = media_accel.evidence_key("test-secret", trial_id, "a", total)
    log = tmp_path / "media.log"
    log.write_text(
        log_line(key, 206, 100, f"bytes 0-99/{total}")
        + log_line(key.replace(key[-4:], "0000"), 200, total)  # forged: refused
        + log_line(key, 304, 0)  # no content
        + log_line(key, 206, 50, f"bytes 1000-1049/{total}")
        + "sightsound-media/1 17"  # nginx still writing this one
    )
    runner = app.test_cli_runner()
    result = runner.invoke(args=["ingest-media-log", str(log)])
    assert result.exit_code == 0, result.output
    assert "4 lines, 2 merged, 2 refused" in result.output
    assert evidence_of(app, token_of(page))["a"] == ([[0, 100], [1000, 1050]], total, 1)
    # again: nothing new read; the offset kept past the unfinished line
    assert "0 lines" in runner.invoke(args=["ingest-media-log", str(log)]).output
    # a second copy of the same lines (a rotated log read again) changes nothing
    again = tmp_path / "again.log"
    again.write_text(log.read_text().rsplit("\n", 1)[0] + "\n")
    with app.app_context():
        assert media_accel.ingest_media_log(again, "test-secret").merged == 2
    assert evidence_of(app, token_of(page))["a"] == ([[0, 100], [1000, 1050]], total, 1)
    # bytes whose response ended after the answer do not count
    client.post(page.action, data=valid_answer(app, page))
    with log.open("a") as f:
        f.write("0\n" + log_line(key, 200, total, at=time.time() + 5))
    with app.app_context():
        assert media_accel.ingest_media_log(log, "test-secret").merged == 0
    assert evidence_of(app, token_of(page))["a"][0] == [[0, 100], [1000, 1050]]


# Through nginx ---------------------------------------------------------------------------------


def fetch(port: int, url: str, headers: dict[str, str] | None = None, read: int | None = None):
    """A GET on its own connection: (status, headers, body). `read`: read so many bytes of
    the body and drop the connection (an aborted fetch)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", url, headers=headers or {})
    response = connection.getresponse()
    body = response.read(read) if read is not None else response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def same_fetches(port: int, urls: dict[str, str]) -> dict[str, dict[str, str]]:
    """The fetches both paths get: a whole (after an aborted start), b in Range pieces, x in
    part; the headers of each first answer."""
    seen = {}
    status, _, body = fetch(port, urls["a"], read=4096)  # aborted
    assert status == 200 and len(body) == 4096
    status, seen["a"], body = fetch(port, urls["a"])
    size = len(body)
    assert status == 200 and size > 100_000
    for piece in ("bytes=0-1", "bytes=2-99999", "bytes=100000-"):
        status, headers, _ = fetch(port, urls["b"], {"Range": piece})
        assert status == 206
        seen.setdefault("b", headers)
    for piece in ("bytes=0-1", "bytes=1000-5000"):
        status, headers, _ = fetch(port, urls["x"], {"Range": piece})
        assert status == 206
        seen.setdefault("x", headers)
    # a revalidation (no browser sends one for a no-store answer, but a script may)
    status, seen["a-304"], _ = fetch(
        port, urls["a"], {"If-Modified-Since": seen["a"]["last-modified"]}
    )
    assert status == 304
    return seen


def wait_for_log(log: Path, lines: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count("\n") >= lines:
            return
        time.sleep(0.05)
    raise AssertionError(f"nginx logged {log.read_text() if log.exists() else 'nothing'}")


@pytest.mark.skipif(
    NGINX is None and not os.environ.get("CI"),
    reason="nginx is not installed (apt-get install nginx-light); CI installs it",
)
@pytest.mark.parametrize(
    "throttle_in_proxy, direct",
    [(False, False), (True, False), (True, True)],
    ids=["app-counts", "log-counts", "direct"],
)
def test_evidence_through_nginx_equals_the_app_paths(
    app, client, demo_study, tmp_path, throttle_in_proxy, direct
):
    """The same fetches (an aborted start, whole, Range pieces, a part) of an ABX trial by two
    participants: one served by the app itself, one by nginx from renditions. The evidence rows
    and the export's evidence columns are identical; the headers a browser sees are the same
    (bar Server and Date); the internal location and the evidence key stay out of reach. With
    MEDIA_THROTTLE_IN_PROXY the app writes nothing per media request and the requests are
    counted from nginx's log: the same rows. With MEDIA_DIRECT the page rendered the trial's
    renditions and nginx sent every fetch without asking the app: the same rows again."""
    app.config["MEDIA_THROTTLE_IN_PROXY"] = throttle_in_proxy
    step_app = start(client, entry(app))
    page_app = to_first(app, client, step_app, "abx")
    other = app.test_client()
    step_nginx = start(other, entry(app))
    page_nginx = to_first(app, other, step_nginx, "abx")
    log = tmp_path / "media.log"
    with nginx_in_front(app, tmp_path) as (port, app_port):
        seen_app = same_fetches(app_port, media_of(page_app))
        accel(app, tmp_path, direct=direct)
        if direct:  # the page (shown again) renders the trial's renditions for nginx
            assert read_page(other.get(step_nginx)).media == page_nginx.media
        reached_app = count_media_requests(app)
        seen_nginx = same_fetches(port, media_of(page_nginx))
        # Under X-Accel every fetch was authorised by the app; sent directly, not one was.
        assert len(reached_app) == (0 if direct else 8)
        wait_for_log(log, 7)
        if throttle_in_proxy:  # nothing written until the log is ingested
            assert evidence_of(app, token_of(page_nginx)) == {}
        name = media_accel.rendition_name("test-secret", token_of(page_nginx), "a")
        status, _, _ = fetch(port, PREFIX + name)
        assert status == 404  # internal: not for clients
        # the app still authorises: another participant's trial is refused, as on the app path
        forged = media_of(page_nginx)["a"].replace(token_of(page_nginx), token_of(page_app))
        assert fetch(port, forged)[0] == fetch(app_port, forged)[0] == 404
        # several ranges at once: 416 from the app, as on the app path (and nothing counted)
        two_ranges = {"Range": "bytes=0-1,5-6"}
        assert fetch(port, media_of(page_nginx)["a"], two_ranges)[0] == 416
        assert fetch(app_port, media_of(page_app)["a"], two_ranges)[0] == 416
    for slot in ("a", "b", "x", "a-304"):
        assert not any(h.startswith("x-sightsound") or h == "etag" for h in seen_nginx[slot])
        assert "x-accel-redirect" not in seen_nginx[slot]
        if slot == "a-304":
            continue  # nginx's 304 states Last-Modified, Werkzeug's Accept-Ranges: either way
            # the same for every slot and condition, so it tells a participant nothing
        strip = {h: v for h, v in seen_app[slot].items() if h not in SERVER_HEADERS}
        assert {h: v for h, v in seen_nginx[slot].items() if h not in SERVER_HEADERS} == strip
    with app.app_context():
        result = media_accel.ingest_configured()
    assert result is not None and result.merged == 7  # (+ the refused internal fetch, the 304)
    expected = evidence_of(app, token_of(page_app))
    if not throttle_in_proxy:  # the app counts each request it authorises, the 304 too (the
        # app path counts what it sends a body for); only `requests` differs, never the bytes
        ranges, total, requests = expected["a"]
        expected["a"] = (ranges, total, requests + 1)
    assert evidence_of(app, token_of(page_nginx)) == expected
    rows = []
    for page, tester in ((page_app, client), (page_nginx, other)):
        shift_presented(app, token_of(page), 9.6)
        assert tester.post(page.action, data=valid_answer(app, page)).status_code == 303
        rows.append(export_row(app, token_of(page)))
    columns = ("media_fetched", "flag_unheard", "flag_too_quick")
    assert [rows[0][c] for c in columns] == [rows[1][c] for c in columns]
    assert (rows[0]["flag_unheard"], rows[0]["flag_too_quick"]) == ("1", "0")  # x: in part
    assert rows[0]["media_fetched"].startswith("a:1.00;b:1.00;x:0.0")


def test_export_ingests_the_log_first(app, client, demo_study, tmp_path):
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    accel(app, tmp_path)
    client.get(media_of(page)["a"], buffered=True)
    ((_, total, _),) = evidence_of(app, token_of(page)).values()
    with app.app_context():
        trial_id = db.session.scalar(select(Trial.id).where(Trial.token == token_of(page)))
    key = media_accel.evidence_key("test-secret", trial_id, "a", total)
    (tmp_path / "media.log").write_text(log_line(key, 200, total))
    with app.app_context():
        slug = db.session.scalar(select(Study.slug))
    result = app.test_cli_runner().invoke(args=["export", slug, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert evidence_of(app, token_of(page))["a"] == ([[0, total]], total, 1)


def test_the_flood_throttle_counts_accel_requests_at_once(app, client, demo_study, tmp_path):
    """Under X-Accel the app counts each request as it authorises it (nginx's log brings the
    bytes later), so a flood is refused as on the app path, before any log is ingested."""
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    accel(app, tmp_path)
    app.config["MEDIA_REQUESTS_PER_MINUTE"] = 5
    url = media_of(page)["a"]
    statuses = [client.get(url, buffered=True).status_code for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    assert evidence_of(app, token_of(page))["a"][2] == 5


@pytest.mark.skipif(
    NGINX is None and not os.environ.get("CI"),
    reason="nginx is not installed (apt-get install nginx-light); CI installs it",
)
def test_with_the_throttle_in_nginx_a_flood_is_refused_by_nginx(app, client, demo_study, tmp_path):
    """MEDIA_THROTTLE_IN_PROXY: nginx's limit_req (deploy/nginx-media*.conf.template, a burst
    of 300 per slot, then 5 a second) refuses a flood with the app's 429 text; the app wrote
    no row while serving, and the log's count of what was sent becomes the slot's requests."""
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    accel(app, tmp_path)
    app.config["MEDIA_THROTTLE_IN_PROXY"] = True
    url = media_of(page)["a"]
    with nginx_in_front(app, tmp_path) as (port, _):
        answers = [fetch(port, url, {"Range": "bytes=0-0"}) for _ in range(330)]
        statuses = [status for status, _, _ in answers]
        served = statuses.count(206)
        assert 300 <= served < 330 and set(statuses) == {206, 429}
        assert statuses[:300] == [206] * 300
        status, headers, body = answers[-1]
        assert status == 429 and headers["retry-after"] == "1"
        assert headers["cache-control"] == "no-store"
        assert body == b"Too many requests for this sound: try again shortly.\n"
        wait_for_log(tmp_path / "media.log", served)
        assert evidence_of(app, token_of(page)) == {}
    with app.app_context():
        assert media_accel.ingest_configured().merged == served
    assert evidence_of(app, token_of(page))["a"][2] == served


# Direct sends (MEDIA_DIRECT) -------------------------------------------------------------------


def participant_of(step: str) -> str:
    return step.rstrip("/").rsplit("/", 1)[1]


def test_direct_sends_need_the_throttle_and_the_log_in_nginx(tmp_path):
    from study_app import create_app

    config = {"TESTING": True, "SECRET_KEY": "s", "SQLALCHEMY_DATABASE_URI": "sqlite://"}
    with pytest.raises(ValueError, match="MEDIA_DIRECT needs"):
        create_app(config | {"MEDIA_DIRECT": True, "MEDIA_ACCEL_REDIRECT": PREFIX})
    create_app(config | {"MEDIA_DIRECT": True, "MEDIA_ACCEL_REDIRECT": PREFIX,
                         "MEDIA_THROTTLE_IN_PROXY": True})


def test_the_page_renders_its_trials_renditions_where_nginx_looks(
    app, client, demo_study, tmp_path
):
    """MEDIA_DIRECT: showing a trial's page writes each slot's rendition at
    `<participant token>.<trial token>/<slot>.wav`, the path nginx derives from the media URL:
    the app path's very bytes, the fixed mtime, no two slots alike. The answer deletes the
    trial's folder; media-gc keeps exactly the current trials' folders."""
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    urls = media_of(page)
    served = {slot: client.get(url, buffered=True).get_data() for slot, url in urls.items()}
    accel(app, tmp_path, direct=True)
    assert read_page(client.get(step)).media == page.media  # shown again: rendered now
    renditions = tmp_path / "renditions"
    folder = renditions / f"{participant_of(step)}.{token_of(page)}"
    assert sorted(p.name for p in folder.iterdir()) == ["a.wav", "b.wav", "x.wav"]
    for slot, body in served.items():
        assert (folder / f"{slot}.wav").read_bytes() == body
        assert (folder / f"{slot}.wav").stat().st_mtime == MEDIA_MTIME
    assert len({(folder / f"{s}.wav").read_bytes() for s in "abx"}) == 3
    # the fallback (a fetch that reaches the app) redirects to the same file, and writes none
    response = client.get(media_of(page)["a"], buffered=True)
    assert response.headers["X-Accel-Redirect"] == f"{PREFIX}{folder.name}/a.wav"
    with app.app_context():
        assert media_accel.live_names("test-secret", direct=True) == {folder.name}
    abandoned = renditions / f"{'P' * 43}.{'T' * 43}"  # a trial nobody will come back to
    abandoned.mkdir()
    (abandoned / "a.wav").write_bytes(b"an abandoned trial's rendition")
    assert app.test_cli_runner().invoke(args=["media-gc"]).exit_code == 0
    assert [p.name for p in renditions.iterdir()] == [folder.name]
    collected = media_accel.collect(renditions, {folder.name}, max_bytes=0)
    assert (collected.deleted, collected.bytes_deleted) == (1, sum(map(len, served.values())))
    assert read_page(client.get(step)).media == page.media  # rendered again for nginx
    assert client.post(page.action, data=valid_answer(app, page)).status_code == 303
    assert not folder.exists()
    following = read_page(client.get(step))
    new_folder = renditions / f"{participant_of(step)}.{token_of(following)}"
    assert len(list(new_folder.iterdir())) == len(following.media)


def test_a_page_whose_renditions_cannot_be_written_is_still_shown(
    app, client, demo_study, tmp_path, monkeypatch
):
    """No room for the renditions when the page is shown: the page goes out all the same, and
    its media come through the media route (which tries again, then sends them itself)."""
    import errno

    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    expected = client.get(media_of(page)["a"], buffered=True).get_data()
    accel(app, tmp_path, direct=True)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(media_accel, "ensure_rendition", full)
    assert client.get(step).status_code == 200
    assert not (tmp_path / "renditions").exists()
    response = client.get(media_of(page)["a"], buffered=True)
    assert response.status_code == 200 and response.get_data() == expected
    monkeypatch.undo()
    # a medium the stimulus set lacks (its media request: 404): the page is shown, the rest
    # of its renditions written
    from study_app import participant as participant_module

    media_file = participant_module._media_file

    refs = {}

    def lacking_a(trial, ref):
        refs.update(get_trial_type(trial.trial_type).media(trial.spec))
        if ref == refs["a"]:  # (x too, when x is a's clip)
            raise NotFound()
        return media_file(trial, ref)

    monkeypatch.setattr(participant_module, "_media_file", lacking_a)
    assert client.get(step).status_code == 200
    folder = tmp_path / "renditions" / f"{participant_of(step)}.{token_of(page)}"
    written = sorted(f"{slot}.wav" for slot, ref in refs.items() if ref != refs["a"])
    assert sorted(p.name for p in folder.iterdir()) == written and "b.wav" in written


def test_ingest_maps_direct_sends_to_their_trial_and_refuses_strangers(
    app, client, demo_study, tmp_path
):
    """A direct send's log line names the URL's tokens and slot: merged into that trial's
    evidence (total from Content-Length or Content-Range); a line for a participant who has no
    such trial, or a slot the trial has not, is refused."""
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    accel(app, tmp_path, direct=True)
    participant, trial = participant_of(step), token_of(page)

    def line(key: str, status: int, sent: int, content_range: str = "", length: str = ""):
        fields = f'{time.time():.3f} r {status} {sent} "OK" "{key}" "{content_range}" "{length}"'
        return f"sightsound-media/2 {fields}\n"

    log = tmp_path / "media.log"
    log.write_text(
        line(f"direct.{participant}.{trial}.a", 200, 5000, length="5000")
        + line(f"direct.{participant}.{trial}.b", 206, 100, "bytes 100-199/5000", "100")
        + line(f"direct.{'P' * 43}.{trial}.a", 200, 5000, length="5000")  # not this trial's
        + line(f"direct.{participant}.{trial}.zz", 200, 5000, length="5000")  # no such slot
        + line(f"direct.{participant}.{trial}.x", 304, 0)  # not content
    )
    with app.app_context():
        result = media_accel.ingest_configured()
    assert (result.lines, result.merged, result.refused) == (5, 2, 3)
    assert evidence_of(app, trial) == {
        "a": ([[0, 5000]], 5000, 1),
        "b": ([[100, 200]], 5000, 1),
    }


@pytest.mark.skipif(
    NGINX is None and not os.environ.get("CI"),
    reason="nginx is not installed (apt-get install nginx-light); CI installs it",
)
def test_nginx_sends_directly_only_what_the_app_would_authorise(
    app, client, demo_study, tmp_path
):
    """Direct sends keep the media route's rule, current trial only, through nginx: the
    current trial's media are sent without the app; an answered trial's are gone (404 from the
    app); another participant's token, a trial not reached, a slot with an extension, a path
    outside the URL shape, the renditions folder itself: 404, each from the app or nginx."""
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    other_step = start(app.test_client(), entry(app))
    accel(app, tmp_path, direct=True)
    read_page(client.get(step))  # renders the renditions
    participant, trial = participant_of(step), token_of(page)
    with app.app_context():
        later = db.session.scalar(
            select(Trial.token).join(Trial.participant)
            .where(Trial.token != trial, Trial.presented_at.is_(None))
            .where(Trial.participant.has(token=participant))
            .order_by(Trial.trial_index.desc())
        )
    with nginx_in_front(app, tmp_path) as (port, _):
        reached_app = count_media_requests(app)
        for url in page.media:
            assert fetch(port, url)[0] == 200
        assert reached_app == []  # all three sent by nginx alone
        a = media_of(page)["a"]
        refused = [
            a.replace(participant, participant_of(other_step)),  # someone else's token
            a.replace(trial, later),  # a trial not reached
            a + ".wav",
            f"/p/{participant}/t/{trial}/m/../{trial}/m/a",
            f"/p/{participant}.{trial}/a.wav",
            f"{PREFIX}{participant}.{trial}/a.wav",
        ]
        assert [fetch(port, url)[0] for url in refused] == [404] * len(refused)
        assert client.post(page.action, data=valid_answer(app, page)).status_code == 303
        assert [fetch(port, url)[0] for url in page.media] == [404] * 3  # answered: gone
        # the media route saw the first three refused (the app's 404) and the answered three
        assert len(reached_app) == 3 + 3


def test_a_withdrawn_participants_shown_trial_renditions_go_with_them(
    app, client, demo_study, owner, tmp_path
):
    """Under direct sends a rendition is what lets nginx send a medium; withdrawing a
    participant mid-trial deletes the shown trial's renditions with their data, so nginx has
    nothing left to send them (another participant's stay)."""
    accel(app, tmp_path, direct=True)
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    other = app.test_client()
    other_page = to_first(app, other, start(other, entry(app)), "abx")
    renditions = tmp_path / "renditions"
    folder = f"{participant_of(step)}.{token_of(page)}"
    assert folder in {p.name for p in renditions.iterdir()}
    with app.app_context():
        public_id = db.session.scalar(
            select(Participant).where(Participant.token == participant_of(step))
        ).public_id
    response = owner.post(
        f"/researcher/studies/{demo_study}/participants/{public_id}/withdraw", data={}
    )
    assert response.status_code == 302
    left = [p.name for p in renditions.iterdir()]
    assert len(left) == 1 and left[0].endswith(token_of(other_page))
