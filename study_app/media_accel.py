"""Media at static-file cost (issue 24): the app authorises, nginx sends the bytes.

Off by default (`MEDIA_ACCEL_REDIRECT` unset): the app serves the bytes itself
(participant.media) and counts them as it writes them (CountedBody). Set, e.g.

    MEDIA_ACCEL_REDIRECT = "/_media_internal/"       # an `internal` nginx location
    MEDIA_RENDITIONS_DIR = "/srv/sightsound/renditions"  # shared by every app server
    MEDIA_ACCESS_LOG = "/var/log/nginx/sightsound-media.log"  # deploy/nginx-media.conf.template

the media route, after the same authorisation (current trial only) and flood throttle, makes
sure the (trial, slot) rendition is on disk and answers with `X-Accel-Redirect`; nginx then
sends the file and answers Range and conditional requests itself.

Blindness is kept as on the app path:

* each audio rendition is the trial slot's own dithered copy (audio.dithered_rendition with
  the same secret seed as the app path: the very same bytes), so no two slots of a trial, nor
  two trials, are byte-identical; a video is linked (or copied) unchanged, as the app path
  sends it unchanged;
* its file name is an HMAC of (trial token, slot) under SECRET_KEY: it says nothing, and it is
  only in the internal redirect, never sent to the browser;
* its mtime is services.MEDIA_MTIME, like every stored clip: nginx's Last-Modified is the
  app path's constant, and no mtime orders slots by when (or in what condition order) they
  were rendered; the location turns ETag off (an ETag of size and mtime would be the same
  for every slot of a trial, but the app path sends none).

The evidence of listening: the app cannot count bytes nginx writes, so nginx logs each media
response (`log_format sightsound_media`: time, request id, status, $body_bytes_sent,
$request_completion, the Content-Range it sent and an evidence key the app put in the
`X-SightSound-Evidence` header, hidden from the client). `ingest_media_log` merges those lines
into the same per-slot union of ranges (`media_evidence`) that the app path records, with the
same rule (only bytes whose response ended before the answer count). The request itself is
counted by the app as it authorises it (requests and the throttle's window), so the flood
throttle works without waiting for the log. Merging a union is idempotent, so a line read twice
changes nothing; the offset kept beside the log only saves re-reading.

Direct sends (`MEDIA_DIRECT`, with MEDIA_THROTTLE_IN_PROXY; scripts/serve.py's default): the
trial page renders its trial's renditions (`prepare_trial_media`) at
`<participant token>.<trial token>/<slot>.<ext>`, a path nginx derives from the media URL
itself, so nginx sends a current trial's media without asking the app (no app process, no
database read per media request). Authorisation is unchanged in substance: the media URL
holds both unguessable tokens (as on every path), a file exists only for a trial that has
been shown and not yet answered (the answer deletes its folder at once, `forget_renditions`;
`collect` the rest), and a miss (a trial not current, a wrong token, a deleted or
never-written rendition) goes to the media route, which authorises as before and answers
404 or X-Accel-Redirect. nginx logs direct sends with the URL's tokens instead of a signed
key; `ingest_media_log` maps them to the trial (and refuses a slot the trial has not).

Disk: a rendition is its clip's size. Only a current trial's renditions are needed: the answer
deletes its trial's (`forget_renditions`), and `collect` (`flask media-gc`, run every few
minutes) deletes every other one (abandoned trials), those older than
`MEDIA_RENDITIONS_MAX_AGE_HOURS`, then the oldest until the folder is under
`MEDIA_RENDITIONS_MAX_BYTES`. Deleting is always safe: a rendition is a pure function of
(secret, trial token, slot, clip), so a later request renders the same bytes again.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click
from flask import Flask, Response, current_app, request
from flask.cli import with_appcontext
from sqlalchemy import insert, select, update
from werkzeug.exceptions import RequestedRangeNotSatisfiable

from .audio import dithered_samples
from .extensions import db
from .listening import merge_range
from .models import MediaEvidence, Participant, Trial, as_utc
from .models import Response as Answer
from .services import MEDIA_MTIME
from .trial_types import get_trial_type

EVIDENCE_HEADER = "X-SightSound-Evidence"
DEFAULT_MAX_BYTES = 2 * 1024**3  # 2 GiB: ~1,100 renditions of a 10 s stereo 44.1 kHz clip
DEFAULT_MAX_AGE_HOURS = 6.0
# A rendition that cannot be written for want of room: the media route then sends the bytes
# itself (participant.media) rather than fail the participant's request.
FOLDER_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def enabled(app: Flask) -> bool:
    return bool(app.config.get("MEDIA_ACCEL_REDIRECT"))


def direct(app: Flask) -> bool:
    """MEDIA_DIRECT: nginx sends a current trial's renditions straight from the URL's path."""
    return enabled(app) and bool(app.config.get("MEDIA_DIRECT"))


def throttle_in_proxy(app: Flask) -> bool:
    """Media through nginx with MEDIA_THROTTLE_IN_PROXY: nginx keeps the flood throttle, the
    media route writes nothing and the log's responses are counted as the requests."""
    return enabled(app) and bool(app.config.get("MEDIA_THROTTLE_IN_PROXY"))


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("media renditions need a non-empty secret key")
    return key


