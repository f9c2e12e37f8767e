"""Retry a request once when its PostgreSQL connection dropped (a database restart, a failover,
a killed backend), so that participants see the page rather than an error.

`pool.ping_after_idle` replaces a dead connection before a request uses it, but only one that
sat idle a while; a connection that dies *during* a request (or in the moment between two busy
requests) fails that request. Here such a request is run again, once, on a fresh connection:

- only requests that may run twice: reads (GET, HEAD); a participant's answer, which is
  idempotent by trial token (the unique key on the trial: if the first try's INSERT was
  committed before the connection dropped, the retry finds the answer stored and stores
  nothing; `services.record_answer`); and the enrolment POST (with an external id the retry
  finds the participant the first try stored; without one, a first try committed just before
  the drop leaves an enrolment nobody holds, with no answers, like a visitor who left at the
  welcome page, which the export and the analysis already treat as no data);
- only for connection failures: psycopg errors with no SQLSTATE (the socket closed, the server
  refused the connection), class 08 (connection exception) or 57P01-57P03 (the server shutting
  down or starting up). A constraint violation, a timeout or a bad query is never retried;
- before the retry, the database gets up to `DB_RETRY_WAIT_SECONDS` (default 10) to accept
  connections again, since a restart refuses them for a second or two.

SQLite is left alone: its connections are files and do not drop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, g, request
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from .extensions import db

log = logging.getLogger(__name__)

RETRYABLE_METHODS = frozenset({"GET", "HEAD"})
# POSTs that may run twice: the answer (idempotent by trial token, see the module docstring).
IDEMPOTENT_POST_ENDPOINTS = frozenset({"participant.answer", "participant.join"})
SHUTDOWN_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
WAIT_STEP_SECONDS = 0.2


def is_connection_failure(exc: BaseException) -> bool:
    """True for a dropped or refused PostgreSQL connection (psycopg), never for SQLite."""
    if not isinstance(exc, DBAPIError) or exc.orig is None:
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False  # a bad query or a constraint: the same on any connection
    if not hasattr(exc.orig, "sqlstate"):  # not psycopg: sqlite3's errors have no SQLSTATE
        return False
    sqlstate = exc.orig.sqlstate
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in SHUTDOWN_SQLSTATES


def retryable_request() -> bool:
    return request.method in RETRYABLE_METHODS or (
        request.method == "POST" and request.endpoint in IDEMPOTENT_POST_ENDPOINTS
    )


def wait_for_database(app: Flask, seconds: float) -> bool:
    """Poll until the database answers `select 1`, for at most `seconds`; True if it did."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with db.engine.connect() as conn:
                conn.execute(text("select 1"))
            return True
        except DBAPIError as exc:
            if not is_connection_failure(exc) or time.monotonic() >= deadline:
                return False
        time.sleep(WAIT_STEP_SECONDS)


def install(app: Flask) -> None:
    """Wrap `app`'s request pre-processing and view dispatch with the retry-once."""
    wait_seconds = float(app.config.get("DB_RETRY_WAIT_SECONDS", 10))
    preprocess: Callable[[], Any] = app.preprocess_request
    dispatch: Callable[[], Any] = app.dispatch_request

    def retry(exc: DBAPIError) -> None:
        """Re-raise `exc` unless this request may and still can be retried; else reset."""
        if g.get("_db_retried") or not retryable_request() or not is_connection_failure(exc):
            raise exc
        g._db_retried = True
        log.warning(
            "database connection lost during %s %s; retrying once", request.method, request.path
        )
        # The session's objects belong to the dead connection: start the request afresh, with
        # the logged-in researcher (flask-login caches them in g) loaded again too.
        db.session.remove()
        g.pop("_login_user", None)
        # Every pooled connection died with the server, not only this one: start a new pool so
        # the retry cannot draw another dead one (connections still checked out by other
        # requests are closed when they are returned, not yanked from under them).
        db.engine.dispose()
        if not wait_for_database(app, wait_seconds):
            raise exc

    def preprocess_request() -> Any:
        try:
            return preprocess()
        except DBAPIError as exc:
            retry(exc)
            return preprocess()

    def dispatch_request() -> Any:
        try:
            return dispatch()
        except DBAPIError as exc:
            retry(exc)
            # before_request functions set up the connection (the participant pages' autocommit)
            rv = preprocess()
            return rv if rv is not None else dispatch()

    app.preprocess_request = preprocess_request  # type: ignore[method-assign]
    app.dispatch_request = dispatch_request  # type: ignore[method-assign]

    @app.teardown_appcontext
    def remove_session(exc: BaseException | None) -> None:
        """The session's end (its ROLLBACK) on a connection the server dropped after the view
        had answered (a PostgreSQL restart between the two): the transaction died with the
        connection, so nothing is lost, and the response must not become a 500 (it did, in the
        durability test of 2026-12-07). Registered after Flask-SQLAlchemy's, so it runs first;
        any other error still raises."""
        try:
            db.session.remove()
        except DBAPIError as error:
            if not is_connection_failure(error):
                raise
            # (No request here necessarily: app contexts end this way in the CLI too.)
            log.warning("database connection lost as the session ended; nothing was pending")
            db.session.registry.clear()
