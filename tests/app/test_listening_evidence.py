"""The server knows whether a participant listened: every media response adds the bytes it
actually wrote to its trial slot's evidence (one row per slot: the union of the ranges sent),
and each answer's export row carries the server's response time, the share of each slot sent
before the answer and the unheard / too-quick flags. SQLite and PostgreSQL.

Test-client requests read their bodies (`buffered=True`): a body nobody reads is never written,
so it counts for nothing, as the raw-socket test below shows with a real server."""

from __future__ import annotations

import csv
import http.client
import io
import socket
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from flow import evidence_of, read_page, shift_presented, start, valid_answer
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.serving import make_server

from study_app.dashboard import study_summary
from study_app.export import responses_csv
from study_app.extensions import db
from study_app.listening import MAX_RANGES, MAX_REQUESTS_PER_WINDOW
from study_app.models import MediaEvidence, Response, Study, Trial, as_utc, utcnow
from study_app.participant import SEND_PIECE
from study_app.quality import fetch_log
from study_app.trial_types import get_trial_type


def entry(app) -> str:
    with app.app_context():
        return db.session.scalar(select(Study.entry_token))


def to_first(app, client, step: str, kind: str):
    """Answer every trial before the first one of `kind`, each after downloading all its
    media whole, as a listening participant's browser does; returns that trial's page."""
    for _ in range(100):
        page = read_page(client.get(step))
        if page.trial_type == kind:
            return page
        assert page.trial_type is not None, f"no {kind} trial"
        for url in page.media:
            assert client.get(url, buffered=True).status_code == 200
        assert client.post(page.action, data=valid_answer(app, page)).status_code == 303
    raise AssertionError("study did not end")


def media_of(page) -> dict[str, str]:
    return {url.rsplit("/", 1)[1]: url for url in page.media}


def export_rows(app, trial_type: str) -> list[dict[str, str]]:
    with app.app_context():
        text = responses_csv(db.session.scalar(select(Study)))
    return [r for r in csv.DictReader(io.StringIO(text)) if r["trial_type"] == trial_type]


def size_of(client, url: str) -> int:
    """The file's length, as a browser's first probe (bytes=0-1) learns it."""
    response = client.get(url, headers={"Range": "bytes=0-1"}, buffered=True)
    assert response.status_code == 206
    return int(response.headers["Content-Range"].rsplit("/", 1)[1])


def token_of(page) -> str:
    return page.action.rsplit("/", 1)[1]


ABX_ANSWER = {"answer": "A", "confidence": "3", "plays_a": "1", "plays_b": "1", "plays_x": "1"}


def test_each_media_response_adds_the_bytes_it_sent(app, client, demo_study):
    step = start(client, entry(app))
    page = to_first(app, client, step, "emotion_rating")
    urls = media_of(page)
    assert set(urls) == {"clip", "video"}
    full = client.get(urls["clip"], buffered=True)
    size = len(full.get_data())
    ranged = ("bytes=100-199", f"bytes=-{size - 300}", f"bytes={size - 50}-{size - 41}")
    for header in ranged:
        assert client.get(urls["clip"], headers={"Range": header}, buffered=True).status_code == 206
    # nothing is sent for these: no bytes (a HEAD counts as a request)
    since = {"If-Modified-Since": full.headers["Last-Modified"]}
    assert client.get(urls["clip"], headers=since, buffered=True).status_code == 304
    beyond = {"Range": f"bytes={size + 10}-"}
    assert client.get(urls["clip"], headers=beyond, buffered=True).status_code == 416
    assert client.head(urls["clip"], buffered=True).status_code == 200
    video = client.get(urls["video"], headers={"Range": "bytes=0-1023"}, buffered=True)
    assert video.status_code == 206
    video_size = int(video.headers["Content-Range"].rsplit("/", 1)[1])
    # one row per slot: the union of what went out, and how many requests asked
    assert evidence_of(app, token_of(page)) == {
        "clip": ([[0, size]], size, 5),
        "video": ([[0, 1024]], video_size, 1),
    }
    # media of a trial that is not current is refused, and adds nothing either
    client.post(page.action, data=valid_answer(app, page))
    assert client.get(urls["clip"], buffered=True).status_code == 404
    assert evidence_of(app, token_of(page))["clip"][2] == 5


