"""Drive a participant through a study with Flask's test client (no browser)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update

from study_app.extensions import db
from study_app.models import MediaEvidence, Trial, as_utc, utcnow
from study_app.trial_types import get_trial_type

FORM_ACTION = re.compile(
    r'<form method="post" id="trial-form" class="trial trial-([a-z0-9_]+)"\s+action="([^"]+)"'
)
MEDIA_SRC = re.compile(r'<(?:audio|video)[^>]*\ssrc="([^"]+)"')

DEFAULT_ANSWERS = {
    "consent": {"consent": "yes"},
    "headphone_check": {"answer": "1", "plays_tones": "1"},
    "abx": {"answer": "A", "confidence": "3", "plays_a": "1", "plays_b": "1", "plays_x": "1"},
    "emotion_rating": {
        "valence": "6",
        "arousal": "4",
        "gems": ["wonder", "tension"],
        "fit": "5",
        "tempo": "3",
        "plays_clip": "1",
    },
}


@dataclass
class Page:
    status: int
    html: str
    trial_type: str | None
    action: str | None
    media: list[str] = field(default_factory=list)


def read_page(response) -> Page:
    html = response.get_data(as_text=True)
    match = FORM_ACTION.search(html)
    return Page(
        status=response.status_code,
        html=html,
        trial_type=match.group(1) if match else None,
        action=match.group(2) if match else None,
        media=MEDIA_SRC.findall(html),
    )


def start(client, entry_token: str, query: str = "") -> str:
    """Enrol through the join link; returns the participant's step URL."""
    response = client.post(f"/join/{entry_token}{query}")
    assert response.status_code == 302, response.status_code
    return response.headers["Location"]


def current(client, step_url: str) -> Page:
    return read_page(client.get(step_url))


def answer(client, page: Page, data: dict | None = None):
    data = data if data is not None else DEFAULT_ANSWERS[page.trial_type]
    return client.post(page.action, data=data)


def run_to_end(client, step_url: str, answers=None, on_page=None) -> Page:
    """Answer every trial; `answers(page)` may pick the data; returns the final page."""
    for _ in range(200):
        page = current(client, step_url)
        if page.trial_type is None:
            return page
        if on_page:
            on_page(page)
        data = answers(page) if answers else None
        response = answer(client, page, data)
        assert response.status_code == 303, (page.trial_type, response.status_code)
    raise AssertionError("study did not end")


def valid_answer(app, page) -> dict:
    """A valid answer to any trial type (the spec is looked up where the answer depends on it)."""
    with app.app_context():
        trial = db.session.scalar(select(Trial).where(Trial.token == page.action.rsplit("/", 1)[1]))
        spec = trial.spec
        wait = get_trial_type(trial.trial_type).min_answer_seconds(spec, {})
        if wait and trial.presented_at is not None:
            # A pause takes no answer before its countdown ends: as if it had been waited out.
            trial.presented_at = as_utc(trial.presented_at) - timedelta(seconds=wait)
            db.session.commit()
    kind = page.trial_type
    if kind == "mushra":
        slots = re.findall(r'name="score_(s\d+)"', page.html)
        return {f"score_{s}": "50" for s in slots} | {"moved": "all"}
    if kind == "p808_qualification":
        counts = {f"count_t{i}": str(n) for i, n in enumerate(spec["tone_counts"], 1)}
        return {"hearing": "normal", "device": "headphones", "environment": "quiet"} | counts
    if kind == "acr":
        return {} if spec["item"] == "rest" else {"rating": str(spec.get("correct_answer", 3))}
    return {
        "consent": {"consent": "yes"},
        "headphone_check": {"answer": "2"},
        "abx": {"answer": "B", "confidence": "2"},
        "emotion_rating": {"valence": "3", "arousal": "7", "fit": "2", "tempo": "5"},
        "similarity": {"similarity": "4"},
        "fit_rating": {"fit": "4"},
        "fit_preference": {"answer": "A", "strength": "2"},
    }[kind]


def evidence_of(app, trial_token: str) -> dict[str, tuple[list[list[int]], int, int]]:
    """Per slot of the trial: (ranges sent, total bytes, requests answered)."""
    with app.app_context():
        return {
            slot: (ranges, total, requests)
            for slot, ranges, total, requests in db.session.execute(
                select(
                    MediaEvidence.slot,
                    MediaEvidence.ranges,
                    MediaEvidence.total_bytes,
                    MediaEvidence.requests,
                )
                .join(Trial, Trial.id == MediaEvidence.trial_id)
                .where(Trial.token == trial_token)
            )
        }


def shift_presented(app, trial_token: str, seconds: float) -> None:
    """As if the trial page had been shown `seconds` earlier (the participant slept on it)."""
    with app.app_context():
        db.session.execute(
            update(Trial)
            .where(Trial.token == trial_token)
            .values(presented_at=utcnow() - timedelta(seconds=seconds))
        )
        db.session.commit()
