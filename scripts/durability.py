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
tests/app/test_durability.py runs both on a small scale (the restart on a scratch cluster it
creates).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
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


async def _run(server, entry, participants, concurrency, recorder, kills, every, restart_db, limit):
    log: list[dict[str, Any]] = []
    chaos = asyncio.create_task(_chaos(server, kills, every, restart_db, log))
    seconds = await run_participants(
        server.base, entry, participants, concurrency, recorder, time_limit=limit
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
) -> dict[str, Any]:
    """Play `participants` while killing the server `kills` times, `every` seconds apart (and
    restarting PostgreSQL cluster `restart_db` after the first kill); then let them finish and
    verify the database (see loadgen.verify)."""
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
    )
    return result


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
            time_limit=300,
        )
    print(json.dumps(result, indent=2))
    ok = (
        result["lost"] == 0
        and result["duplicated"] == 0
        and result["participants_out_of_order"] == 0
        and result["finished"] == args.participants
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
