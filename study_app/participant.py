"""Participant-facing pages. Everything a participant's browser receives is blind: it names
trials and media only by opaque tokens and slots (a, b, x, clip, video), never by condition,
clip id, file name or source."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from werkzeug.exceptions import NotFound

from . import media_accel
from .audio import dither_seed, dithered_rendition, waveform_peaks
from .extensions import db
from .listening import MAX_REQUESTS_PER_WINDOW, throttle_wait
from .models import Clip, MediaEvidence, Participant, Segment, Study, Trial, as_utc, utcnow
from .quality import assess, block_screening_failed, record_sent
from .reentry import BROWSER_COOKIE_DAYS, EntryTags, browser_cookie, browser_marker
from .services import (
    MEDIA_MTIME,
    AnswerError,
    CurrentMedia,
    ExternalIds,
    OutOfOrder,
    Position,
    completed_count,
    current_media,
    enroll,
    locate,
    progress_counts,
    record_answer,
)
from .trial_types import MediaRef, get_trial_type

bp = Blueprint("participant", __name__, template_folder="trial_types/templates", static_folder=None)

EXTERNAL_PARAMS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")
# Our tokens are secrets.token_urlsafe(32); anything else is refused before it reaches the
# database (PostgreSQL rejects NUL bytes in text with an error, which would be a 500).
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,64}")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


# A trial page, an answer or a medium writes at most one row per statement, and no two of its
# statements must stand or fall together (an answer is one INSERT: the unique key on the trial
# settles a race; a first view is one UPDATE). So they run in autocommit: each write is its own
# transaction, committed before the response is sent, and the request saves the BEGIN and COMMIT
# round trips (3 of 5 on PostgreSQL). Joining (enrol: a participant and their whole schedule,
# under a lock on the study row) keeps its transaction.
AUTOCOMMIT_ENDPOINTS = frozenset({"participant.step", "participant.answer", "participant.media"})


@bp.before_request
def _autocommit_single_statement_writes() -> None:
    # (A request inside a caller's own transaction, like the blinding audit's, stays in it.)
    if request.endpoint in AUTOCOMMIT_ENDPOINTS and not db.session().in_transaction():
        db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def _token_or_404(value: str | None) -> str:
    if not value or not TOKEN_SHAPE.fullmatch(value):
        abort(404)
    return value


def _external_value(raw: str) -> str | None:
    """A Prolific id as given, minus control characters (stored inertly, shown escaped)."""
    return CONTROL_CHARS.sub("", raw).strip()[:64] or None


def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


def _position(token: str, *, with_progress: bool = False) -> Position:
    _token_or_404(token)
    position = locate(token, with_progress=with_progress)
    if position is None:
        abort(404)
    return position


def _trial(participant: Participant, token: str) -> Trial:
    _token_or_404(token)
    trial = db.session.scalar(
        select(Trial).where(Trial.token == token, Trial.participant_id == participant.id)
    )
    if trial is None:  # unknown, or another participant's: the same answer for both
        abort(404)
    return trial


@bp.route("/join/<entry_token>", methods=["GET", "POST"])
def join(entry_token: str):
    _token_or_404(entry_token)
    study = db.session.scalar(select(Study).where(Study.entry_token == entry_token))
    if study is None:
        abort(404)
    source = request.values  # query string on the first visit, hidden fields on the POST
    external_values = {name: _external_value(source.get(name, "")) for name in EXTERNAL_PARAMS}
    external = ExternalIds(*external_values.values())
    if study.status != "open":
        return _no_store(make_response(render_template("participant/closed.html"), 403))
    returning = None
    if external.participant:
        returning = db.session.scalar(
            select(Participant).where(
                Participant.study_id == study.id, Participant.external_id == external.participant
            )
        )
    if returning is None:
        cookie_token = request.cookies.get(f"ss_{study.entry_token[:12]}")
        if cookie_token and TOKEN_SHAPE.fullmatch(cookie_token):
            returning = db.session.scalar(
                select(Participant).where(
                    Participant.token == cookie_token, Participant.study_id == study.id
                )
            )
        if returning is not None and external.participant and returning.external_id:
            # Another PROLIFIC_PID in this browser (the same one was found above): someone else
            # at a shared computer, or the same person under a new id. Either way a participant
            # of their own, flagged as a possible re-entry (reentry.py), not the earlier one's
            # session. A visit without an id still resumes the browser's session.
            returning = None
    if returning is not None:
        return redirect(url_for(".step", token=returning.token))
    if request.method == "GET":
        # Enrolment takes a POST, so link previews and prefetchers create no participants.
        return _no_store(
            make_response(
                render_template(
                    "participant/welcome.html",
                    title=study.title,
                    external=external_values,
                )
            )
        )
    cap = study.design["completion"].get("max_completed")
    if cap is not None and completed_count(study) >= cap:
        return _no_store(make_response(render_template("participant/full.html"), 200))
    marker = browser_marker(request.cookies.get(browser_cookie(study)))
    entry = EntryTags.of(
        current_app.config["SECRET_KEY"],
        study,
        marker,
        request.remote_addr,
        request.user_agent.string,
    )
    participant = enroll(study, external, entry=entry)
    response = redirect(url_for(".step", token=participant.token))
    secure = request.is_secure or bool(current_app.config.get("SESSION_COOKIE_SECURE"))
    response.set_cookie(
        f"ss_{study.entry_token[:12]}",
        participant.token,
        max_age=14 * 24 * 3600,
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
    # The same random marker for every entry from this browser, kept longer than a session:
    # what tells a later entry under another PROLIFIC_PID that this browser was here before.
    response.set_cookie(
        browser_cookie(study),
        marker,
        max_age=BROWSER_COOKIE_DAYS * 24 * 3600,
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
    return response


def _progress(participant: Participant) -> dict[str, int]:
    done, total = progress_counts(participant)
    return {"done": done, "total": total}


@bp.get("/p/<token>/")
def step(token: str):
    position = _position(token, with_progress=True)
    participant, trial = position.participant, position.current
    if trial is None or participant.screened_out:
        return _finish(participant)
    if trial.presented_at is None:
        trial.presented_at = utcnow()
        db.session.commit()
    if media_accel.direct(current_app):
        _prepare_direct_media(participant, trial)
    progress = {"done": position.answered, "total": position.total}
    return _render_trial(participant, trial, participant.study, progress=progress)


def _prepare_direct_media(participant: Participant, trial: Trial) -> None:
    """MEDIA_DIRECT: the trial's renditions on disk before its page goes out, so that nginx
    sends its media without the app (media_accel.prepare_trial_media)."""
    current = CurrentMedia(
        trial.id, trial.token, trial.trial_type, trial.spec, participant.study.stimulus_set_id
    )
    secret = current_app.config["SECRET_KEY"]
    media = {}
    for slot, ref in get_trial_type(trial.trial_type).media(trial.spec).items():
        try:
            path, mimetype = _media_file(current, ref)
        except NotFound:
            continue  # a medium the set lacks: its request gets the media route's 404
        media[slot] = media_accel.SlotMedium(
            path, mimetype, dither_seed(secret, trial.token, slot)
        )
    media_accel.prepare_trial_media(participant.token, trial.token, media)


def _render_trial(
    participant: Participant,
    trial: Trial,
    study: Study,
    problems=(),
    status=200,
    progress: dict[str, int] | None = None,
):
    trial_type = get_trial_type(trial.trial_type)
    block = trial.block
    media = {
        slot: url_for(".media", token=participant.token, trial_token=trial.token, slot=slot)
        for slot in trial_type.media(trial.spec)
    }
    # Waveform outlines (the `peaks` route) exist for the open slots only, which hide nothing.
    peak_urls = {
        slot: url_for(".peaks", token=participant.token, trial_token=trial.token, slot=slot)
        for slot in trial_type.open_slots
        if slot in media
    }
    page = render_template(
        trial_type.template,
        title=study.title,
        block=block,
        trial_token=trial.token,
        participant_token=participant.token,
        media=media,
        peaks=peak_urls,
        progress=progress or _progress(participant),
        problems=problems,
        preview=participant.is_preview,
        **trial_type.page_context(trial.spec, block),
    )
    return _no_store(make_response(page, status))


def _finish(participant: Participant):
    if participant.completed_at is None and not participant.screened_out:
        participant.completed_at = utcnow()
        db.session.commit()
    study = participant.study
    debrief = next((b for b in study.blocks if b["type"] == "debrief"), None)
    outcome = _outcome(participant)
    completion = study.design["completion"]
    code_key, url_key = OUTCOME_KEYS[outcome]
    # The finished outcome's code is the study's column (older designs keep a generated code
    # only there); the others live in the design (absent in designs older than them: no code).
    code = study.completion_code if outcome == "completed" else completion.get(code_key)
    redirect_url = completion.get(url_key) if code else None
    if redirect_url:
        redirect_url = redirect_url.replace("{code}", code)
    page = render_template(
        "participant/finished.html",
        title=study.title,
        text=debrief["text"] if debrief else "Thank you for taking part.",
        code=code,
        redirect_url=redirect_url,
        screened_out=outcome == "screened_out",
        progress=_progress(participant),
        preview=participant.is_preview,
    )
    return _no_store(make_response(page))


# Outcome -> (its code's key, its redirect URL's key) under the design's `completion`.
OUTCOME_KEYS = {
    "completed": ("code", "redirect_url"),
    "screened_out": ("screened_out_code", "screened_out_redirect_url"),
    "failed_attention": ("failed_attention_code", "failed_attention_redirect_url"),
}


def _outcome(participant: Participant) -> str:
    """How the session ended: screened out (a failed screening block that ends the session),
    failed attention (a catch trial failed: the export's failed_catch flag) or completed."""
    if participant.screened_out:
        return "screened_out"
    trials = db.session.scalars(
        select(Trial)
        .where(Trial.participant_id == participant.id)
        .order_by(Trial.trial_index)
        .options(selectinload(Trial.response))
    ).all()
    if assess(participant.study.blocks, list(trials)).failed_catch:
        return "failed_attention"
    return "completed"


@bp.post("/p/<token>/t/<trial_token>")
def answer(token: str, trial_token: str):
    position = _position(token)
    participant, current = position.participant, position.current
    if participant.screened_out:
        # The session has ended (the screening failed): nothing more is stored, and the step
        # page shows the screened-out code.
        return redirect(url_for(".step", token=token), code=303)
    if current is not None and current.token == trial_token:
        trial = current
    else:  # a repeated submit, a stale tab, or a forged token
        trial = _trial(participant, trial_token)
    try:
        stored = record_answer(trial, current, request.form)
    except AnswerError as exc:
        return _render_trial(participant, trial, participant.study, exc.problems, status=400)
    except OutOfOrder:
        # A trial not reached yet (or a stale tab): store nothing, show the real current step.
        return redirect(url_for(".step", token=token), code=303)
    if stored and media_accel.enabled(current_app):
        slots = get_trial_type(trial.trial_type).media(trial.spec)
        media_accel.forget_renditions(participant.token, trial.token, slots)
    _apply_screening(participant, trial)
    return redirect(url_for(".step", token=token), code=303)


def _apply_screening(participant: Participant, trial: Trial) -> None:
    """End the session politely after a failed screening block (headphone check, P.808
    qualification) when the design says so, once the block is done."""
    block = trial.block
    if not block.get("exclude_on_fail"):
        return
    block_trials = [t for t in participant.trials if t.block_index == trial.block_index]
    if any(t.response is None for t in block_trials):
        return
    if block_screening_failed(block, block_trials):
        participant.screened_out = True
        db.session.commit()


@bp.get("/p/<token>/t/<trial_token>/m/<slot>")
def media(token: str, trial_token: str, slot: str):
    _token_or_404(token)
    _token_or_404(trial_token)
    trial = current_media(token)
    if trial is None or trial.trial_token != trial_token:
        abort(404)  # media of the current trial only: no peeking ahead (nor another's trials)
    ref = get_trial_type(trial.trial_type).media(trial.spec).get(slot)
    if ref is None:
        abort(404)
    # With the throttle in nginx (limit_req per slot), its log counts the requests: the media
    # request is then one read, no write (docs/operations.md).
    throttle_in_proxy = media_accel.throttle_in_proxy(current_app)
    if not throttle_in_proxy:
        wait = _throttle_wait(trial.trial_id, slot)
        if wait:
            return _too_many_requests(wait)
    path, mimetype = _media_file(trial, ref)
    seed = dither_seed(current_app.config["SECRET_KEY"], trial.trial_token, slot)
    if media_accel.enabled(current_app):
        # nginx sends the slot's rendition (the same dithered bytes) and logs what it wrote;
        # the app counts the request now (or, with the throttle in nginx, when it ingests the
        # log), the bytes when it ingests the log (media_accel.py).
        try:
            response = media_accel.accel_response(
                token, trial.trial_id, trial.trial_token, slot, path, mimetype, seed
            )
        except OSError as error:
            if error.errno not in media_accel.FOLDER_FULL:
                raise
            # The renditions folder is full (it is in memory under serve.py): the participant
            # gets the same bytes from the app path below, which records its own evidence
            # (nginx's media log has lines only for what it sends from renditions, so these
            # bytes are not counted twice).
            current_app.logger.warning("renditions folder full (%s): media sent by the app", error)
        else:
            if not throttle_in_proxy:
                _count_request_when_closed(trial.trial_id, slot, response)
            return response
    if mimetype == "audio/wav":
        # Each trial slot gets its own dithered copy: no two downloads are byte-identical. Audio
        # a trial type renders (anchors, gold and trapping clips, tones) goes the same way, so
        # its responses look exactly like those of a rated clip.
        # The seed is keyed by the server's secret: from the trial token and slot alone (both in
        # the URL) a participant could regenerate the noise and subtract it.
        data = _rendition(str(path), seed)
        response = Response(data, mimetype=mimetype)
        response.last_modified = MEDIA_MTIME
        response.make_conditional(request, accept_ranges=True, complete_length=len(data))
    else:
        response = send_file(
            path,
            mimetype=mimetype,
            conditional=True,
            etag=False,
            max_age=0,
            last_modified=MEDIA_MTIME,
        )
    # Werkzeug names the file in Content-Disposition; our names are random but say nothing anyway.
    response.headers.pop("Content-Disposition", None)
    response.headers.pop("Expires", None)  # a clock reading, and Cache-Control says it all
    response.headers["Cache-Control"] = "private, no-store"
    _record_when_sent(trial.trial_id, slot, response)
    return response


@bp.get("/p/<token>/t/<trial_token>/peaks/<slot>")
def peaks(token: str, trial_token: str, slot: str):
    """The waveform outline of an open slot of the current trial (`waveform_peaks`: a fixed
    8 + 2 * PEAK_BUCKETS bytes), so the MUSHRA page draws its Reference without fetching the
    Reference's audio: the media log (listening.py) then records only audio fetched to be
    played. Open slots only (the labelled Reference): a hidden slot's outline could tell an
    anchor from the hidden reference. Not a media fetch, so it is not logged as one."""
    _token_or_404(token)
    _token_or_404(trial_token)
    trial = current_media(token)
    if trial is None or trial.trial_token != trial_token:
        abort(404)  # the current trial's only, as for media
    trial_type = get_trial_type(trial.trial_type)
    ref = trial_type.media(trial.spec).get(slot)
    if ref is None or slot not in trial_type.open_slots:
        abort(404)
    path, mimetype = _media_file(trial, ref)
    if mimetype != "audio/wav":
        abort(404)
    response = Response(_peaks(str(path)), mimetype="application/octet-stream")
    response.headers["Cache-Control"] = "private, no-store"
    return response


@functools.lru_cache(maxsize=32)
def _peaks(path: str) -> bytes:
    """Cached per file: an imported clip or a generated file never changes."""
    return waveform_peaks(path)


def _throttle_wait(trial_id: int, slot: str) -> int:
    """Seconds this slot's requests must wait (0: serve it): a participant who floods one slot
    (a script asking for bytes=0-0 a hundred times a second) is refused for the rest of the
    window (listening.throttle_wait). In the database, so every server worker counts alike."""
    window = db.session.execute(
        select(MediaEvidence.window_start, MediaEvidence.window_requests).where(
            MediaEvidence.trial_id == trial_id, MediaEvidence.slot == slot
        )
    ).first()
    if window is None:
        return 0
    limit = current_app.config.get("MEDIA_REQUESTS_PER_MINUTE", MAX_REQUESTS_PER_WINDOW)
    return throttle_wait(as_utc(window.window_start), window.window_requests, utcnow(), limit=limit)


def _too_many_requests(wait: int):
    response = make_response("Too many requests for this sound: try again shortly.\n", 429)
    response.mimetype = "text/plain"
    response.headers["Retry-After"] = str(wait)
    return _no_store(response)


# The body goes out in pieces of at most this size, so that a connection that stops taking
# bytes is credited with the pieces handed to it (at most one piece more than it took), not
# with the whole body.
SEND_PIECE = 64 * 1024


class CountedBody:
    """A response body that counts the bytes the app handed to the WSGI server to write, and
    records them once: when the body has been written to its end, or when the server closes it
    unfinished (every WSGI server calls `close` after writing the body or failing to; a HEAD is
    closed without a byte handed over).

    A piece counts as soon as the server takes it to write. The last piece may have gone out
    only in part when the client went away, so the count is an upper bound on what the client
    can have received: an honest client that drops a request and asks for the rest from where
    its data ends leaves no gap in the union (a gap would flag it unheard), while a client that
    reads nothing is credited with what the socket buffers took plus one piece, not the file.
    "Written" is what the app handed on: to the kernel's socket buffer, or to a proxy in front
    that reads the whole body at once (docs/export-format.md)."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[int], None]) -> None:
        self._body = body
        self._on_close = on_close
        self._recorded = False
        self.written = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            for at in range(0, len(chunk), SEND_PIECE):
                piece = bytes(chunk[at : at + SEND_PIECE])
                self.written += len(piece)  # handed to the server's write
                yield piece
        # Every piece written (the server came back for more): record now, not when the server
        # gets round to closing (a test client that reads a body to its end may never close it).
        self._record()

    def close(self) -> None:
        if self._recorded and self._body is None:
            return
        body, self._body = self._body, None
        try:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        finally:
            self._record()

    def _record(self) -> None:
        if not self._recorded:
            self._recorded = True
            self._on_close(self.written)


def _record_when_sent(trial_id: int, slot: str, response: Response) -> None:
    """Have the bytes this response writes recorded once it is written (CountedBody): the
    range actually sent, start .. start + bytes written. A 304 or a 416 sends no content and
    records nothing; a HEAD counts as a request with no bytes."""
    if response.status_code == 206 and response.content_range is not None:
        sent = response.content_range
        first, total = sent.start, sent.length
    elif response.status_code == 200 and response.content_length is not None:
        first, total = 0, response.content_length
    else:
        return
    if first is None or total is None:
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def record(written: int) -> None:
        # Runs after the request's context is gone (the server writes the body afterwards),
        # in a context and database session of its own.
        with app.app_context():
            try:
                record_sent(trial_id, slot, first, written, total, now=utcnow())
            except Exception:  # noqa: BLE001 - a lost record must not break the server
                db.session.rollback()
                app.logger.exception("evidence of trial %s slot %s not recorded", trial_id, slot)

    response.response = CountedBody(response.response, record)


def _count_request_when_closed(trial_id: int, slot: str, response: Response) -> None:
    """Under MEDIA_ACCEL_REDIRECT: count the request in its slot's evidence (requests, the
    throttle's window; no bytes: those come from nginx's log) once the response is done, in a
    context of its own, as `_record_when_sent` does."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    total = int(response.headers[media_accel.EVIDENCE_HEADER].split(".")[2])

    def count() -> None:
        with app.app_context():
            try:
                record_sent(trial_id, slot, 0, 0, total, now=utcnow())
            except Exception:  # noqa: BLE001 - a lost count must not break the server
                db.session.rollback()
                app.logger.exception("request of trial %s slot %s not counted", trial_id, slot)

    response.call_on_close(count)