def rendition_name(secret: str | bytes, trial_token: str, slot: str) -> str:
    """The rendition's opaque file name: a keyed hash of (trial token, slot). Its own label, so
    it never equals the dither seed (which must stay secret)."""
    message = b"\0".join((b"sightsound-rendition/1", trial_token.encode(), slot.encode()))
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()[:40]


# Media types nginx sends directly, by the file extension it finds (the `types` of the direct
# location in deploy/nginx-media.conf.template list the same). Any other type is written with
# DIRECT_OTHER, which nginx never tries: its media go through the app's X-Accel-Redirect.
DIRECT_EXTENSIONS = {"audio/wav": "wav", "video/mp4": "mp4", "video/webm": "webm"}
DIRECT_OTHER = "media"


def trial_folder(participant_token: str, trial_token: str) -> str:
    """A trial's renditions folder under direct sends: both URL tokens, as nginx reads them."""
    return f"{participant_token}.{trial_token}"


def rendition_path(
    config, participant_token: str, trial_token: str, slot: str, mimetype: str
) -> str:
    """Where a trial slot's rendition lives, relative to MEDIA_RENDITIONS_DIR: the keyed name
    (rendition_name), or under MEDIA_DIRECT the trial folder's `<slot>.<extension>`."""
    if config.get("MEDIA_DIRECT"):
        extension = DIRECT_EXTENSIONS.get(mimetype, DIRECT_OTHER)
        return f"{trial_folder(participant_token, trial_token)}/{slot}.{extension}"
    return rendition_name(config["SECRET_KEY"], trial_token, slot)


def evidence_key(secret: str | bytes, trial_id: int, slot: str, total: int) -> str:
    """What nginx logs for a response: the trial slot and the file's length, signed, so that a
    line nobody's app wrote (a forged request header cannot reach the log: nginx logs the
    upstream's header) is refused."""
    body = f"{trial_id}.{slot}.{total}"
    mac = hmac.new(_key(secret), f"sightsound-evidence/1\0{body}".encode(), hashlib.sha256)
    return f"{body}.{mac.hexdigest()[:32]}"


def read_evidence_key(secret: str | bytes, key: str) -> tuple[int, str, int] | None:
    parts = key.split(".")
    if len(parts) != 4 or not parts[0].isdigit() or not parts[2].isdigit():
        return None
    trial_id, slot, total = int(parts[0]), parts[1], int(parts[2])
    if not hmac.compare_digest(key, evidence_key(secret, trial_id, slot, total)):
        return None
    return trial_id, slot, total


def ensure_rendition(
    renditions_dir: Path, name: str, source: Path, mimetype: str, seed: str
) -> int:
    """The rendition `name` (a path relative to `renditions_dir`) on disk (made once; written
    to a temporary file and renamed, so two servers racing both write the same bytes and a
    reader never sees half a file); returns its length."""
    path = renditions_dir / name
    try:
        return path.stat().st_size
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        if mimetype == "audio/wav":
            canonical = source.read_bytes()
            with open(tmp, "wb") as file:
                # Header and samples one after the other, not joined first: a clip-sized copy
                # less (a write this large bypasses the file's buffer).
                file.write(canonical[:44])
                file.write(dithered_samples(canonical, seed))
        else:
            try:  # a video is sent unchanged: a hard link costs no disk
                os.link(source, tmp)
            except OSError:
                tmp.write_bytes(source.read_bytes())
        os.utime(tmp, (MEDIA_MTIME, MEDIA_MTIME))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


