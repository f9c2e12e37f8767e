"""Database models (SQLAlchemy 2.0 typed). Migrations live in migrations/ (Alembic)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from flask import current_app, has_app_context
from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    false,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from .design import with_defaults
from .extensions import db, login_manager


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_token() -> str:
    """An opaque, unguessable token (256 bits): participants see nothing else."""
    return secrets.token_urlsafe(32)


class Researcher(UserMixin, db.Model):
    __tablename__ = "researchers"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password, method=password_hash_method())

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


def password_hash_method() -> str:
    """The app's ``PASSWORD_HASH_METHOD`` (scrypt unless configured otherwise; the tests use a
    cheap one so that hundreds of logins cost no minutes), scrypt outside an app."""
    return current_app.config.get("PASSWORD_HASH_METHOD", "scrypt") if has_app_context() \
        else "scrypt"


@login_manager.user_loader
def load_researcher(user_id: str) -> Researcher | None:
    return db.session.get(Researcher, int(user_id))


class StimulusSet(db.Model):
    __tablename__ = "stimulus_sets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    folder: Mapped[str] = mapped_column(Text)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    clips: Mapped[list[Clip]] = relationship(back_populates="stimulus_set")
    segments: Mapped[list[Segment]] = relationship(back_populates="stimulus_set")


class Segment(db.Model):
    """A segment of a performance video; its muted video is what emotion trials show."""

    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("stimulus_set_id", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    stimulus_set_id: Mapped[int] = mapped_column(ForeignKey("stimulus_sets.id"))
    key: Mapped[str] = mapped_column(String(128))  # the manifest's segment id
    source_key: Mapped[str] = mapped_column(String(128))
    start: Mapped[float] = mapped_column(Float)
    duration: Mapped[float] = mapped_column(Float)
    video_file: Mapped[str | None] = mapped_column(String(200))  # under MEDIA_DIR
    video_mimetype: Mapped[str | None] = mapped_column(String(40))
    stimulus_set: Mapped[StimulusSet] = relationship(back_populates="segments")


class Clip(db.Model):
    __tablename__ = "clips"
    __table_args__ = (UniqueConstraint("stimulus_set_id", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    stimulus_set_id: Mapped[int] = mapped_column(ForeignKey("stimulus_sets.id"))
    key: Mapped[str] = mapped_column(String(128))  # the manifest's clip id
    segment_key: Mapped[str] = mapped_column(String(128))
    source_key: Mapped[str] = mapped_column(String(128))
    condition: Mapped[str] = mapped_column(String(40))
    duration: Mapped[float] = mapped_column(Float)
    # A canonical copy (plain PCM WAV, no metadata) under MEDIA_DIR with a random name: what
    # participants are served, so nothing in the original file can reach them.
    media_file: Mapped[str] = mapped_column(String(200))
    stimulus_set: Mapped[StimulusSet] = relationship(back_populates="clips")


class Study(db.Model):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[int] = mapped_column(ForeignKey("researchers.id"))
    stimulus_set_id: Mapped[int] = mapped_column(ForeignKey("stimulus_sets.id"))
    design: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="draft")  # draft -> open -> closed
    entry_token: Mapped[str] = mapped_column(String(64), unique=True, default=new_token)
    completion_code: Mapped[str] = mapped_column(String(64))
    # How many real participants ever enrolled (withdrawn ones included): the next arrival's
    # public number is this plus one, so a public id is never given to a second person.
    participants_enrolled: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    owner: Mapped[Researcher] = relationship()
    stimulus_set: Mapped[StimulusSet] = relationship()
    participants: Mapped[list[Participant]] = relationship(back_populates="study")

    @property
    def blocks(self) -> list[dict[str, Any]]:
        """The design's blocks as stored, in order (a trial's `block_index` indexes them)."""
        return self.design["blocks"]


class Participant(db.Model):
    __tablename__ = "participants"
    __table_args__ = (
        UniqueConstraint("study_id", "assignment_index"),
        UniqueConstraint(
            "study_id", "public_number", name="uq_participants_study_id_public_number"
        ),
        UniqueConstraint("study_id", "external_id"),
        Index("ix_participants_study_id_browser_tag", "study_id", "browser_tag"),
        Index("ix_participants_study_id_client_tag", "study_id", "client_tag"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    token: Mapped[str] = mapped_column(String(64), unique=True, default=new_token)
    # The counterbalancing cell (Latin-square list, positions): a withdrawn participant's cell
    # goes to the next arrival, so the cells stay balanced over the participants who remain.
    assignment_index: Mapped[int] = mapped_column(Integer)
    # Order of arrival, never reused (withdrawals included): what `public_id` and the export show.
    # Previews count down from -1.
    public_number: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    external_id: Mapped[str | None] = mapped_column(String(64))  # PROLIFIC_PID
    external_study_id: Mapped[str | None] = mapped_column(String(64))  # STUDY_ID
    external_session_id: Mapped[str | None] = mapped_column(String(64))  # SESSION_ID
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    screened_out: Mapped[bool] = mapped_column(Boolean, default=False)
    # A researcher's preview run: never counted, never exported, never balanced against.
    is_preview: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Possible re-entry under another PROLIFIC_PID (reentry.py): keyed hashes of the entry's
    # browser marker and of its client address + User-Agent, and what matched at entry: earlier
    # participants' public ids and the evidence, joined by '|'. Flags for the researcher only.
    browser_tag: Mapped[str | None] = mapped_column(String(64))
    client_tag: Mapped[str | None] = mapped_column(String(64))
    possible_reentry_of: Mapped[str | None] = mapped_column(Text)
    reentry_evidence: Mapped[str | None] = mapped_column(String(40))
    study: Mapped[Study] = relationship(back_populates="participants")
    trials: Mapped[list[Trial]] = relationship(
        back_populates="participant", order_by="Trial.trial_index", cascade="all, delete-orphan"
    )

    @property
    def public_id(self) -> str:
        if self.public_number < 0:
            return f"PREVIEW{-self.public_number:04d}"
        return f"P{self.public_number:04d}"


class Trial(db.Model):
    """One scheduled trial. `spec` is server-side only; the browser sees `token`."""

    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("participant_id", "trial_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    trial_index: Mapped[int] = mapped_column(Integer)
    trial_in_block: Mapped[int] = mapped_column(Integer)
    block_id: Mapped[str] = mapped_column(String(40))
    block_index: Mapped[int] = mapped_column(Integer)
    trial_type: Mapped[str] = mapped_column(String(40))
    token: Mapped[str] = mapped_column(String(64), unique=True, default=new_token)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    presented_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    participant: Mapped[Participant] = relationship(back_populates="trials")
    response: Mapped[Response | None] = relationship(
        back_populates="trial", cascade="all, delete-orphan"
    )

    @property
    def block(self) -> dict[str, Any]:
        """This trial's block of the study's design, with any option it predates filled in."""
        return with_defaults(self.participant.study.blocks[self.block_index])


class Response(db.Model):
    """An answer. One per trial (the unique key makes a repeated submit a no-op)."""

    __tablename__ = "responses"
    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), unique=True)
    answer: Mapped[dict[str, Any]] = mapped_column(JSON)
    answered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    trial: Mapped[Trial] = relationship(back_populates="response")


class MediaEvidence(db.Model):
    """What the server wrote of one trial slot's media while the trial was unanswered: the
    union of the byte ranges handed to the connection (merged as it grows, at most
    listening.MAX_RANGES intervals), how many requests asked for it, and the throttle's
    current window. One row per (trial, slot), however many requests: the server's own
    evidence of listening (listening.py) stays as small as the study's trials."""

    __tablename__ = "media_evidence"
    __table_args__ = (UniqueConstraint("trial_id", "slot", name="uq_media_evidence_trial_slot"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    slot: Mapped[str] = mapped_column(String(16))
    total_bytes: Mapped[int] = mapped_column(Integer)  # the whole file's length
    # [[first, end), ...]: sorted, disjoint, not touching; bytes first..end-1 were written
    ranges: Mapped[list[list[int]]] = mapped_column(JSON)
    requests: Mapped[int] = mapped_column(Integer)  # media requests answered for this slot
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # first one recorded
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The flood throttle's fixed window: its start and the requests answered in it.
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_requests: Mapped[int] = mapped_column(Integer)


class AuditEvent(db.Model):
    """Who did what to a study's data (withdrawals above all), kept after the data is gone."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    researcher_id: Mapped[int | None] = mapped_column(ForeignKey("researchers.id"))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(40))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LoginFailure(db.Model):
    """A failed researcher login, kept for the throttle's window. In the database (not in a
    worker's memory) so that every server worker counts the same attempts."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_at", "key", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(254))  # the lower-cased email tried
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Preregistration(db.Model):
    """A study's pre-registration (issue 22): the researcher's text while it is a draft, and
    the plan frozen when the study opens. ``plan_json`` keeps the exact canonical JSON bytes
    its ``sha256`` was taken of (a JSON column could reorder keys or reformat numbers)."""

    __tablename__ = "preregistrations"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), unique=True
    )
    text: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    plan_json: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    frozen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    amendments: Mapped[list[PreregistrationAmendment]] = relationship(
        order_by="PreregistrationAmendment.id", cascade="all, delete-orphan"
    )


class PreregistrationAmendment(db.Model):
    """A dated change to a frozen plan, with its reason: appended, never an edit of the plan."""

    __tablename__ = "preregistration_amendments"
    id: Mapped[int] = mapped_column(primary_key=True)
    preregistration_id: Mapped[int] = mapped_column(
        ForeignKey("preregistrations.id", ondelete="CASCADE")
    )
    researcher_id: Mapped[int | None] = mapped_column(ForeignKey("researchers.id"))
    text: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):  # noqa: ARG001
    """SQLite: WAL (readers never block the writer), enforced foreign keys, patient locking."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
