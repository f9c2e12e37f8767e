"""Durability under load: kill -9 the server (and optionally restart PostgreSQL) while simulated
participants are answering, bring it back, and check that no acknowledged answer was lost or
stored twice and that every participant resumed at the right trial.

    .venv/bin/python scripts/durability.py --participants 60 --kills 3
    SIGHTSOUND_LOAD_POSTGRES=postgresql+psycopg://postgres@127.0.0.1:5499/postgres \
        .venv/bin/python scripts/durability.py --restart-postgres scratch

`--restart-postgres CLUSTER` runs `pg_ctlcluster --skip-systemctl-redirect 15 CLUSTER restart`
mid-run: after the first kill, or with `--kills 0` while the server keeps running (its pooled
connections all break at once and must be replaced without losing anything). That breaks every
connection to that cluster, so use a scratch cluster (`pg_createcluster 15 scratch --port 5499
--start`, trust auth, dropped afterwards with `pg_dropcluster --stop 15 scratch`) or `main` only
where nothing else needs it at that moment.
`--shape SERVERS` runs the production shape instead (nginx in front of SERVERS app servers,
media through nginx, as `make serve` runs it): each kill round kills -9 one app server (back
2 s later) and then nginx (restarted), and the database restart comes after the rounds, while
every server runs; the result counts the 5xx the clients saw per disruption
(`server_errors_by_disruption`: none may come from the database restart):

    SIGHTSOUND_LOAD_POSTGRES=postgresql+psycopg://postgres@127.0.0.1:5499/postgres \
        .venv/bin/python scripts/durability.py --shape 2 --workers 2 --participants 500 \
        --concurrency 40 --kills 2 --every 5 --restart-postgres scratch

tests/app/test_durability.py runs each on a small scale (the restart on a scratch cluster it
creates).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import (  # noqa: E402
    Recorder,
    Server,
    free_port,
    run_participants,
    scratch_postgres,
    set_up_study,
    verify,
)


def installed_postgres_version() -> str:
    """The newest PostgreSQL major version with Debian cluster configuration (/etc/postgresql)."""
    return max(os.listdir("/etc/postgresql"), key=int)


def restart_postgres(cluster: str = "main", version: str | None = None) -> None:
    version = version or installed_postgres_version()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart"],
        check=True,
        timeout=60,
    )


async def _chaos(server: Server, kills: int, every: float, restart_db, log: list) -> None:
    loop = asyncio.get_running_loop()
    if restart_db and kills == 0:
        # The database alone goes away and comes back; the server keeps running on connections
        # that are all dead now.
        await asyncio.sleep(every)
        began = time.monotonic()  # the outage starts here: the restart stops the server first
        await loop.run_in_executor(None, restart_postgres, restart_db)
        log.append({"at": time.monotonic(), "began": began, "event": "postgresql restarted"})
        return
    for number in range(kills):
        await asyncio.sleep(every)
        await loop.run_in_executor(None, server.kill9)
        log.append({"at": time.monotonic(), "event": f"kill -9 #{number + 1}"})
        if restart_db and number == 0:
            await loop.run_in_executor(None, restart_postgres, restart_db)
            log.append({"at": time.monotonic(), "event": "postgresql restarted"})
        await asyncio.sleep(0.5)
        await loop.run_in_executor(None, server.start)
        log.append({"at": time.monotonic(), "event": "server back"})


async def _shape_chaos(shape, kills: int, every: float, restart_db, log: list) -> None:
    """The production shape (scripts/serve.py's Shape): `kills` rounds, each a kill -9 of one
    app server (the next in turn; back 2 s later, while nginx sends its share to the others)
    and then of nginx (restarted 0.5 s later), `every` seconds apart; then, with `restart_db`,
    a PostgreSQL restart with every server running. One thing at a time, so that each
    disruption's errors are its own."""
    loop = asyncio.get_running_loop()
    for number in range(kills):
        await asyncio.sleep(every)
        server = shape.app_servers[number % len(shape.app_servers)]
        began = time.monotonic()
        await loop.run_in_executor(None, server.signal, signal.SIGKILL)
        log.append({"at": time.monotonic(), "event": f"kill -9 app server {server.address}"})
        await asyncio.sleep(2.0)
        await loop.run_in_executor(None, server.start)
        await loop.run_in_executor(None, shape.wait, server.healthy, 60.0)
        log.append({"at": time.monotonic(), "began": began, "event": "app server back"})
        await asyncio.sleep(every)
        began = time.monotonic()
        await loop.run_in_executor(None, shape.kill9_nginx)
        log.append({"at": time.monotonic(), "event": "kill -9 nginx"})
        await asyncio.sleep(0.5)
        await loop.run_in_executor(None, shape.start_nginx)
        log.append({"at": time.monotonic(), "began": began, "event": "nginx back"})
    if restart_db:
        await asyncio.sleep(every)
        began = time.monotonic()
        await loop.run_in_executor(None, restart_postgres, restart_db)
        log.append({"at": time.monotonic(), "began": began, "event": "postgresql restarted"})


async def _run(server, entry, participants, concurrency, recorder, kills, every, restart_db, limit):
    log: list[dict[str, Any]] = []
    if isinstance(server, Server):
        chaos = asyncio.create_task(_chaos(server, kills, every, restart_db, log))
        base = server.base
    else:
        chaos = asyncio.create_task(_shape_chaos(server, kills, every, restart_db, log))
        base = server.url
    seconds = await run_participants(
        base, entry, participants, concurrency, recorder, time_limit=limit
    )
    finished_at = time.monotonic()
    await chaos  # every restart done before we look at the database
    # Whether each disruption struck while participants were still playing: only those test
    # anything (a server that retries a dropped database connection itself leaves the clients
    # nothing to retry, so their retry count cannot say it).
    for event in log:
        event["during_study"] = event.get("began", event["at"]) < finished_at
    return seconds, log


def run_durability(
    database_url: str,
    media_dir: Path,
    entry_token: str,
    *,
    participants: int,
    concurrency: int,
    kills: int,
    every: float,
    workers: int = 2,
    engine_options=None,
    restart_db: str | None = None,
    time_limit: float = 120,
    log: Path | None = None,
    shape: int = 0,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Play `participants` while killing the server `kills` times, `every` seconds apart (and
    restarting PostgreSQL cluster `restart_db` after the first kill); then let them finish and
    verify the database (see loadgen.verify).

    `shape` N: the production shape instead (nginx in front of N app servers, media through
    nginx, scripts/serve.py's Shape, its files in `run_dir`): each kill round kills one app
    server and then nginx, and the database restart comes after the rounds (_shape_chaos)."""
    if shape:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import serve

        config: dict[str, Any] = {"MEDIA_DIR": str(media_dir)}
        if engine_options is not None:
            config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options
        server = serve.Shape(
            run_dir or Path(tempfile.mkdtemp(prefix="sightsound-shape-")), free_port(),
            servers=shape, workers=workers, config=config,
            env=dict(os.environ, DATABASE_URL=database_url, SECRET_KEY=secrets.token_hex(16)),
        )  # fmt: skip
    else:
        server = Server(database_url, media_dir, workers=workers, engine_options=engine_options)
        server.log = log
    server.start()
    recorder = Recorder()
    try:
        seconds, events = asyncio.run(
            _run(
                server,
                entry_token,
                participants,
                concurrency,
                recorder,
                kills,
                every,
                restart_db,
                time_limit,
            )
        )
    finally:
        server.stop()
    result = verify(database_url, recorder, engine_options)
    result.update(
        seconds=round(seconds, 1),
        kills=sum(1 for e in events if e["event"].startswith("kill")),
        database_restarts=sum(1 for e in events if e["event"] == "postgresql restarted"),
        disruptions_after_study=sum(1 for e in events if not e["during_study"]),
        client_retries=recorder.retries,
        connection_errors=sum(recorder.errors.values()),
        errors_by_request=dict(recorder.errors),
        server_errors=sum(n for name, n in recorder.errors.items() if name.endswith(
            tuple(f" {code}" for code in range(500, 600)))),
        server_errors_by_disruption=by_disruption(events, recorder.server_errors),
        connection_failures_by_disruption=by_disruption(events, recorder.connection_failures),
    )
    return result


def by_disruption(events: list[dict], failures: list[tuple[float, str]]) -> dict[str, int]:
    """5xx responses (or failed connections) the clients saw per disruption: from its start
    until 10 s after it ended (the server's wait for the database, DB_RETRY_WAIT_SECONDS),
    each counted against the latest disruption that had begun; "other" for the rest.

    >>> by_disruption([{"began": 1.0, "at": 3.0, "event": "nginx back"},
    ...                {"began": 10.0, "at": 12.0, "event": "postgresql restarted"}],
    ...               [(2.0, "answer POST 502"), (11.0, "answer POST 500"), (30.0, "media 502")])
    {'nginx back': 1, 'postgresql restarted': 1, 'other': 1}
    """
    windows = sorted((e for e in events if "began" in e), key=lambda e: e["began"], reverse=True)
    counts = {event["event"]: 0 for event in reversed(windows)}
    counts["other"] = 0
    for at, _ in failures:
        latest = next((e for e in windows if e["began"] <= at), None)
        if latest is not None and at <= latest["at"] + 10:
            counts[latest["event"]] += 1
        else:
            counts["other"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--every", type=float, default=4.0, help="seconds between kills")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument(
        "--restart-postgres",
        metavar="CLUSTER",
        help="also restart this PostgreSQL 15 cluster after the first kill (e.g. a scratch "
        "cluster on its own port; set SIGHTSOUND_LOAD_POSTGRES to reach it)",
    )
    parser.add_argument(
        "--shape",
        type=int,
        default=0,
        metavar="SERVERS",
        help="the production shape: nginx in front of SERVERS app servers (each kill round "
        "kills one app server, then nginx; the database restart comes after the rounds)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.participants <= 2000 or not 0 <= args.kills <= 20:
        parser.error("participants must be 1..2000 and kills 0..20")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sightsound-dur-")))
        if args.database == "postgresql":
            url = stack.enter_context(scratch_postgres())
        else:
            url = f"sqlite:///{tmp / 'durability.sqlite'}"
        entry = set_up_study(url, tmp / "media", tmp / "set")
        result = run_durability(
            url,
            tmp / "media",
            entry,
            participants=args.participants,
            concurrency=args.concurrency,
            kills=args.kills,
            every=args.every,
            workers=args.workers,
            restart_db=args.restart_postgres if args.database == "postgresql" else None,
            time_limit=600,
            shape=args.shape,
            run_dir=tmp / "serve",
        )
    print(json.dumps(result, indent=2))
    ok = (
        result["lost"] == 0
        and result["duplicated"] == 0
        and result["participants_out_of_order"] == 0
        and result["unacknowledged_with_answers"] == 0
        and result["stored_never_sent"] == 0
        and result["finished"] == args.participants
        and result["server_errors_by_disruption"].get("postgresql restarted", 0) == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
