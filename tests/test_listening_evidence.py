"""The server knows whether a participant listened: every media response is logged with the
bytes it sent, and each answer's export row carries the server's response time, the share of
each slot sent before the answer and the unheard / too-quick flags. SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from flow import read_page, start, valid_answer
from sqlalchemy import select, update

from study_app.dashboard import study_summary
from study_app.export import responses_csv
from study_app.extensions import db
from study_app.models import MediaFetch, Response, Study, Trial, as_utc, utcnow


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
            assert client.get(url).status_code == 200
        assert client.post(page.action, data=valid_answer(app, page)).status_code == 303
    raise AssertionError("study did not end")


def media_of(page) -> dict[str, str]:
    return {url.rsplit("/", 1)[1]: url for url in page.media}


def fetches_of(app, trial_token: str) -> list[tuple[str, int, int, int]]:
    with app.app_context():
        return [
            tuple(row)
            for row in db.session.execute(
                select(
                    MediaFetch.slot,
                    MediaFetch.first_byte,
                    MediaFetch.end_byte,
                    MediaFetch.total_bytes,
                )
                .join(Trial, Trial.id == MediaFetch.trial_id)
                .where(Trial.token == trial_token)
                .order_by(MediaFetch.id)
            )
        ]


def shift_presented(app, trial_token: str, seconds: float) -> None:
    """As if the trial page had been shown `seconds` earlier (the participant slept on it)."""
    with app.app_context():
        db.session.execute(
            update(Trial)
            .where(Trial.token == trial_token)
            .values(presented_at=utcnow() - timedelta(seconds=seconds))
        )
        db.session.commit()


def export_rows(app, trial_type: str) -> list[dict[str, str]]:
    with app.app_context():
        text = responses_csv(db.session.scalar(select(Study)))
    return [r for r in csv.DictReader(io.StringIO(text)) if r["trial_type"] == trial_type]


def size_of(client, url: str) -> int:
    """The file's length, as a browser's first probe (bytes=0-1) learns it."""
    response = client.get(url, headers={"Range": "bytes=0-1"})
    assert response.status_code == 206
    return int(response.headers["Content-Range"].rsplit("/", 1)[1])


def token_of(page) -> str:
    return page.action.rsplit("/", 1)[1]


ABX_ANSWER = {"answer": "A", "confidence": "3", "plays_a": "1", "plays_b": "1", "plays_x": "1"}


def test_each_media_response_logs_the_bytes_it_sent(app, client, demo_study):
    step = start(client, entry(app))
    page = to_first(app, client, step, "emotion_rating")
    urls = media_of(page)
    assert set(urls) == {"clip", "video"}
    full = client.get(urls["clip"])
    size = len(full.get_data())
    assert client.get(urls["clip"], headers={"Range": "bytes=100-199"}).status_code == 206
    assert client.get(urls["clip"], headers={"Range": f"bytes=-{size - 300}"}).status_code == 206
    # nothing is sent for these: no row
    since = {"If-Modified-Since": full.headers["Last-Modified"]}
    assert client.get(urls["clip"], headers=since).status_code == 304
    beyond = {"Range": f"bytes={size + 10}-"}
    assert client.get(urls["clip"], headers=beyond).status_code == 416
    assert client.head(urls["clip"]).status_code == 200
    video = client.get(urls["video"], headers={"Range": "bytes=0-1023"})
    assert video.status_code == 206
    video_size = int(video.headers["Content-Range"].rsplit("/", 1)[1])
    assert fetches_of(app, token_of(page)) == [
        ("clip", 0, size, size),
        ("clip", 100, 200, size),
        ("clip", 300, size, size),
        ("video", 0, 1024, video_size),
    ]
    # media of a trial that is not current is refused, and logs nothing either
    client.post(page.action, data=valid_answer(app, page))
    assert client.get(urls["clip"]).status_code == 404
    assert len(fetches_of(app, token_of(page))) == 4


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
            assert client.get(urls[slot], headers={"Range": header}).status_code == 206
    assert len(fetches_of(app, token_of(page))) == 3 * 4
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
    client.get(urls["a"])
    client.get(urls["b"])
    size = size_of(client, urls["x"])
    client.get(urls["x"], headers={"Range": f"bytes=0-{int(size * 0.45)}"})
    assert client.post(page.action, data=ABX_ANSWER).status_code == 303
    row = export_rows(app, "abx")[1]
    assert row["media_fetched"] == "a:1.00;b:1.00;x:0.45"
    assert row["flag_unheard"] == "1"
    assert row["flag_too_quick"] == "1"  # answered at once: three clips take longer


def test_racing_posts_store_one_answer_timed_by_the_server(app, client, demo_study):
    step = start(client, entry(app))
    page = to_first(app, client, step, "abx")
    for url in page.media:
        client.get(url)
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
    client.get(page.media[0])
    assert fetches_of(app, token_of(page))
    with app.app_context():
        withdraw(db.session.scalar(select(Participant)), db.session.scalar(select(Researcher)))
        assert db.session.scalar(select(MediaFetch.id)) is None
