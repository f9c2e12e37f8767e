"""Error pages in the app's own layout, in plain words, with a way back for participants.

Flask's defaults are unstyled pages without a viewport, which on a phone read as a broken site.
A participant who lands on one (a stale tab, a mistyped link, a reload of an answer URL) needs
to know what to do next: a link to their current step when the URL carries their valid token,
otherwise "use the link you were given". The way back is the step URL alone, which the
participant had already: nothing here says anything about trials, conditions or the study.
"""

from __future__ import annotations

import logging
import re

from flask import Flask, render_template, request, url_for
from sqlalchemy import select
from werkzeug.exceptions import HTTPException, InternalServerError

from .extensions import db
from .models import Participant

log = logging.getLogger(__name__)

# (heading, what happened) per status, written for someone who has never heard of HTTP.
MESSAGES: dict[int, tuple[str, str]] = {
    400: (
        "Something went wrong with that page",
        "What your browser sent could not be used. This can happen when a page has been "
        "open for a long time or was opened in another tab.",
    ),
    403: ("You cannot open this page", "This page is not available to you."),
    404: (
        "Page not found",
        "There is no page at this address. The link may be incomplete or out of date.",
    ),
    405: (
        "This page cannot be opened this way",
        "This address only takes answers sent from a study page; it cannot be opened or "
        "reloaded by itself.",
    ),
    413: (
        "Too much was sent",
        "What your browser sent is larger than this site accepts.",
    ),
    429: (
        "Too many requests",
        "Too many requests came from your connection in a short time. Please wait a few "
        "minutes, then try again.",
    ),
    500: (
        "Something went wrong on our side",
        "The server could not finish your request. Nothing you did caused this. Please try "
        "again in a moment.",
    ),
}
HANDLED = tuple(MESSAGES)

# /p/<participant token>/... and /join/<entry token>: the URLs participants are given.
PARTICIPANT_PATH = re.compile(r"/p/(?P<token>[^/]+)(?:/|$)|/join/[^/]+/?$")
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,64}")


def register(app: Flask) -> None:
    for status in HANDLED:
        app.register_error_handler(status, _handle)


def _handle(error: HTTPException):
    if not isinstance(error, HTTPException):  # an unhandled exception reaches 500's handler
        error = InternalServerError(original_exception=error)
    status = error.code or 500
    heading, text = MESSAGES.get(status, MESSAGES[500])
    if _wants_json():
        # The researcher's designer and dashboard read JSON: an HTML page would break them.
        return {"ok": False, "problems": [heading]}, status
    participant = PARTICIPANT_PATH.match(request.path)
    # After a crash (500) the database session may be unusable: no lookup, no link.
    step_url = _step_url(participant.group("token")) if participant and status != 500 else None
    page = render_template(
        "error.html",
        title=heading,
        heading=heading,
        text=text,
        status=status,
        participant=participant is not None,
        step_url=step_url,
        researcher=request.path.startswith("/researcher"),
    )
    response = _with_page(error, page, status)
    if participant:
        response.headers["Cache-Control"] = "no-store"
    return response


def _with_page(error: HTTPException, page: str, status: int):
    response = error.get_response()  # keeps its headers: Allow (405), Retry-After (429)
    response.set_data(page)
    response.mimetype = "text/html"
    response.status_code = status
    return response


def _wants_json() -> bool:
    """A request from the researcher's scripts (JSON in or out) rather than from a page."""
    if request.path.endswith(".json") or request.is_json:
        return True
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == (
        "application/json"
    )


def _step_url(token: str | None) -> str | None:
    """The participant's step URL when `token` is a real participant's, else None: a link to a
    step that does not exist would only lead to another error page."""
    if not token or not TOKEN_SHAPE.fullmatch(token):
        return None
    try:
        known = db.session.scalar(select(Participant.id).where(Participant.token == token))
    except Exception:  # noqa: BLE001 - an error page must render even when the database fails
        log.warning("error page: could not look the participant up", exc_info=True)
        return None
    return url_for("participant.step", token=token) if known is not None else None
