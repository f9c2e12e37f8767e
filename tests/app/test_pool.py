"""Pool liveness (study_app/pool.py): a connection idle past the threshold is pinged and, if the
database dropped it, replaced before anyone uses it; a connection in steady use is not pinged."""

from __future__ import annotations

import time

import pytest
import sqlalchemy
from conftest import POSTGRES_URL

from study_app.pool import ping_after_idle


@pytest.fixture
def engine(postgres_ready):
    engine = sqlalchemy.create_engine(POSTGRES_URL, pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


@pytest.fixture
def pings(engine, monkeypatch):
    calls: list[int] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection):
        calls.append(1)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return calls


def backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(sqlalchemy.text("select pg_backend_pid()"))


def terminate(pid: int) -> None:
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        assert conn.scalar(sqlalchemy.text(f"select pg_terminate_backend({pid})"))
    admin.dispose()


def test_a_connection_in_steady_use_is_not_pinged(engine, pings):
    ping_after_idle(engine, idle_seconds=60)
    first = backend_pid(engine)
    pings.clear()  # a new connection counts as just used; nothing pinged it
    assert [backend_pid(engine) for _ in range(20)] == [first] * 20
    assert pings == []


def test_an_idle_connection_the_database_dropped_is_replaced_unseen(engine, pings):
    ping_after_idle(engine, idle_seconds=0.05)
    dropped = backend_pid(engine)
    terminate(dropped)  # as a database restart does to every connection
    time.sleep(0.1)
    replacement = backend_pid(engine)  # no error: the ping found it dead, the pool reconnected
    assert replacement != dropped
    assert len(pings) == 1


def test_without_the_ping_the_dropped_connection_reaches_the_request(engine, pings):
    """The control: the same drop within the threshold is not caught, so the first statement
    fails (and SQLAlchemy then discards the connection). A restart takes longer than the
    threshold, so this happens only to a request already running when the database goes."""
    ping_after_idle(engine, idle_seconds=60)
    dropped = backend_pid(engine)
    terminate(dropped)
    with pytest.raises(sqlalchemy.exc.OperationalError):
        backend_pid(engine)
    assert backend_pid(engine) != dropped
    assert pings == []