def test_a_body_taken_in_part_credits_only_the_pieces_handed_over(app, client, demo_study):
    """The record is made when the server is done with the body, with the bytes the app handed
    it: the test client, standing in for a WSGI server, takes the first piece to start the
    response; a client that reads no further is credited with that piece (at most one piece
    more than it took), not with the file."""
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    urls = media_of(page)
    unread = client.get(urls["a"])
    assert unread.status_code == 200
    assert evidence_of(app, token_of(page)) == {}  # nothing until the server is done with it
    unread.close()  # the connection is gone: the server lets go of the body
    (ranges, total, requests) = evidence_of(app, token_of(page))["a"]
    assert (ranges, requests) == ([[0, SEND_PIECE]], 1) and total > 3 * SEND_PIECE
    # three pieces taken, then dropped: three pieces, not the file
    response = client.get(urls["b"])
    body = iter(response.response)
    pieces = [len(next(body)) for _ in range(3)]
    response.close()
    ((first, end),) = evidence_of(app, token_of(page))["b"][0]
    assert (first, end) == (0, sum(pieces)) == (0, 3 * SEND_PIECE)
    assert end < evidence_of(app, token_of(page))["b"][1]


def test_abx_answer_without_downloads_is_unheard_however_long_it_waited(app, client, demo_study):
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    shift_presented(app, token_of(page), 3600)  # an hour on the page, not one byte fetched
    forged = ABX_ANSWER | {"rt_ms": "3600000"}  # and the page's own timing agrees
    assert client.post(page.action, data=forged).status_code == 303
    (row,) = export_rows(app, "abx")
    assert row["flag_unheard"] == "1"
    assert row["media_fetched"] == ""
    assert row["flag_too_quick"] == "0"  # the time was there: it is the bytes that were not
    assert int(row["server_rt_ms"]) >= 3_600_000
    with app.app_context():
        summary = study_summary(db.session.scalar(select(Study)))
    realism = next(b for b in summary["responses_per_block"] if b["block"] == "realism")
    assert (realism["responses"], realism["unheard"], realism["too_quick"]) == (1, 1, 0)
    (participant,) = summary["participants"]
    assert participant["unheard"] == 1 and summary["unheard_answers"] == 1
    assert participant["too_quick"] == 10  # the earlier trials, answered as soon as fetched
    # the researcher's pages show it: the dashboard's JSON and the participant's page
    researcher = app.test_client()
    login = {"email": "owner@example.org", "password": "owner-password"}
    assert researcher.post("/researcher/login", data=login).status_code == 302
    served = researcher.get("/researcher/studies/demo/dashboard.json").get_json()
    assert served["responses_per_block"] == summary["responses_per_block"]
    detail = researcher.get(f"/researcher/studies/demo/participants/{participant['participant']}")
    assert "1 unheard" in detail.get_data(as_text=True)