def accel_response(
    participant_token: str,
    trial_id: int,
    trial_token: str,
    slot: str,
    source: Path,
    mimetype: str,
    seed: str,
) -> Response:
    """The media route's answer under MEDIA_ACCEL_REDIRECT: an empty response that nginx
    replaces with the rendition. Content-Type, Cache-Control and Accept-Ranges go through to
    the browser (nginx keeps them on an X-Accel-Redirect); the security headers and Vary are
    copied by the nginx location; the evidence header is for nginx's log only."""
    config = current_app.config
    secret = config["SECRET_KEY"]
    name = rendition_path(config, participant_token, trial_token, slot, mimetype)
    total = ensure_rendition(Path(config["MEDIA_RENDITIONS_DIR"]), name, source, mimetype, seed)
    if request.range is not None and len(request.range.ranges) != 1:
        # Several ranges at once: the app path (Werkzeug) answers 416, so this path does too
        # (nginx would send the whole file), and, as there, nothing is counted.
        raise RequestedRangeNotSatisfiable(total)
    response = Response(b"", mimetype=mimetype)
    response.headers["X-Accel-Redirect"] = config["MEDIA_ACCEL_REDIRECT"].rstrip("/") + "/" + name
    response.headers["Cache-Control"] = "private, no-store"
    # nginx passes this on (its static 200 after a redirect has none), as the app path says it
    response.headers["Accept-Ranges"] = "bytes"
    response.headers[EVIDENCE_HEADER] = evidence_key(secret, trial_id, slot, total)
    return response


@dataclass(frozen=True)
class SlotMedium:
    """A trial slot's medium as the app path would send it: the stored (or generated) file,
    its type and the slot's dither seed."""

    source: Path
    mimetype: str
    seed: str


def prepare_trial_media(
    participant_token: str, trial_token: str, media: dict[str, SlotMedium]
) -> None:
    """Under MEDIA_DIRECT, render a trial's renditions when its page is shown, where nginx
    will look for them, so that every fetch of its media is a direct send. The first rendition
    that cannot be written (the folder full, or any other error) ends the rendering: it and
    the slots after it are left out, and their fetches go to the media route, which tries
    again and, failing that, sends the bytes itself. The page is never failed for it."""
    config = current_app.config
    folder = Path(config["MEDIA_RENDITIONS_DIR"])
    for slot, medium in media.items():
        name = rendition_path(config, participant_token, trial_token, slot, medium.mimetype)
        try:
            ensure_rendition(folder, name, medium.source, medium.mimetype, medium.seed)
        except OSError as error:
            current_app.logger.warning("rendition %s not written: %s", slot, error)
            return


def forget_renditions(participant_token: str, trial_token: str, slots: Iterable[str]) -> None:
    """Delete an answered trial's renditions now: only the current trial's media are served, so
    none will be asked for again. Without this, renditions lived until the next `media-gc`, and
    2,000 participants at human pace render about 70 MB a second: 40 GB between two
    collections ten minutes apart, which on a memory folder (scripts/serve.py) is the
    machine's memory. With it the folder holds the current trials' renditions (one trial per
    participant: 2.6-2.8 GB measured at 2,000 with 705 kB clips) and what abandoned trials
    leave for `collect`. A response nginx is still sending keeps its file open, so deleting it
    cuts nothing short. A file that cannot be deleted is left to `collect`: the answer is stored
    already, and its acknowledgement must not become an error."""
    config = current_app.config
    folder = Path(config["MEDIA_RENDITIONS_DIR"])
    if config.get("MEDIA_DIRECT"):
        paths = [folder / trial_folder(participant_token, trial_token)]
    else:
        paths = [folder / rendition_name(config["SECRET_KEY"], trial_token, s) for s in slots]
    for path in paths:
        try:
            _remove(path)
        except OSError as error:
            current_app.logger.warning("rendition %s not deleted: %s", path.name, error)


def _remove(path: Path) -> None:
    """Delete a rendition, or a trial's folder of them (direct sends), if it is there."""
    if path.is_dir():
        for child in path.iterdir():
            child.unlink(missing_ok=True)
        path.rmdir()
    else:
        path.unlink(missing_ok=True)


# Ingesting nginx's log -------------------------------------------------------------------------

