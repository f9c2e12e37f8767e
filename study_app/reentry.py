"""Possible re-entries: a new participant of a study who may be an earlier one under another
PROLIFIC_PID (issue 23: a screened-out participant came back with a changed id).

Without identity nothing can be blocked, and nothing is: a new arrival is only flagged, for the
researcher to judge, when an earlier participant of the same study
- entered in this browser: the study's marker cookie (`browser_cookie`), a random opaque value
  that this app sets at entry and that says nothing about anyone's stimuli, is the same; or
- entered from the same client address with the same User-Agent within ADDRESS_WINDOW.
Both are stored only as keyed hashes (HMAC with the app's SECRET_KEY and the study's id), so the
database holds no address and cannot link a browser across studies. docs/operations.md says
what these flags can and cannot catch.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from .extensions import db
from .models import Participant, Study, as_utc

# An address and agent shared within a day is worth a look; across days, addresses are handed
# on (mobile networks, DHCP) and the match means less, so older entries are not compared.
ADDRESS_WINDOW = timedelta(hours=24)
BROWSER_COOKIE_DAYS = 180
EVIDENCE_COOKIE, EVIDENCE_ADDRESS = "cookie", "address+agent"
MARKER_SHAPE = re.compile(r"[A-Za-z0-9_-]{32,64}")
MAX_AGENT_CHARS = 512


def browser_cookie(study: Study) -> str:
    """The name of the study's browser-marker cookie (one per study, as the resume cookie)."""
    return f"ss_seen_{study.entry_token[:12]}"


def browser_marker(cookie_value: str | None) -> str:
    """The marker this browser already holds for the study, or a new random one."""
    if cookie_value and MARKER_SHAPE.fullmatch(cookie_value):
        return cookie_value
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class EntryTags:
    """Keyed hashes of where an entry came from; what `Participant` stores of it."""

    browser: str
    client: str

    @classmethod
    def of(
        cls, key: str, study: Study, marker: str, address: str | None, agent: str | None
    ) -> EntryTags:
        def tag(*parts: str) -> str:
            message = "\n".join((str(study.id), *parts)).encode()
            return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()

        return cls(
            browser=tag("browser", marker),
            client=tag("client", address or "unknown", (agent or "")[:MAX_AGENT_CHARS]),
        )


@dataclass(frozen=True)
class Reentry:
    """Earlier participants an entry may repeat, and the evidence that matched any of them."""

    of: tuple[str, ...]  # public ids, in order of arrival
    evidence: tuple[str, ...]  # EVIDENCE_COOKIE and/or EVIDENCE_ADDRESS

    def columns(self) -> dict[str, str | None]:
        """Values for Participant.possible_reentry_of and .reentry_evidence."""
        return {
            "possible_reentry_of": "|".join(self.of) or None,
            "reentry_evidence": "|".join(self.evidence) or None,
        }


def earlier_entries(study: Study, tags: EntryTags, now: datetime) -> Reentry:
    """Earlier (non-preview) participants of `study` whose entry matches `tags`."""
    rows = db.session.execute(
        select(
            Participant.public_number,
            Participant.browser_tag,
            Participant.client_tag,
            Participant.started_at,
        )
        .where(
            Participant.study_id == study.id,
            Participant.is_preview.is_(False),
            or_(
                Participant.browser_tag == tags.browser,
                (Participant.client_tag == tags.client)
                & (Participant.started_at >= now - ADDRESS_WINDOW),
            ),
        )
        .order_by(Participant.public_number)
    ).all()
    of, evidence = [], set()
    for number, browser, client, started_at in rows:
        of.append(f"P{number:04d}")  # Participant.public_id: these rows are never previews
        if browser == tags.browser:
            evidence.add(EVIDENCE_COOKIE)
        if client == tags.client and as_utc(started_at) >= now - ADDRESS_WINDOW:
            evidence.add(EVIDENCE_ADDRESS)
    order = (EVIDENCE_COOKIE, EVIDENCE_ADDRESS)
    return Reentry(tuple(of), tuple(e for e in order if e in evidence))