def test_abx_slots_fetched_whole_in_range_requests_are_heard(app, client, demo_study):
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    urls = media_of(page)
    for slot in ("a", "b", "x"):
        # as a browser streams a clip: a probe, then overlapping pieces to the end
        size = size_of(client, urls[slot])
        half = size // 2
        for header in (f"bytes=0-{half}", f"bytes={half - 100}-{size - 2}", f"bytes={size - 5}-"):
            response = client.get(urls[slot], headers={"Range": header}, buffered=True)
            assert response.status_code == 206
    evidence = evidence_of(app, token_of(page))
    assert {slot: requests for slot, (_, _, requests) in evidence.items()} == dict.fromkeys(
        "abx", 4
    )
    with app.app_context():
        duration = db.session.scalar(select(Trial.spec).where(Trial.token == token_of(page)))[
            "duration"
        ]
    shift_presented(app, token_of(page), 3 * duration + 1)  # time enough to hear all three
    assert client.post(page.action, data=ABX_ANSWER).status_code == 303
    (row,) = export_rows(app, "abx")
    assert row["media_fetched"] == "a:1.00;b:1.00;x:1.00"
    assert (row["flag_unheard"], row["flag_too_quick"]) == ("0", "0")
    # one slot heard only in part: unheard, and the export says how much of it was sent
    page = read_page(client.get(step))
    assert page.trial_type == "abx"
    urls = media_of(page)
    client.get(urls["a"], buffered=True)
    client.get(urls["b"], buffered=True)
    size = size_of(client, urls["x"])
    client.get(urls["x"], headers={"Range": f"bytes=0-{int(size * 0.45)}"}, buffered=True)
    assert client.post(page.action, data=ABX_ANSWER).status_code == 303
    row = export_rows(app, "abx")[1]
    assert row["media_fetched"] == "a:1.00;b:1.00;x:0.45"
    assert row["flag_unheard"] == "1"
    assert row["flag_too_quick"] == "1"  # answered at once: three clips take longer


def test_racing_posts_store_one_answer_timed_by_the_server(app, client, demo_study):
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    for url in page.media:
        client.get(url, buffered=True)
    barrier = threading.Barrier(10)
    forged = ABX_ANSWER | {"rt_ms": "987654"}  # the page claims 16 minutes of listening

    def post(_):
        own = app.test_client()
        barrier.wait()
        return own.post(page.action, data=forged).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(post, range(10)))
    assert statuses == [303] * 10
    with app.app_context():
        trial = db.session.scalar(select(Trial).where(Trial.token == token_of(page)))
        answers = db.session.scalars(select(Response).where(Response.trial_id == trial.id)).all()
        assert len(answers) == 1
        measured = as_utc(answers[0].answered_at) - as_utc(trial.presented_at)
    (row,) = export_rows(app, "abx")
    assert row["rt_ms"] == "987654"  # what the page said, kept as it said it
    assert int(row["server_rt_ms"]) == int(measured.total_seconds() * 1000)
    assert int(row["server_rt_ms"]) < 60_000  # not the client's claim
    assert row["flag_too_quick"] == "1" and row["flag_unheard"] == "0"


def test_fetch_rows_go_with_a_withdrawn_participant(app, client, demo_study):
    """The log is personal data of the participant's session: deleting them deletes it."""
    from study_app.models import Participant, Researcher
    from study_app.services import withdraw

    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    client.get(page.media[0], buffered=True)
    assert evidence_of(app, token_of(page))
    with app.app_context():
        withdraw(db.session.scalar(select(Participant)), db.session.scalar(select(Researcher)))
        assert db.session.scalar(select(MediaEvidence.id)) is None


# --- Only the slots needed to answer must be heard (issue 23, item 1) --------------------------

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "stimuli" / "demo_study.yaml"
ALL_TYPES = REPO / "stimuli" / "demo_all_types.yaml"
# Per trial type, the slots a participant may leave unplayed: a headphone check's optional
# calibration noise ("Volume noise"), a muted video. Every other slot must be heard.
NOT_REQUIRED = {
    "headphone_check": {"calibration"},
    "emotion_rating": {"video"},
    "fit_rating": {"video"},
    "fit_preference": {"video"},
}
TYPE_CASES = [
    ("demo", "headphone_check"),
    ("huggins", "headphone_check"),
    ("demo", "emotion_rating"),
    ("demo", "abx"),
    ("all_types", "p808_qualification"),
    ("all_types", "mushra"),
    ("all_types", "similarity"),
    ("all_types", "fit_rating"),
    ("all_types", "fit_preference"),
    ("all_types", "acr"),
]


