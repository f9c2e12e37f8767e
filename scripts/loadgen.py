"""Load generator: N simulated participants play a whole study against gunicorn on 127.0.0.1.

    .venv/bin/python scripts/loadgen.py --participants 500 --concurrency 16 --workers 4

By default it sets everything up and tears it down again: a scratch PostgreSQL database (created
and dropped; `--database sqlite` for SQLite in a temporary folder), the demo stimulus set and
study, and gunicorn with `--workers` sync workers. It measures the ceiling (a bare Flask
endpoint, /healthz, served by the same gunicorn at the same concurrency, for as many requests as
the trial loop makes: half before the study and half after, since a shared machine's speed
drifts), and the study: each participant joins (GET + POST with the CSRF token), and for every
trial GETs the page, parses the form action and media URLs, fetches each medium with `Range:
bytes=0-` as browsers do, and posts a valid answer. It reports throughput and p50/p95/p99 latency
per endpoint, the trial loop's p99 and its throughput as a share of the ceiling, the CPU
milliseconds per request spent by the server, PostgreSQL and the client in each phase, and
checks in the database that every acknowledged answer (303) is stored exactly once and nothing
else is.

`--shape SERVERS` puts the production shape in place of the one gunicorn: nginx in front of
SERVERS app servers of `--workers` each, media through nginx (scripts/serve.py's Shape, as
`make serve` runs it: a shown trial's media sent directly, anything else by X-Accel-Redirect
after the app's authorisation; `--x-accel-only`: every media request through the app, as
before direct sends; `--media-through-app`: the app sends them).

Everything is bounded: the number of participants and requests, a per-request timeout and a
wall-clock limit for the whole run. Traffic goes to 127.0.0.1 only.

`scripts/durability.py` and `tests/app/test_durability.py` reuse the pieces (Server, Recorder,
play_participant, set_up_study, verify).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from study_app.audit import FORM_ACTION, MEDIA_SRC, fill_form  # noqa: E402

POSTGRES_ADMIN = os.environ.get(
    "SIGHTSOUND_LOAD_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
CSRF = 'name="csrf_token" value="'


# The server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """gunicorn serving create_app() on 127.0.0.1, in its own process group so that kill -9
    takes the master and every worker at once (as a crash or an OOM kill would)."""

    database_url: str
    media_dir: Path
    workers: int = 4
    port: int = field(default_factory=free_port)
    engine_options: dict[str, Any] | None = None
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))
    threads: int = 1
    log: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        config: dict[str, Any] = {"MEDIA_DIR": str(self.media_dir)}
        if self.engine_options is not None:
            config["SQLALCHEMY_ENGINE_OPTIONS"] = self.engine_options
        env = dict(os.environ, DATABASE_URL=self.database_url, SECRET_KEY=self.secret_key)
        command = [
            str(Path(sys.executable).with_name("gunicorn")),
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--backlog",
            "2048",
            "--timeout",
            "60",
            "--log-level",
            "warning",
            f"study_app:create_app({config!r})",
        ]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=out, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}")
            if self.healthy():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("gunicorn did not start in time")

    def healthy(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                return sock.recv(64).startswith(b"HTTP/1.")
        except OSError:
            return False

    def kill9(self) -> None:
        """SIGKILL to the whole process group: no graceful anything."""
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()


# The database and the study --------------------------------------------------------------


@contextlib.contextmanager
def scratch_postgres(admin_url: str = POSTGRES_ADMIN):
    """A PostgreSQL database of our own, dropped afterwards."""
    import sqlalchemy

    name = f"sightsound_load_{secrets.token_hex(4)}"
    from sqlalchemy.pool import NullPool

    # NullPool: a fresh connection for the drop, even if the cluster was restarted meanwhile.
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def make_app(database_url: str, media_dir: Path, engine_options=None):
    from study_app import create_app

    config = {"SQLALCHEMY_DATABASE_URI": database_url, "MEDIA_DIR": str(media_dir)}
    config["SECRET_KEY"] = "loadgen-setup"
    if engine_options is not None:
        config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options
    return create_app(config)


def set_up_study(database_url: str, media_dir: Path, set_dir: Path, engine_options=None) -> str:
    """Tables, the demo stimulus set and the demo study; returns the study's entry token."""
    from demo_set import build_demo_set
    from study_app.design import read_design_file
    from study_app.extensions import db
    from study_app.models import Researcher
    from study_app.services import create_study, import_stimulus_set

    if not (set_dir / "manifest.json").exists():
        build_demo_set(set_dir)
    app = make_app(database_url, media_dir, engine_options)
    with app.app_context():
        db.create_all()
        import_stimulus_set(set_dir, media_dir)
        owner = Researcher(email="load@example.invalid")
        owner.set_password(secrets.token_hex(8))
        db.session.add(owner)
        db.session.commit()
        design = read_design_file(REPO / "stimuli" / "demo_study.yaml")
        token = create_study(design, owner).entry_token
        db.engine.dispose()
    return token