@functools.lru_cache(maxsize=32)
def _rendition(path: str, seed: str) -> bytes:
    """Cached, since a browser fetches one slot in several Range requests. The seed is unique
    to (secret key, trial, slot), so an entry can never be served to another slot or app."""
    return dithered_rendition(Path(path).read_bytes(), seed)


def _media_file(trial: CurrentMedia, ref: MediaRef) -> tuple[Path, str]:
    media_dir = Path(current_app.config["MEDIA_DIR"])
    set_id = trial.stimulus_set_id

    def clip_file(clip_key: str) -> Path:
        return media_dir / _stored_file("clip", set_id, clip_key)[0]

    if ref.kind in ("clip", "video"):
        name, mimetype = _stored_file(ref.kind, set_id, ref.key)
        return media_dir / name, mimetype
    return _generated_file(media_dir, set_id, trial.trial_type, ref, clip_file), "audio/wav"


def _stored_file(kind: str, set_id: int, key: str) -> tuple[str, str]:
    """(file name in MEDIA_DIR, mimetype) of an imported clip or video. An imported set never
    changes, so each worker looks a key up once (per app: tests run many apps in one process)."""
    files = current_app.extensions.setdefault("sightsound.stored_files", {})
    found = files.get((kind, set_id, key))
    if found is None:
        if kind == "clip":
            clip = db.session.scalar(
                select(Clip).where(Clip.stimulus_set_id == set_id, Clip.key == key)
            )
            found = (clip.media_file, "audio/wav") if clip else None
        else:
            segment = db.session.scalar(
                select(Segment).where(Segment.stimulus_set_id == set_id, Segment.key == key)
            )
            if segment is not None and segment.video_file:
                found = (segment.video_file, segment.video_mimetype or "video/mp4")
        if found is None:
            abort(404)
        files[(kind, set_id, key)] = found
    return found


def _generated_file(media_dir: Path, set_id: int, trial_type: str, ref: MediaRef, clip_file):
    """Audio a trial type renders itself (screening tones, anchors), made once and kept on disk
    with a name derived from the reference, so it is served exactly like an imported clip."""
    digest = hashlib.sha256(f"{set_id}|{trial_type}|{ref.kind}|{ref.key}".encode()).hexdigest()
    path = media_dir / "generated" / f"{digest[:32]}.wav"
    if not path.exists():
        data = get_trial_type(trial_type).render_media(ref, clip_file)
        if data is None:
            abort(404)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.utime(tmp, (MEDIA_MTIME, MEDIA_MTIME))
        tmp.replace(path)  # atomic: a concurrent request never sees half a file
    return path