def design_file(name: str, tmp_path: Path) -> Path:
    if name == "demo":
        return DEMO
    if name == "all_types":
        return ALL_TYPES
    design = yaml.safe_load(DEMO.read_text())  # the demo with a Huggins headphone check
    next(b for b in design["blocks"] if b["type"] == "headphone_check")["method"] = "huggins"
    path = tmp_path / "huggins.yaml"
    path.write_text(yaml.safe_dump(design))
    return path


def fetch_whole(client, url: str) -> None:
    """As a browser streams a clip: a probe, then the rest."""
    size = size_of(client, url)
    rest = client.get(url, headers={"Range": f"bytes=2-{size - 1}"}, buffered=True)
    assert rest.status_code == 206


def evidence_row(app, trial_token: str, rows: list[dict[str, str]]) -> dict[str, str]:
    """The export row(s) of one trial (a MUSHRA screen has one per sample, all alike here)."""
    with app.app_context():
        trial = db.session.scalar(select(Trial).where(Trial.token == trial_token))
        public_id, index = trial.participant.public_id, str(trial.trial_index)
    mine = [r for r in rows if r["participant"] == public_id and r["trial_index"] == index]
    assert mine
    evidence = {(r["media_fetched"], r["flag_unheard"]) for r in mine}
    assert len(evidence) == 1
    return mine[0]


@pytest.mark.parametrize(("design", "kind"), TYPE_CASES)
def test_only_the_slots_needed_to_answer_must_be_heard(app, make_study, tmp_path, design, kind):
    """Per trial type: a participant who plays exactly the slots the answer needs, whole and
    nothing more, is not flagged; one who plays everything but one of those slots is (the
    optional ones cannot stand in for it)."""
    _, entry_token = make_study(design_file(design, tmp_path))
    tokens = {}
    for who in ("exact", "skips_one"):
        client = app.test_client()
        page = to_first(app, client, start(client, entry_token), kind)
        urls = media_of(page)
        required = get_trial_type(kind).required_slots(trial_spec(app, token_of(page)))
        assert set(required) == set(urls) - NOT_REQUIRED.get(kind, set())
        assert required  # every answer of these types rests on something heard
        played = required if who == "exact" else [s for s in urls if s != required[-1]]
        for slot in played:
            fetch_whole(client, urls[slot])
        shift_presented(app, token_of(page), 3600)  # time is not the question here
        assert client.post(page.action, data=valid_answer(app, page)).status_code == 303
        tokens[who] = (token_of(page), required)
    rows = export_rows(app, kind)
    token, required = tokens["exact"]
    row = evidence_row(app, token, rows)
    assert row["media_fetched"] == ";".join(f"{s}:1.00" for s in sorted(required))
    assert (row["flag_unheard"], row["flag_too_quick"]) == ("0", "0")
    token, required = tokens["skips_one"]
    row = evidence_row(app, token, rows)
    assert f"{required[-1]}:" not in row["media_fetched"]
    assert row["flag_unheard"] == "1"


def trial_spec(app, trial_token: str) -> dict:
    with app.app_context():
        return db.session.scalar(select(Trial.spec).where(Trial.token == trial_token))


# --- Bytes count when they were written, not when a response began (issue 23, item 2) ----------


@contextmanager
def small_buffered_server(app) -> Iterator[int]:
    """The app on a real threaded server at 127.0.0.1 whose connections have a small send
    buffer (accepted sockets inherit the listener's), so that the kernel cannot take a whole
    clip for a client that reads nothing; yields the port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(10)


def wait_for_requests(app, trial_token: str, slots: str, requests: int = 1) -> None:
    """Until the server has recorded `requests` for each slot (it records once it is done
    writing, on its own thread, after the client has gone)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        evidence = evidence_of(app, trial_token)
        if all(evidence.get(s, ((), 0, 0))[2] >= requests for s in slots):
            return
        time.sleep(0.05)
    raise AssertionError(f"no record of {slots}: {evidence_of(app, trial_token)}")