# The simulated participants --------------------------------------------------------------


@dataclass
class Recorder:
    """What the clients saw: latencies per endpoint, acknowledged answers, pages shown."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    acked: list[tuple[str, str]] = field(default_factory=list)  # (participant, trial) tokens
    posted: set[str] = field(default_factory=set)  # trial tokens answered, acknowledged or not
    shown: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    finished: set[str] = field(default_factory=set)
    retries: int = 0
    # (time.monotonic(), "name status") of every 5xx, to place them against a disruption
    server_errors: list[tuple[float, str]] = field(default_factory=list)
    # the same for requests that got no answer at all (refused, reset)
    connection_failures: list[tuple[float, str]] = field(default_factory=list)

    # (time.monotonic() at the end, milliseconds) of every trial page and answer, for the
    # study's minute-by-minute figures (where in the run the tail is: the ramp, or later)
    paced: list[tuple[float, float]] = field(default_factory=list)

    def timed(self, name: str, seconds: float) -> None:
        self.latencies[name].append(seconds * 1000)
        if name in ("trial page", "answer POST"):
            self.paced.append((time.monotonic(), seconds * 1000))


class Unavailable(Exception):
    """The server did not answer (down, restarting): the client waits and tries again."""


async def request(
    session,
    recorder: Recorder,
    name: str,
    method: str,
    url: str,
    *,
    keep_body: bool = True,
    **kwargs,
):
    """One request, timed until its last byte arrived. `keep_body=False` (media) reads every
    byte as a browser's audio element does but keeps none: the body comes back as b''."""
    import aiohttp

    started = time.perf_counter()
    try:
        async with session.request(method, url, allow_redirects=False, **kwargs) as response:
            if keep_body:
                body = await response.read()
            else:
                async for _ in response.content.iter_chunked(1 << 17):
                    pass
                body = b""
            status = response.status
            headers = response.headers
    except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
        recorder.errors[name] += 1
        recorder.connection_failures.append((time.monotonic(), name))
        raise Unavailable(str(exc)) from exc
    recorder.timed(name, time.perf_counter() - started)
    if status >= 500:
        recorder.errors[f"{name} {status}"] += 1
        recorder.server_errors.append((time.monotonic(), f"{name} {status}"))
        raise Unavailable(f"{status}")
    return status, headers, body