# log_format sightsound_media 'sightsound-media/2 $msec $request_id $status $body_bytes_sent
#     "$request_completion" "$sightsound_evidence" "$sent_http_content_range"
#     "$sent_http_content_length"'; version 1 lines (no Content-Length) are read too.
LOG_LINE = re.compile(
    r"^sightsound-media/(?P<version>[12]) (?P<msec>\d+\.\d+) (?P<request_id>\S+) "
    r'(?P<status>\d{3}) (?P<sent>\d+) "(?P<completion>[^"]*)" "(?P<key>[^"]*)" '
    r'"(?P<range>[^"]*)"(?: "(?P<length>[^"]*)")?$'
)
CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
# A direct send's key (the nginx location sets it from the URL): direct.<participant token>.
# <trial token>.<slot>. Not signed: nginx writes such a line only when it found the file,
# which only the app writes, for that participant's trial; the ingest checks the pair anyway.
DIRECT_KEY = re.compile(r"^direct\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$")


@dataclass(frozen=True)
class LoggedSend:
    """One media response nginx wrote: bytes [first, first + written) of the slot's file."""

    trial_id: int
    slot: str
    first: int
    written: int
    total: int
    at: datetime  # when nginx finished (or gave up on) the response


# (participant token, trial token, slot) of a direct send -> the trial's id, or None when the
# participant has no such trial or the trial no such slot.
DirectResolver = Callable[[str, str, str], int | None]


def parse_line(
    secret: str | bytes, line: str, resolve: DirectResolver | None = None
) -> LoggedSend | None:
    """A log line's send, or None for a line that records no content (a 304, a 416, a
    multi-range answer nginx is configured never to give) or is not ours (bad signature, or a
    direct send `resolve` does not know)."""
    found = LOG_LINE.match(line.rstrip("\n"))
    if found is None:
        return None
    status, written = int(found["status"]), int(found["sent"])
    direct_key = DIRECT_KEY.match(found["key"])
    if direct_key is not None:
        trial_id = resolve(*direct_key.groups()) if resolve is not None else None
        if trial_id is None:
            return None
        slot = direct_key[3]
        total = _total_sent(status, found["range"], found["length"])
        if total is None:
            return None
    else:
        decoded = read_evidence_key(secret, found["key"])
        if decoded is None:
            return None
        trial_id, slot, total = decoded
    if status == 200:
        first = 0
    elif status == 206:
        sent_range = CONTENT_RANGE.match(found["range"])
        if sent_range is None:
            return None  # multipart: cannot be attributed, so credit nothing (never over-count)
        first = int(sent_range[1])
        written = min(written, int(sent_range[2]) + 1 - first)
    else:
        return None
    at = datetime.fromtimestamp(float(found["msec"]), tz=UTC)
    return LoggedSend(trial_id, slot, first, min(written, max(0, total - first)), total, at)


def _total_sent(status: int, content_range: str, length: str | None) -> int | None:
    """The file's length as a direct send's headers state it: a 200's Content-Length, a 206's
    Content-Range total."""
    if status == 200:
        return int(length) if length and length.isdigit() else None
    sent_range = CONTENT_RANGE.match(content_range)
    return int(sent_range[3]) if sent_range is not None else None


def direct_resolver() -> DirectResolver:
    """Resolve direct sends' tokens to trial ids, one query per trial (cached for one ingest)."""
    trials: dict[tuple[str, str], tuple[int, frozenset[str]] | None] = {}

    def resolve(participant_token: str, trial_token: str, slot: str) -> int | None:
        key = (participant_token, trial_token)
        if key not in trials:
            row = db.session.execute(
                select(Trial.id, Trial.trial_type, Trial.spec)
                .join(Participant, Participant.id == Trial.participant_id)
                .where(Trial.token == trial_token, Participant.token == participant_token)
            ).first()
            trials[key] = (
                None if row is None
                else (row.id, frozenset(get_trial_type(row.trial_type).media(row.spec)))
            )
        found = trials[key]
        return found[0] if found is not None and slot in found[1] else None

    return resolve