def test_a_client_that_reads_nothing_is_not_credited_with_the_file(app, client, demo_study):
    """A raw socket sends the GET for a, b and x, reads nothing and closes; 9.6 s later the
    answer comes (time enough for the three clips). The server began three 200 responses, but
    wrote little of them: not one slot is whole, and the answer is flagged unheard. A client
    that reads its responses is credited with every byte."""
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    urls = media_of(page)
    with small_buffered_server(app) as port:
        for slot in "abx":
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window too
            raw.connect(("127.0.0.1", port))
            request = f"GET {urls[slot]} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            raw.sendall(request.encode())
            time.sleep(0.3)  # the server starts its response and fills what buffers there are
            raw.close()
        wait_for_requests(app, token_of(page), "abx")
        shift_presented(app, token_of(page), 9.6)
        assert client.post(page.action, data=ABX_ANSWER).status_code == 303
        (row,) = export_rows(app, "abx")
        fractions = dict(entry.split(":") for entry in row["media_fetched"].split(";"))
        assert set(fractions) == set("abx")  # asked for, all three
        assert all(float(f) < 0.5 for f in fractions.values()), fractions  # sent: little
        assert (row["flag_unheard"], row["flag_too_quick"]) == ("1", "0")

        # the next trial, read whole through the same server: whole, heard
        page = read_page(client.get(step))
        assert page.trial_type == "abx"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for url in page.media:
            connection.request("GET", url)
            response = connection.getresponse()
            assert response.status == 200 and len(response.read()) > 100_000
        connection.close()
        wait_for_requests(app, token_of(page), "abx")
        shift_presented(app, token_of(page), 9.6)
        assert client.post(page.action, data=ABX_ANSWER).status_code == 303
    row = export_rows(app, "abx")[1]
    assert row["media_fetched"] == "a:1.00;b:1.00;x:1.00"
    assert (row["flag_unheard"], row["flag_too_quick"]) == ("0", "0")


def test_parallel_range_requests_on_one_slot_lose_no_bytes(app, client, demo_study):
    """A browser may fetch a slot in several ranges at once: each adds its range to the slot's
    one row, and no update is lost to another."""
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    url = media_of(page)["x"]
    size = size_of(client, url)
    cuts = [size * i // 8 for i in range(9)]
    barrier = threading.Barrier(8)

    def fetch(i: int) -> int:
        own = app.test_client()
        barrier.wait()
        header = {"Range": f"bytes={cuts[i]}-{cuts[i + 1] - 1}"}
        return own.get(url, headers=header, buffered=True).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(fetch, range(8))) == [206] * 8
    assert evidence_of(app, token_of(page))["x"] == ([[0, size]], size, 1 + 8)


# --- Bounded evidence and the flood throttle (issue 23, item 3) -----------------------------------