async def play_participant(
    make_session,
    base: str,
    entry_token: str,
    recorder: Recorder,
    rng: np.random.Generator,
    *,
    deadline: float,
    max_steps: int = 200,
    think: tuple[float, float] | None = None,
) -> None:
    """Join and answer every trial; survive a server that dies and comes back (retrying with a
    bounded back-off until `deadline`). `think` (seconds, low and high): at human pace, each
    trial is answered a uniform draw from that range after its page and media arrived."""
    async with make_session() as session:
        step_url = None
        steps = 0
        while time.monotonic() < deadline and steps < max_steps:
            try:
                if step_url is None:
                    _, _, body = await request(
                        session, recorder, "join GET", "GET", f"{base}/join/{entry_token}"
                    )
                    html = body.decode()
                    csrf = html.split(CSRF, 1)[1].split('"', 1)[0]
                    status, headers, _ = await request(
                        session,
                        recorder,
                        "join POST",
                        "POST",
                        f"{base}/join/{entry_token}",
                        data={"csrf_token": csrf},
                    )
                    if status != 302:
                        raise Unavailable(f"join answered {status}")
                    step_url = base + headers["Location"]
                    continue
                steps += 1
                _, _, body = await request(session, recorder, "trial page", "GET", step_url)
                html = body.decode()
                action = FORM_ACTION.search(html)
                token = step_url.rstrip("/").rsplit("/", 1)[1]
                if action is None:
                    recorder.finished.add(token)
                    return
                trial = action.group(1).rsplit("/", 1)[1]
                shown = recorder.shown[token]
                if not shown or shown[-1] != trial:
                    shown.append(trial)
                for src in MEDIA_SRC.findall(html):
                    status, _, _ = await request(
                        session, recorder, "media", "GET", base + src,
                        headers={"Range": "bytes=0-"}, keep_body=False,
                    )  # fmt: skip
                    if status != 206:
                        recorder.errors[f"media {status}"] += 1
                data = fill_form(html, rng)
                if think is not None:
                    await asyncio.sleep(float(rng.uniform(*think)))
                recorder.posted.add(trial)
                status, _, _ = await request(
                    session, recorder, "answer POST", "POST", base + action.group(1), data=data
                )
                if status == 303:
                    recorder.acked.append((token, trial))
                else:
                    recorder.errors[f"answer {status}"] += 1
            except Unavailable:
                recorder.retries += 1
                await asyncio.sleep(0.2 + 0.3 * rng.random())


async def run_participants(
    base: str,
    entry_token: str,
    participants: int,
    concurrency: int,
    recorder: Recorder,
    *,
    time_limit: float,
    seed: int = 0,
    request_timeout: float = 10.0,
    think: tuple[float, float] | None = None,
    ramp: float = 0.0,
    keep_alive: bool = False,
) -> float:
    """`participants` participants, at most `concurrency` at a time; returns the wall time.
    `think`: human pace (play_participant); `ramp`: arrivals spread evenly over so many
    seconds (a study opening on Prolific), the first at once. `keep_alive`: each participant
    keeps its connections open between requests as a browser does (at most six, idle ones
    closed after 60 s, nginx's keepalive_timeout being 65 s); without it every request opens
    a connection of its own (gunicorn's sync workers close each one anyway)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency * 2, force_close=True)
    timeout = aiohttp.ClientTimeout(total=request_timeout)

    def make_session():
        own = aiohttp.TCPConnector(limit=6, keepalive_timeout=60) if keep_alive else None
        return aiohttp.ClientSession(
            connector=own or connector,
            connector_owner=own is not None,
            timeout=timeout,
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # cookies for 127.0.0.1
        )

    deadline = time.monotonic() + time_limit
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(participants):
        queue.put_nowait(index)

    started = time.perf_counter()

    async def worker() -> None:
        while not queue.empty() and time.monotonic() < deadline:
            index = queue.get_nowait()
            if ramp:
                arrival = started + ramp * index / max(participants - 1, 1)
                await asyncio.sleep(max(0.0, arrival - time.perf_counter()))
            rng = np.random.default_rng(seed * 100_003 + index)
            await play_participant(
                make_session, base, entry_token, recorder, rng, deadline=deadline, think=think
            )

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await connector.close()
    return time.perf_counter() - started


async def run_bare(
    base: str,
    requests: int,
    concurrency: int,
    recorder: Recorder,
    path: str = "/healthz",
    name: str = "healthz",
) -> float:
    """The ceiling: the same number of requests to /healthz at the same concurrency (or to
    `path`, e.g. a static file nginx sends, recorded as `name`)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency * 2, force_close=True)
    remaining = [requests]

    async def worker(session) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            with contextlib.suppress(Unavailable):
                await request(session, recorder, name, "GET", f"{base}{path}")

    started = time.perf_counter()
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return time.perf_counter() - started