def merge_logged(send: LoggedSend, count_request: bool = False) -> bool:
    """Add a logged send's bytes to its trial slot's union of ranges (quality.record_sent's
    rule: only if the response ended before the answer; the same locks). The request was
    counted when the app authorised it, so `requests` and the throttle window stay as they
    are, unless `count_request` (MEDIA_THROTTLE_IN_PROXY: the app counted nothing; the log
    counts each response nginx sent, and its first and last times). Idempotent for the bytes:
    merging a range already in the union changes nothing (a count read twice would count
    twice; the log offset read up to is kept, so only a crash between the two can)."""
    session = db.session
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        session.execute(select(Trial.id).where(Trial.id == send.trial_id).with_for_update())
    found = session.execute(
        select(Answer.answered_at, MediaEvidence.id, MediaEvidence.ranges,
               MediaEvidence.first_at, MediaEvidence.last_at)
        .select_from(Trial)
        .outerjoin(Answer, Answer.trial_id == Trial.id)
        .outerjoin(
            MediaEvidence,
            (MediaEvidence.trial_id == Trial.id) & (MediaEvidence.slot == send.slot),
        )
        .where(Trial.id == send.trial_id)
    ).first()
    answered_at = found.answered_at if found is not None else None
    if answered_at is not None and answered_at.tzinfo is None:
        answered_at = answered_at.replace(tzinfo=UTC)
    if found is None or (answered_at is not None and send.at >= answered_at):
        session.rollback()  # withdrawn, or written after the answer came
        return False
    ranges = merge_range(found.ranges or [], send.first, send.first + send.written)
    if found.id is None:  # the app's count was lost: the response itself is the evidence
        session.execute(
            insert(MediaEvidence).values(
                trial_id=send.trial_id,
                slot=send.slot,
                total_bytes=send.total,
                ranges=ranges,
                requests=1,
                first_at=send.at,
                last_at=send.at,
                window_start=send.at,
                window_requests=1,
            )
        )
    elif count_request or ranges != found.ranges:
        values: dict = {"ranges": ranges, "total_bytes": send.total}
        if count_request:
            values.update(
                requests=MediaEvidence.requests + 1,
                first_at=min(as_utc(found.first_at), send.at),
                last_at=max(as_utc(found.last_at), send.at),
            )
        session.execute(
            update(MediaEvidence).where(MediaEvidence.id == found.id).values(**values)
        )
    session.commit()
    return True


@dataclass(frozen=True)
class IngestResult:
    lines: int  # lines read this time
    merged: int  # sends merged into the evidence
    refused: int  # lines not ours or not content (bad key, 304, 416, another format)


def ingest_media_log(
    path: Path, secret: str | bytes, count_requests: bool = False
) -> IngestResult:
    """Merge the media lines of nginx's log added since the last ingest into `media_evidence`
    (`count_requests`: also count each as a request, merge_logged).
    The offset read up to is kept in `PATH.ingested` (with the file's inode: a rotated log
    starts again from its beginning), under an exclusive lock, so two servers ingesting at
    once do not both read the same lines (were they to, the union would not change)."""
    state_path = path.with_name(path.name + ".ingested")
    with open(state_path, "a+") as state_file:
        fcntl.flock(state_file, fcntl.LOCK_EX)
        state_file.seek(0)
        try:
            state = json.loads(state_file.read() or "{}")
        except ValueError:
            state = {}
        try:
            log = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return IngestResult(0, 0, 0)
        with log:
            inode = os.fstat(log.fileno()).st_ino
            offset = state.get("offset", 0) if state.get("inode") == inode else 0
            if offset > os.fstat(log.fileno()).st_size:
                offset = 0  # truncated in place
            log.seek(offset)
            lines = merged = refused = 0
            resolve = direct_resolver()
            for raw in log:
                if not raw.endswith(b"\n"):
                    break  # nginx is still writing this line: the next ingest reads it
                offset += len(raw)
                lines += 1
                send = parse_line(secret, raw.decode("utf-8", "replace"), resolve)
                if send is None:
                    refused += 1
                elif merge_logged(send, count_requests):
                    merged += 1
        state_file.seek(0)
        state_file.truncate()
        state_file.write(json.dumps({"inode": inode, "offset": offset}))
    return IngestResult(lines, merged, refused)


def ingest_configured() -> IngestResult | None:
    """Ingest MEDIA_ACCESS_LOG if configured (before an export or a dashboard reads the
    evidence); None when the app serves its media itself."""
    app = current_app
    log = app.config.get("MEDIA_ACCESS_LOG")
    if not (enabled(app) and log):
        return None
    return ingest_media_log(Path(log), app.config["SECRET_KEY"], throttle_in_proxy(app))


# Disk budget ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Collected:
    kept: int
    deleted: int
    bytes_kept: int
    bytes_deleted: int