@pytest.mark.slow  # 5,000 requests: about a minute on a busy 2-core machine (CI runs it)
def test_a_flood_on_one_slot_is_refused_and_keeps_one_row(app, client, demo_study):
    """5,000 `Range: bytes=0-0` requests on one slot, as fast as one client can: past the
    window's allowance each is refused with 429 and a Retry-After, and the evidence stays one
    row for the slot, whatever the count."""
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    url = media_of(page)["a"]
    statuses: Counter[int] = Counter()
    retry_after = set()
    began = time.monotonic()
    for _ in range(5000):
        response = client.get(url, headers={"Range": "bytes=0-0"}, buffered=True)
        statuses[response.status_code] += 1
        if response.status_code == 429:
            retry_after.add(int(response.headers["Retry-After"]))
            assert response.headers["Cache-Control"] == "no-store"
    windows = int((time.monotonic() - began) // 60) + 1  # (a slow machine may span several)
    assert set(statuses) == {206, 429}
    assert statuses[206] <= MAX_REQUESTS_PER_WINDOW * windows
    assert statuses[429] >= 5000 - MAX_REQUESTS_PER_WINDOW * windows
    assert retry_after and all(1 <= s <= 60 for s in retry_after)
    with app.app_context():
        rows = db.session.execute(
            select(MediaEvidence.slot, MediaEvidence.ranges, MediaEvidence.requests)
            .join(Trial, Trial.id == MediaEvidence.trial_id)
            .where(Trial.token == token_of(page))
        ).all()
    assert [tuple(r) for r in rows] == [("a", [[0, 1]], statuses[206])]
    # the other slots are not held up by the flooded one
    fetch_whole(client, media_of(page)["b"])


def test_migration_folds_the_old_log_into_one_row_per_slot(database, tmp_path):
    """Upgrading keeps the old log's evidence: per slot the union of the ranges sent before the
    answer (a range logged after it is left out, as the old export left it out), the number
    of requests, the first and last times; the downgrade gives back one row per range."""
    from flask_migrate import downgrade, upgrade
    from sqlalchemy import text

    from study_app import create_app

    url, options = database
    migrations = str(REPO / "study_app" / "migrations")
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": url,
            "SQLALCHEMY_ENGINE_OPTIONS": options,
            "MEDIA_DIR": str(tmp_path / "media"),
        }
    )
    before = [
        "insert into researchers (id, email, password_hash, is_admin, created_at) "
        "values (1, 'a@b.c', 'x', false, '2026-01-01 00:00:00+00')",
        "insert into stimulus_sets (id, name, folder, manifest, manifest_sha256, imported_at) "
        "values (1, 'set', '/f', '{}', 'h', '2026-01-01 00:00:00+00')",
        "insert into studies (id, slug, title, owner_id, stimulus_set_id, design, status, "
        "entry_token, completion_code, created_at) "
        "values (1, 's', 't', 1, 1, '{}', 'open', 'e', 'c', '2026-01-01 00:00:00+00')",
        "insert into participants (id, study_id, token, assignment_index, seed, started_at, "
        "screened_out) values (1, 1, 'p', 0, 7, '2026-01-01 00:00:00+00', false)",
        "insert into trials (id, participant_id, trial_index, trial_in_block, block_id, "
        "block_index, trial_type, token, spec) values (1, 1, 0, 0, 'b', 0, 'abx', 't', '{}')",
        "insert into responses (id, trial_id, answer, answered_at) "
        "values (1, 1, '{\"answer\": \"A\"}', '2026-01-01 00:01:00+00')",
    ]
    fetches = [  # (slot, first, end, total, seconds after 00:00)
        ("a", 0, 2, 1000, 1),
        ("a", 0, 600, 1000, 2),
        ("a", 500, 1000, 1000, 3),
        ("b", 0, 400, 1000, 4),
        ("b", 700, 800, 1000, 5),
        ("b", 400, 700, 1000, 90),  # after the answer (00:01:00): not evidence
    ]
    try:
        with app.app_context():
            upgrade(directory=migrations, revision="006d051bacf7")
            with db.engine.begin() as connection:
                for statement in before:
                    connection.execute(text(statement))
            upgrade(directory=migrations, revision="b3e1f0c2a9d4")
            with db.engine.begin() as connection:
                for slot, first, end, total, seconds in fetches:
                    connection.execute(
                        text(
                            "insert into media_fetches (trial_id, slot, first_byte, end_byte, "
                            "total_bytes, at) values (1, :slot, :first, :end, :total, :at)"
                        ),
                        {
                            "slot": slot,
                            "first": first,
                            "end": end,
                            "total": total,
                            "at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds),
                        },
                    )
            upgrade(directory=migrations, revision="23a1f0e5c7d2")
            rows = db.session.execute(
                select(
                    MediaEvidence.slot,
                    MediaEvidence.ranges,
                    MediaEvidence.total_bytes,
                    MediaEvidence.requests,
                    MediaEvidence.first_at,
                    MediaEvidence.last_at,
                ).order_by(MediaEvidence.slot)
            ).all()
            db.session.rollback()
            t0 = datetime(2026, 1, 1, tzinfo=UTC)
            assert [
                (s, r, t, n, as_utc(f) - t0, as_utc(last) - t0) for s, r, t, n, f, last in rows
            ] == [
                ("a", [[0, 1000]], 1000, 3, timedelta(seconds=1), timedelta(seconds=3)),
                ("b", [[0, 400], [700, 800]], 1000, 3, timedelta(seconds=4), timedelta(seconds=90)),
            ]
            downgrade(directory=migrations, revision="b3e1f0c2a9d4")
            with db.engine.connect() as connection:
                back = connection.execute(
                    text(
                        "select slot, first_byte, end_byte from media_fetches "
                        "order by slot, first_byte"
                    )
                ).all()
            assert [tuple(r) for r in back] == [("a", 0, 1000), ("b", 0, 400), ("b", 700, 800)]
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def run_through(app, client, step: str) -> None:
    """Every trial answered, each after its media were read whole."""
    for _ in range(100):
        page = read_page(client.get(step))
        if page.trial_type is None:
            return
        for url in page.media:
            assert client.get(url, buffered=True).status_code == 200
        assert client.post(page.action, data=valid_answer(app, page)).status_code == 303
    raise AssertionError("study did not end")