# Checking the database -------------------------------------------------------------------


def verify(database_url: str, recorder: Recorder, engine_options=None) -> dict[str, Any]:
    """Every acknowledged answer stored exactly once; each participant saw its trials in
    schedule order, never one again after it was acknowledged (a lost answer) and never
    skipping one (a wrong resume)."""
    import sqlalchemy

    from study_app.trial_types import get_trial_type

    engine = sqlalchemy.create_engine(database_url, **(engine_options or {}))
    with engine.connect() as conn:
        stored = {
            trial: count
            for trial, count in conn.execute(
                sqlalchemy.text(
                    "SELECT t.token, count(r.id) FROM trials t JOIN responses r "
                    "ON r.trial_id = t.id GROUP BY t.token"
                )
            )
        }
        schedule: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for participant, trial, trial_type in conn.execute(
            sqlalchemy.text(
                "SELECT p.token, t.token, t.trial_type FROM participants p JOIN trials t "
                "ON t.participant_id = p.id ORDER BY p.id, t.trial_index"
            )
        ):
            schedule[participant].append((trial, trial_type))
        participants = conn.execute(sqlalchemy.text("SELECT count(*) FROM participants")).scalar()
        answering = set(
            conn.execute(
                sqlalchemy.text(
                    "SELECT DISTINCT p.token FROM participants p JOIN trials t "
                    "ON t.participant_id = p.id JOIN responses r ON r.trial_id = t.id"
                )
            ).scalars()
        )
    engine.dispose()
    # A join committed just before a kill whose redirect never arrived: the client joins again
    # and becomes someone else (a browser without a Prolific id would too). Legal if that
    # participant never answered anything.
    seen_by_clients = set(recorder.shown) | recorder.finished
    unacknowledged = [p for p in schedule if p not in seen_by_clients]
    acked = [trial for _, trial in recorder.acked]
    acked_set = set(acked)
    lost = sorted(acked_set - stored.keys())
    duplicated = sorted(t for t, n in stored.items() if n != 1)
    unacked_stored = sorted(stored.keys() - acked_set)  # legal only for answers cut off by a kill
    wrong_order = []
    for participant, shown in recorder.shown.items():
        answerable = [t for t, kind in schedule[participant] if get_trial_type(kind).answerable]
        if shown != answerable[: len(shown)]:
            wrong_order.append(participant)
    return {
        "participants": participants,
        "enrolled_without_ack": len(unacknowledged),
        "unacknowledged_with_answers": len([p for p in unacknowledged if p in answering]),
        "finished": len(recorder.finished),
        "acknowledged_answers": len(acked),
        "acknowledged_twice": len(acked) - len(acked_set),
        "stored_answers": sum(stored.values()),
        "lost": len(lost),
        "duplicated": len(duplicated),
        # sent, stored, and the acknowledgement lost with a killed server: the participant's
        # next page is the next trial, as if acknowledged
        "stored_without_ack": len(unacked_stored),
        # stored but never sent by the client: must be 0
        "stored_never_sent": len(set(unacked_stored) - recorder.posted),
        "participants_out_of_order": len(wrong_order),
    }


def cpu_seconds(server_group: int | set[int]) -> dict[str, float]:
    """CPU time used so far (user + system, seconds) by the gunicorn process group (or groups:
    `--shape`'s app servers and nginx), the PostgreSQL server processes and this client: where
    a request's cost goes when all three share the machine's cores. Read from /proc (Linux);
    empty elsewhere."""
    groups = {server_group} if isinstance(server_group, int) else server_group
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return {}
    ticks = os.sysconf("SC_CLK_TCK")
    server = database = 0
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()  # fields 3.. of proc(5)
        used = int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
        if int(fields[2]) in groups:
            server += used
        elif name == "postgres":
            database += used
    own = os.times()
    return {
        "server": server / ticks,
        "database": database / ticks,
        "client": own.user + own.system,
    }


