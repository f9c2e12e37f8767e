"""Benchmark the media endpoint five ways, in one run (issue 24):

    .venv/bin/python scripts/bench_media.py [--seconds 10] [--concurrency 20] [--workers 4]
                                            [--database sqlite]

1. **app path**: nginx proxies the media request to gunicorn; the app authorises it, renders
   the dithered copy (cached per worker) and writes it, counting the bytes (CountedBody);
2. **X-Accel**: the same request; the app authorises it and answers with X-Accel-Redirect to
   the trial slot's rendition on disk (MEDIA_ACCEL_REDIRECT), nginx sends the file and logs it;
3. **X-Accel, throttle in nginx**: the same, the X-Accel gunicorn restarted with
   MEDIA_THROTTLE_IN_PROXY (nginx's limit_req keeps the flood throttle; the app only reads);
4. **direct sends**: the same gunicorn restarted with MEDIA_DIRECT, each participant's page
   shown once (it renders the trial's renditions); nginx sends the media without the app;
5. **static**: nginx sends a static file of the same size (the ceiling).

`--concurrency` clients (processes x threads, keep-alive connections), each fetching its own
participant's current ABX slot `a` whole, again and again, for `--seconds` per phase. The flood
throttle is lifted for the run (MEDIA_REQUESTS_PER_MINUTE): it would refuse a client that asks
for one slot thousands of times a minute. Prints requests/s and CPU ms per request (gunicorn,
nginx, PostgreSQL; these three share the machine's cores with the client). Everything is set up
and torn down: a scratch PostgreSQL database (or SQLite), the demo set and study, two gunicorns
(X-Accel off, on) and nginx (/usr/sbin/nginx, `master_process off`: one nginx process).
A benchmark prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from loadgen import cpu_seconds, free_port, scratch_postgres, set_up_study  # noqa: E402
from serve import MediaAccel, media_includes  # noqa: E402

NGINX = "/usr/sbin/nginx"
PREFIX = "/_media_internal/"


def participants(database_url: str, media_dir: Path, count: int) -> list[str]:
    """`count` participants of the demo study, each at its first ABX trial (the trials before
    it answered directly in the database); their media URLs of slot `a`."""
    from loadgen import make_app
    from sqlalchemy import select

    from study_app.extensions import db
    from study_app.models import Response, Study, Trial, utcnow
    from study_app.services import ExternalIds, enroll

    app = make_app(database_url, media_dir)
    urls = []
    with app.app_context():
        study = db.session.scalar(select(Study))
        for _ in range(count):
            participant = enroll(study, ExternalIds())
            trials = db.session.scalars(
                select(Trial)
                .where(Trial.participant_id == participant.id)
                .order_by(Trial.trial_index)
            ).all()
            for trial in trials:
                trial.presented_at = utcnow()
                if trial.trial_type == "abx":
                    urls.append(f"/p/{participant.token}/t/{trial.token}/m/a")
                    break
                db.session.add(Response(trial_id=trial.id, answer={}))
            db.session.commit()
        db.engine.dispose()
    return urls


@contextlib.contextmanager
def gunicorn(
    database_url: str, config: dict, workers: int, secret: str, port: int | None = None
) -> Iterator[tuple[int, int]]:
    port = port or free_port()
    env = dict(os.environ, DATABASE_URL=database_url, SECRET_KEY=secret)
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        *("--workers", str(workers), "--bind", f"127.0.0.1:{port}", "--log-level", "warning"),
        f"study_app:create_app({config!r})",
    ]
    process = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True)
    try:
        wait_for_port(port, process)
        yield port, process.pid  # its own session: the pid is the process group
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.1)
    raise RuntimeError(f"{process.args[0]} did not start")


@contextlib.contextmanager
def nginx(folder: Path, app_port: int, accel_port: int, renditions: Path, static: Path):
    """nginx with two servers: the app path (proxy to the plain gunicorn) and the X-Accel
    path (deploy/nginx-media*.conf.template, proxy to the X-Accel gunicorn), both with the
    static file. Yields (app-path port, X-Accel port)."""
    ports = free_port(), free_port()
    # No flood throttle here: the benchmark asks for the same slots again and again.
    media = MediaAccel(PREFIX, renditions, folder / "media.log")
    media_includes(folder, media, f"http://127.0.0.1:{accel_port}", ("100000r/s", 100000))
    params = REPO / "deploy" / "proxy_params.conf"
    static_location = f"location /bench-static/ {{ alias {static}/; etag off; }}"
    (folder / "nginx.conf").write_text(
        f"""
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fcgi; uwsgi_temp_path {folder}/uwsgi; scgi_temp_path {folder}/scgi;
    include {folder}/nginx-media-log.conf;
    server {{
        listen 127.0.0.1:{ports[0]};
        {static_location}
        location / {{ proxy_pass http://127.0.0.1:{app_port}; include {params}; }}
    }}
    server {{
        listen 127.0.0.1:{ports[1]};
        {static_location}
        include {folder}/nginx-media.conf;
        location / {{ proxy_pass http://127.0.0.1:{accel_port}; include {params}; }}
    }}
}}
"""
    )
    command = [NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf")]
    command += ["-g", "daemon off; master_process off;"]
    process = subprocess.Popen(command, start_new_session=True)
    try:
        wait_for_port(ports[1], process)
        yield ports, process.pid
    finally:
        process.terminate()
        process.wait(10)


def _client(port: int, urls: list[str], seconds: float, counts, index: int) -> None:
    """One client process: a thread per URL, each GETting it whole over keep-alive."""
    done = [0] * len(urls)
    deadline = time.monotonic() + seconds

    def run(slot: int, url: str) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < deadline:
            connection.request("GET", url)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{url}: {response.status}")
            done[slot] += 1
        connection.close()

    threads = [threading.Thread(target=run, args=(i, u)) for i, u in enumerate(urls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts[index] = sum(done)


def warm(port: int, urls: list[str], rounds: int = 3) -> None:
    """A few requests per client, untimed: gunicorn's port opens before its workers have
    booted (the first requests wait seconds for them), and renditions and caches fill."""

    def run(url: str) -> None:
        for _ in range(rounds):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            connection.request("GET", url)
            connection.getresponse().read()
            connection.close()

    threads = [threading.Thread(target=run, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def load(port: int, urls: list[str], seconds: float, processes: int) -> tuple[int, float]:
    """(requests completed, seconds) with len(urls) concurrent clients."""
    counts = multiprocessing.Array("q", processes)
    groups = [urls[i::processes] for i in range(processes)]
    workers = [
        multiprocessing.Process(target=_client, args=(port, group, seconds, counts, i))
        for i, group in enumerate(groups)
        if group
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts), time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--database", default="postgresql", help="postgresql or sqlite")
    args = parser.parse_args(argv)
    if not Path(NGINX).exists():
        print(f"{NGINX} is missing: apt-get install nginx-light")
        return 1
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-media-")))
        if args.database == "sqlite":
            url = f"sqlite:///{tmp / 'bench.db'}"
        else:
            url = stack.enter_context(scratch_postgres())
        media, renditions, static = tmp / "media", tmp / "renditions", tmp / "static"
        for folder in (media, renditions, static, tmp / "nginx"):
            folder.mkdir()
        set_up_study(url, media, tmp / "set")
        urls = participants(url, media, args.concurrency)
        secret = secrets.token_hex(16)
        base = {"MEDIA_DIR": str(media), "MEDIA_REQUESTS_PER_MINUTE": 10**9}
        accel = base | {
            "MEDIA_ACCEL_REDIRECT": PREFIX,
            "MEDIA_RENDITIONS_DIR": str(renditions),
            "MEDIA_ACCESS_LOG": str(tmp / "nginx" / "media.log"),
        }
        app_port, app_group = stack.enter_context(gunicorn(url, base, args.workers, secret))
        accel_server = gunicorn(url, accel, args.workers, secret)
        accel_port, accel_group = accel_server.__enter__()
        (plain, front), nginx_pid = stack.enter_context(
            nginx(tmp / "nginx", app_port, accel_port, renditions, static)
        )
        # The static file: the same size as the media response.
        probe = http.client.HTTPConnection("127.0.0.1", front, timeout=30)
        probe.request("GET", urls[0])
        size = len(probe.getresponse().read())
        probe.close()
        (static / "same-size.wav").write_bytes(os.urandom(size))
        phases = [
            ("app path (nginx -> gunicorn writes)", plain, urls),
            ("X-Accel (gunicorn authorises, nginx sends)", front, urls),
            # the same gunicorn restarted with the throttle left to nginx: one read, no write
            ("X-Accel, throttle in nginx (no write)", front, urls),
            # restarted again with MEDIA_DIRECT; each participant's page shown once (renders)
            ("direct sends (nginx alone)", front, urls),
            ("nginx static, same size", front, ["/bench-static/same-size.wav"] * len(urls)),
        ]
        print(
            f"{len(urls)} concurrent clients, {args.seconds:g} s per phase, {size:,} bytes per "
            f"response, {args.workers} gunicorn workers, {args.database}, {os.cpu_count()} CPUs"
        )
        for name, port, targets in phases:
            if "throttle in nginx" in name:
                accel_server.__exit__(None, None, None)
                in_proxy = accel | {"MEDIA_THROTTLE_IN_PROXY": True}
                accel_server = gunicorn(url, in_proxy, args.workers, secret, port=accel_port)
                _, accel_group = accel_server.__enter__()
            if name.startswith("direct"):
                accel_server.__exit__(None, None, None)
                direct = accel | {"MEDIA_THROTTLE_IN_PROXY": True, "MEDIA_DIRECT": True}
                accel_server = gunicorn(url, direct, args.workers, secret, port=accel_port)
                _, accel_group = accel_server.__enter__()
                for url_a in urls:  # the trial page renders its renditions where nginx looks
                    page = http.client.HTTPConnection("127.0.0.1", front, timeout=30)
                    page.request("GET", url_a.split("/t/", 1)[0] + "/")
                    assert page.getresponse().read()
                    page.close()
            warm(port, targets)
            before = (group_cpu({app_group, accel_group}), group_cpu({nginx_pid}))
            database_before = cpu_seconds(-1).get("database", 0.0)
            requests, elapsed = load(port, targets, args.seconds, args.processes)
            after = (group_cpu({app_group, accel_group}), group_cpu({nginx_pid}))
            database = cpu_seconds(-1).get("database", 0.0) - database_before
            per = 1000 / max(requests, 1)
            print(
                f"{name:44s} {requests / elapsed:7.1f} requests/s; CPU ms per request: "
                f"gunicorn {(after[0] - before[0]) * per:.2f}, "
                f"nginx {(after[1] - before[1]) * per:.2f}, "
                f"PostgreSQL (all of it) {database * per:.2f}"
            )
        accel_server.__exit__(None, None, None)
        lines = (tmp / "nginx" / "media.log").read_text().count("\n")
        print(f"nginx media log: {lines:,} lines (ingested by `flask ingest-media-log`)")
        shutil.rmtree(renditions, ignore_errors=True)
    return 0


def group_cpu(groups: set[int]) -> float:
    """CPU seconds used so far by the processes of these process groups (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended meanwhile
            continue
        fields = text[text.rindex(")") + 2 :].split()  # fields 3.. of proc(5)
        if int(fields[2]) in groups:
            used += int(fields[11]) + int(fields[12])
    return used / ticks


if __name__ == "__main__":
    sys.exit(main())
