"""Connection pool liveness: ping a pooled connection only when it has been idle a while.

SQLAlchemy's `pool_pre_ping` pings on every checkout: one extra round trip per request, a tenth
of a busy worker's time on PostgreSQL. A connection that was checked in a moment ago cannot have
missed a database restart (a restart takes far longer than `IDLE_SECONDS`), so only connections
idle for longer are pinged. A dead one is replaced before the request sees it, exactly as with
`pool_pre_ping`; a connection that dies *during* a request fails that request either way, and
SQLAlchemy then invalidates the rest of the pool.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

# Shorter than any PostgreSQL restart (shutdown checkpoint plus start-up), longer than the gap
# between two requests of a busy worker.
IDLE_SECONDS = 0.25


def ping_after_idle(engine: Engine, idle_seconds: float = IDLE_SECONDS) -> None:
    """Ping connections idle for more than `idle_seconds` when they are checked out."""

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _remember_last_use(dbapi_connection: Any, record: Any) -> None:  # noqa: ARG001
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:  # noqa: ARG001
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is not None and time.monotonic() - checked_in_at < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            if engine.dialect.is_disconnect(exc, dbapi_connection, None):
                # The pool discards this connection and checks out (or opens) another.
                raise DisconnectionError(str(exc)) from exc
            raise