def cpu_per_request(before: dict[str, float], after: dict[str, float], requests: int):
    """CPU milliseconds per request by component between two `cpu_seconds` readings."""
    if not before or not requests:
        return {}
    return {name: round(1000 * (after[name] - before[name]) / requests, 3) for name in before}


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    array = np.asarray(values)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(array, 50)), 1),
        "p95": round(float(np.percentile(array, 95)), 1),
        "p99": round(float(np.percentile(array, 99)), 1),
        "max": round(float(array.max()), 1),
    }


TRIAL_LOOP = ("trial page", "media", "answer POST")


def summary(recorder: Recorder, bare: Recorder, loop_seconds: float, bare_seconds: float):
    loop = [v for name in TRIAL_LOOP for v in recorder.latencies[name]]
    loop_rps = len(loop) / loop_seconds
    all_requests = sum(len(v) for v in recorder.latencies.values())
    bare_rps = len(bare.latencies["healthz"]) / bare_seconds
    endpoints = {name: percentiles(v) for name, v in sorted(recorder.latencies.items())}
    return {
        "endpoints": endpoints,
        "trial_loop": percentiles(loop),
        "healthz": percentiles(bare.latencies["healthz"]),
        "study_seconds": round(loop_seconds, 2),
        "study_requests_per_s": round(all_requests / loop_seconds, 1),
        "trial_loop_requests_per_s": round(loop_rps, 1),
        "healthz_requests_per_s": round(bare_rps, 1),
        "throughput_ratio": round(loop_rps / bare_rps, 3),
        "errors": dict(recorder.errors),
        "retries": recorder.retries,
        "pages_and_answers_by_minute": by_minute(recorder.paced),
    }