def test_a_million_fetches_leave_export_and_dashboard_bounded(app, make_study):
    """The evidence of a million media requests is what the table holds of a few: one row per
    trial slot. Export and dashboard read one row per slot (the ranges of each, at most
    MAX_RANGES), their memory does not grow with the requests, and they say the same as
    before the million (with the old form, one row per request, a million rows took the export
    from 2.9 s / 169 MB to 11.2 s / 695 MB: docs/operations.md)."""
    _, entry_token = make_study()
    for _ in range(3):
        client = app.test_client()
        run_through(app, client, start(client, entry_token))
    with app.app_context():
        study = db.session.scalar(select(Study))
        rows_before = db.session.scalar(select(func.count(MediaEvidence.id)))
        csv_before, summary_before = responses_csv(study), study_summary(study)
        # a million more requests on these slots, as the recorder keeps them (bulk: the
        # throttle would take days to let them through one client)
        share, rest = divmod(1_000_000, rows_before)
        db.session.execute(update(MediaEvidence).values(requests=MediaEvidence.requests + share))
        first = db.session.scalar(select(func.min(MediaEvidence.id)))
        db.session.execute(
            update(MediaEvidence)
            .where(MediaEvidence.id == first)
            .values(requests=MediaEvidence.requests + rest)
        )
        db.session.commit()
        assert db.session.scalar(select(func.sum(MediaEvidence.requests))) >= 1_000_000
        # no second row for a slot can exist: the evidence is bounded by the trials
        one = db.session.execute(select(MediaEvidence).limit(1)).scalar_one()
        duplicate = {c: getattr(one, c) for c in ("trial_id", "slot", "total_bytes", "ranges")}
        with pytest.raises(IntegrityError):
            db.session.execute(
                insert(MediaEvidence).values(
                    **duplicate,
                    requests=1,
                    first_at=utcnow(),
                    last_at=utcnow(),
                    window_start=utcnow(),
                    window_requests=1,
                )
            )
        db.session.rollback()

        read = fetch_log(study_id=study.id)
        ranges_stored = sum(
            len(r or [[0, 0]]) for r in db.session.scalars(select(MediaEvidence.ranges))
        )
        assert sum(len(f) for f in read.values()) == ranges_stored <= rows_before * MAX_RANGES
        tracemalloc.start()
        try:
            csv_after, summary_after = responses_csv(study), study_summary(study)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert csv_after == csv_before
    assert summary_after == summary_before
    assert peak < 32 * 2**20, peak  # a few MB for this study; the old form took 680 MB