def live_names(secret: str | bytes, direct: bool = False) -> set[str]:
    """Renditions a participant may still ask for: every media slot of each trial that has
    been shown and not answered, of a participant still in the study (under direct sends:
    those trials' folders)."""
    names: set[str] = set()
    rows = db.session.execute(
        select(Trial.token, Trial.trial_type, Trial.spec, Participant.token)
        .join(Participant, Participant.id == Trial.participant_id)
        .outerjoin(Answer, Answer.trial_id == Trial.id)
        .where(
            Answer.id.is_(None),
            Trial.presented_at.is_not(None),
            Participant.completed_at.is_(None),
            Participant.screened_out.is_(False),
        )
    )
    for token, trial_type, spec, participant_token in rows:
        if direct:
            names.add(trial_folder(participant_token, token))
            continue
        for slot in get_trial_type(trial_type).media(spec):
            names.add(rendition_name(secret, token, slot))
    return names


def collect(
    renditions_dir: Path,
    live: Iterable[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_age_hours: float = DEFAULT_MAX_AGE_HOURS,
    now: float | None = None,
) -> Collected:
    """Delete renditions no current trial needs, then those made more than `max_age_hours`
    ago (an abandoned session's), then the oldest until the rest fit in `max_bytes`. Age is
    the file's ctime (when it was made: its mtime is the fixed MEDIA_MTIME). Leftover
    temporary files of a crashed render go once an hour old. Under direct sends each entry is
    a trial's folder (its age the folder's, its size its files')."""
    now = datetime.now(UTC).timestamp() if now is None else now
    live = set(live)
    kept: list[tuple[float, int, Path]] = []
    deleted = bytes_deleted = 0

    def delete(path: Path, size: int) -> None:
        nonlocal deleted, bytes_deleted
        try:
            _remove(path)
        except OSError:
            return  # another collector, or a server rendering into it: the next run sees it
        deleted += 1
        bytes_deleted += size

    if not renditions_dir.is_dir():
        return Collected(0, 0, 0, 0)
    for path in renditions_dir.iterdir():
        try:
            status = path.stat()
            size = (
                sum(child.stat().st_size for child in path.iterdir())
                if path.is_dir() else status.st_size
            )
        except FileNotFoundError:
            continue  # another collector took it
        age_hours = (now - status.st_ctime) / 3600
        if path.name.endswith(".tmp"):
            if age_hours > 1:
                delete(path, size)
        elif path.name not in live or age_hours > max_age_hours:
            delete(path, size)
        else:
            kept.append((status.st_ctime, size, path))
    kept.sort()  # oldest first
    total = sum(size for _, size, _ in kept)
    while kept and total > max_bytes:
        _, size, path = kept.pop(0)
        delete(path, size)
        total -= size
    return Collected(len(kept), deleted, total, bytes_deleted)


def collect_configured(app: Flask) -> Collected:
    config = app.config
    return collect(
        Path(config["MEDIA_RENDITIONS_DIR"]),
        live_names(config["SECRET_KEY"], direct(app)),
        max_bytes=int(config.get("MEDIA_RENDITIONS_MAX_BYTES", DEFAULT_MAX_BYTES)),
        max_age_hours=float(config.get("MEDIA_RENDITIONS_MAX_AGE_HOURS", DEFAULT_MAX_AGE_HOURS)),
    )


# Commands ---------------------------------------------------------------------------------------


@click.command("ingest-media-log")
@with_appcontext
@click.argument("path", type=click.Path(path_type=Path))
def ingest_media_log_command(path: Path) -> None:
    """Merge nginx's media log PATH (deploy/nginx-media-log.conf.template) into the listening
    evidence. Safe to run again and from several servers: lines already read are skipped, and
    a line read twice changes nothing."""
    result = ingest_media_log(
        path, current_app.config["SECRET_KEY"], throttle_in_proxy(current_app)
    )
    click.echo(f"{result.lines} lines, {result.merged} merged, {result.refused} refused")


@click.command("media-gc")
@with_appcontext
def media_gc_command() -> None:
    """Delete media renditions no current trial needs, then old ones, then the oldest past
    MEDIA_RENDITIONS_MAX_BYTES (run every few minutes under MEDIA_ACCEL_REDIRECT)."""
    if not current_app.config.get("MEDIA_RENDITIONS_DIR"):
        raise click.ClickException("MEDIA_RENDITIONS_DIR is not set")
    result = collect_configured(current_app._get_current_object())  # type: ignore[attr-defined]
    click.echo(
        f"kept {result.kept} renditions ({result.bytes_kept} bytes), "
        f"deleted {result.deleted} ({result.bytes_deleted} bytes)"
    )