def by_minute(paced: list[tuple[float, float]]) -> list[dict[str, float]]:
    """Trial pages and answers per minute of the study (from the first one): how many, and
    their p50 / p99 / max in ms."""
    if not paced:
        return []
    start = min(at for at, _ in paced)
    minutes: dict[int, list[float]] = defaultdict(list)
    for at, ms in paced:
        minutes[int((at - start) // 60)].append(ms)
    return [
        {"minute": minute, **percentiles(values)} for minute, values in sorted(minutes.items())
    ]


class FolderWatch:
    """The bytes and files in a folder, sampled every `every` seconds in a thread while it
    runs: the renditions' peak during a study (they must stay bounded: docs/operations.md,
    Disk budget)."""

    def __init__(self, folder: Path, every: float = 2.0) -> None:
        self.folder, self.every = folder, every
        self.peak_bytes = self.peak_files = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def size(self) -> tuple[int, int]:
        """(bytes, files), one level of folders down (direct sends keep a folder per trial)."""
        total = files = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.folder):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # deleted
                    if not entry.is_dir():
                        total += entry.stat().st_size
                        files += 1
                        continue
                    for child in os.scandir(entry.path):
                        with contextlib.suppress(FileNotFoundError):
                            total += child.stat().st_size
                            files += 1
        return total, files

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            total, files = self.size()
            self.peak_bytes = max(self.peak_bytes, total)
            self.peak_files = max(self.peak_files, files)

    def __enter__(self) -> FolderWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run_client(coroutine, use_uvloop: bool = True):
    """asyncio.run, on uvloop's event loop when it is installed (the dev extra has it) and
    wanted: the client shares the two cores with the servers it measures, so its own CPU per
    request counts against them (docs/operations.md compares the two loops)."""
    if not (use_uvloop and _has_uvloop()):
        return asyncio.run(coroutine)
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16, help="participants at a time")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker")
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--time-limit", type=float, default=600, help="seconds, whole study")
    parser.add_argument("--json", type=Path, help="write the figures here as well")
    parser.add_argument(
        "--shape",
        type=int,
        metavar="SERVERS",
        help="the production shape instead of one gunicorn: nginx in front of SERVERS app "
        "servers of --workers each, media through nginx (scripts/serve.py, as `make serve`)",
    )
    parser.add_argument(
        "--media-through-app", action="store_true", help="with --shape: the app sends the media"
    )
    parser.add_argument(
        "--x-accel-only", action="store_true",
        help="with --shape: every media request to the app, then X-Accel-Redirect (no direct "
        "sends, MEDIA_DIRECT off; for comparison)",
    )  # fmt: skip
    parser.add_argument(
        "--think",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="human pace: answer each trial a uniform LOW..HIGH seconds after its page and "
        "media arrived (e.g. 10 40); then --concurrency may be up to --participants",
    )
    parser.add_argument(
        "--ramp", type=float, default=0.0, help="seconds over which participants arrive"
    )
    parser.add_argument(
        "--asyncio-loop", action="store_true",
        help="the client on asyncio's own event loop instead of uvloop's (for comparison)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    def client(coroutine):
        return run_client(coroutine, use_uvloop=not args.asyncio_loop)

    most = args.participants if args.think else 256
    if not 1 <= args.participants <= 5000 or not 1 <= args.concurrency <= most:
        parser.error(f"participants must be 1..5000 and concurrency 1..{most}")
    # The ceiling is a throughput, measured at a throughput client's concurrency: with
    # thousands of participants mostly thinking, their number says nothing about it.
    bare_concurrency = min(args.concurrency, 64)

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sightsound-load-")))
        if args.database == "postgresql":
            url = stack.enter_context(scratch_postgres())
        else:
            url = f"sqlite:///{tmp / 'load.sqlite'}"
        media = tmp / "media"
        entry = set_up_study(url, media, tmp / "set")
        if args.shape:
            sys.path.insert(0, str(REPO / "scripts"))
            import serve

            shape = serve.Shape(
                tmp / "serve", free_port(), servers=args.shape, workers=args.workers,
                env=dict(
                    os.environ, DATABASE_URL=url, SECRET_KEY=secrets.token_hex(16),
                    SIGHTSOUND_MEDIA_DIRECT="0" if args.x_accel_only else "1",
                ),
                config={"MEDIA_DIR": str(media)}, media_through_app=args.media_through_app,
            )  # fmt: skip
            stack.callback(shape.stop)
            shape.start()
            base = shape.url
            groups = {s.process.pid for s in shape.app_servers} | {shape.nginx.pid}
        else:
            server = Server(url, media, workers=args.workers, threads=args.threads)
            server.log = tmp / "gunicorn.log"
            server.start()
            stack.callback(server.stop)
            base, groups = server.base, {server.process.pid}
        bare = Recorder()
        client(run_bare(base, 200, bare_concurrency, Recorder()))  # warm-up
        # The ceiling is measured twice, half before and half after the study, because a shared
        # machine's speed drifts by tens of per cent over minutes: a ceiling taken only on one
        # side of the study would skew the ratio by as much.
        half = max(1, args.participants * 31)  # about half the demo study's trial-loop requests
        cpu_before_bare = cpu_seconds(groups)
        bare_seconds_before = client(run_bare(base, half, bare_concurrency, bare))
        bare_before = len(bare.latencies["healthz"])
        recorder = Recorder()
        # Under the shape with media through nginx: the renditions folder's peak (its bound).
        renditions = FolderWatch(shape.media.renditions_dir) if args.shape and shape.media else None
        cpu_before_study = cpu_seconds(groups)
        with renditions or contextlib.nullcontext():
            study_seconds = client(
                run_participants(
                    base,
                    entry,
                    args.participants,
                    args.concurrency,
                    recorder,
                    time_limit=args.time_limit,
                    think=tuple(args.think) if args.think else None,
                    ramp=args.ramp,
                    keep_alive=bool(args.shape),  # nginx keeps a browser's connections open
                )
            )
        cpu_after_study = cpu_seconds(groups)
        loop_requests = sum(len(recorder.latencies[n]) for n in TRIAL_LOOP)
        after = max(1, loop_requests - bare_before)  # in all, as many as the trial loop made
        bare_seconds_after = client(run_bare(base, after, bare_concurrency, bare))
        cpu_after_bare = cpu_seconds(groups)
        figures = summary(recorder, bare, study_seconds, bare_seconds_before + bare_seconds_after)
        figures["healthz_requests_per_s_before_after"] = [
            round(bare_before / bare_seconds_before, 1),
            round((len(bare.latencies["healthz"]) - bare_before) / bare_seconds_after, 1),
        ]
        study_requests = sum(len(v) for v in recorder.latencies.values())
        bare_cpu = {
            name: (cpu_before_study[name] - cpu_before_bare[name])
            + (cpu_after_bare[name] - cpu_after_study[name])
            for name in cpu_before_bare
        }
        figures["cpu_ms_per_request"] = {
            "study": cpu_per_request(cpu_before_study, cpu_after_study, study_requests),
            "healthz": cpu_per_request(
                dict.fromkeys(bare_cpu, 0.0), bare_cpu, len(bare.latencies["healthz"])
            ),
        }
        figures["setup"] = {
            "participants": args.participants,
            "concurrency": args.concurrency,
            "gunicorn_workers": args.workers,
            "gunicorn_threads": args.threads,
            "database": args.database,
            "cpus": os.cpu_count(),
            "shape": (
                f"nginx + {args.shape} app servers, media through "
                + (
                    "the app" if args.media_through_app
                    else "nginx (X-Accel-Redirect)" if args.x_accel_only
                    else "nginx (direct sends, X-Accel-Redirect on a miss)"
                )
                if args.shape
                else "one gunicorn"
            ),
        }
        if args.shape:
            # The ceiling of the shape's front: nginx sending a static file the size of a clip
            # (the demo's first audio file), at the same concurrency as /healthz.
            clip = max(media.rglob("*.wav"), key=lambda p: p.stat().st_size)
            ceiling = shape.run_dir / "collected" / "static" / "00000000"
            ceiling.mkdir(parents=True, exist_ok=True)
            (ceiling / "ceiling.wav").write_bytes(clip.read_bytes())
            static = Recorder()
            count = min(len(bare.latencies["healthz"]), 20_000)  # a rate: no need for more
            cpu_before_static = cpu_seconds(groups)
            static_seconds = client(run_bare(
                base, count, bare_concurrency, static, "/static/00000000/ceiling.wav", "static"
            ))  # fmt: skip
            cpu_after_static = cpu_seconds(groups)
            figures["nginx_static_same_size"] = {
                "bytes": clip.stat().st_size,
                "requests_per_s": round(count / static_seconds, 1),
                **percentiles(static.latencies["static"]),
                "cpu_ms_per_request": cpu_per_request(cpu_before_static, cpu_after_static, count),
                "errors": dict(static.errors),
            }
        figures["setup"]["think_seconds"] = args.think
        figures["setup"]["ramp_seconds"] = args.ramp
        figures["setup"]["client"] = {
            "event_loop": "asyncio" if args.asyncio_loop or not _has_uvloop() else "uvloop",
            "connections": "kept open per participant (browser-like)"
            if args.shape
            else "one per request",
        }
        figures["integrity"] = verify(url, recorder)
        if args.shape and shape.media is not None:  # the media nginx sent from renditions
            log = shape.media.access_log
            figures["nginx_media_log_lines"] = (
                len(log.read_bytes().splitlines()) if log.exists() else 0
            )
            at_end, files_at_end = renditions.size()
            figures["renditions"] = {
                "folder": str(renditions.folder),
                "in_memory": shape.media.renditions_in_memory,
                "peak_bytes": renditions.peak_bytes,  # sampled every 2 s during the study
                "peak_files": renditions.peak_files,
                "bytes_at_end": at_end,  # every trial answered: nothing should be left
                "files_at_end": files_at_end,
            }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    integrity = figures["integrity"]
    ok = (
        integrity["lost"] == 0
        and integrity["duplicated"] == 0
        and integrity["stored_without_ack"] == 0
        and integrity["participants_out_of_order"] == 0
        and integrity["finished"] == args.participants
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
