"""The production shape on one machine: nginx in front of N gunicorn app servers on one database.

    make serve                       # 2 servers, nginx on $PORT (5000), DATABASE_URL from env
    python scripts/serve.py --servers 4 --port 8080

Each app server is a separate gunicorn (its own port, workers and caches, as a separate machine
would be) with the same SECRET_KEY and the same media folder. Before they start, the database
is migrated once, under a lock (PostgreSQL: an advisory lock; SQLite: a file lock), so that
several machines starting together do not race. The nginx config is rendered from
deploy/nginx.conf.template into a run folder (default: instance/serve/), static files are
collected there under their fingerprints, and nginx runs in the foreground. Ctrl-C or SIGTERM
stops nginx and every app server; so does any of them exiting.

Media go through nginx by default (study_app/media_accel.py): a trial's page renders its
slots' renditions where nginx finds them from the media URL (MEDIA_DIRECT), so nginx sends a
current trial's media without asking the app; anything else goes to the app, which authorises
the request and answers with X-Accel-Redirect to the rendition (or 404). nginx logs what it
sent (deploy/nginx-media.conf.template, deploy/nginx-media-log.conf.template), and the app
ingests that log before an export (SIGHTSOUND_MEDIA_DIRECT=0: every media request through the
app and X-Accel-Redirect). The log is in the run folder; the renditions are in
memory (a folder on /dev/shm named after the run folder, removed on stop; the run folder's
renditions/ where there is no /dev/shm), since they are a cache that any server can remake;
the app servers get SIGHTSOUND_MEDIA_* to match, and `flask media-gc` runs at start and every
10 minutes. `--media-through-app` has the app send the media itself instead.

docs/operations.md ("Production shape") gives the same for N machines.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import getpass
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
NGINX = "/usr/sbin/nginx"
MIME_TYPES = "/etc/nginx/mime.types"
# Any constant: every SightSound process that migrates takes the same advisory lock.
MIGRATION_LOCK_KEY = 0x5167_5375  # "SgSu"
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# The renditions' `internal` nginx location (never seen by a browser: nginx follows it itself).
MEDIA_ACCEL_PREFIX = "/_media_internal/"
MEDIA_GC_EVERY_S = 600.0  # `flask media-gc`: renditions of answered trials go within 10 minutes
# Renditions are a cache (each is remade from its clip on demand), so by default they live in
# memory: writing one to tmpfs costs a third of the CPU of writing it to ext4, with no
# writeback after (docs/operations.md, "Where the app servers' time goes").
MEMORY_FOLDERS = Path("/dev/shm")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def render(template: str, values: dict[str, str]) -> str:
    """`template` with every {{name}} replaced; a name without a value is an error (a config
    with a hole in it would fail later, and less clearly)."""
    missing = sorted(set(PLACEHOLDER.findall(template)) - set(values))
    if missing:
        raise KeyError(f"no value for {', '.join(missing)} in the nginx template")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


@dataclass(frozen=True)
class MediaAccel:
    """Media through nginx: the app's MEDIA_ACCEL_REDIRECT, MEDIA_RENDITIONS_DIR and
    MEDIA_ACCESS_LOG, which the nginx config must match."""

    prefix: str
    renditions_dir: Path
    access_log: Path
    renditions_in_memory: bool = False  # our own tmpfs folder, removed when the shape stops
    # MEDIA_DIRECT: nginx sends a current trial's renditions without asking the app (False:
    # every media request goes to the app, which answers with X-Accel-Redirect).
    direct: bool = True

    @classmethod
    def under(
        cls, run_dir: Path, env: dict[str, str], memory: Path | None = MEMORY_FOLDERS
    ) -> MediaAccel:
        """The run folder's media-access.log and renditions in memory (`memory_folder`),
        unless the environment names others (renditions on a shared or bigger disk, a log
        under /var/log/nginx)."""
        named = env.get("SIGHTSOUND_MEDIA_RENDITIONS_DIR")
        in_memory = memory_folder(run_dir, memory) if not named else None
        renditions = Path(named) if named else in_memory or run_dir / "renditions"
        return cls(
            env.get("SIGHTSOUND_MEDIA_ACCEL_REDIRECT") or MEDIA_ACCEL_PREFIX,
            renditions.resolve(),
            Path(env.get("SIGHTSOUND_MEDIA_ACCESS_LOG") or run_dir / "media-access.log").resolve(),
            renditions_in_memory=in_memory is not None,
            direct=env.get("SIGHTSOUND_MEDIA_DIRECT", "1") in ("1", "true", "yes"),
        )

    def env(self) -> dict[str, str]:
        """The environment create_app reads them from (app servers and `flask media-gc`); the
        flood throttle is nginx's (MEDIA_THROTTLE), so the app writes nothing per request."""
        values = (
            self.prefix, str(self.renditions_dir), str(self.access_log), "1",
            "1" if self.direct else "0",
        )  # fmt: skip
        return dict(zip(MEDIA_ENV, values, strict=True))


def memory_folder(run_dir: Path, memory: Path | None = MEMORY_FOLDERS) -> Path | None:
    """The run folder's renditions folder in memory: `memory`/sightsound-renditions-<a hash of
    the run folder> (one per run folder, so two shapes on one machine never share one, and a
    restart finds its own), or None where `memory` is not a writable folder."""
    if memory is None or not (memory.is_dir() and os.access(memory, os.W_OK | os.X_OK)):
        return None
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
    return memory / f"sightsound-renditions-{digest}"


def sweep_memory_folders(
    keep: Path, memory: Path = MEMORY_FOLDERS, idle_hours: float = 6.0, now: float | None = None
) -> list[Path]:
    """Remove other run folders' renditions in memory that nothing has touched for
    `idle_hours` (a shape killed before its stop, e.g. a test run killed mid-way, leaves its
    folder in memory until a reboot). Always safe: a rendition is a cache, and a shape still
    running remakes its folder and renditions on the next request. Returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    for folder in memory.glob("sightsound-renditions-*"):
        try:
            idle = (now - folder.stat().st_mtime) / 3600
        except FileNotFoundError:
            continue
        if folder != keep and folder.is_dir() and idle > idle_hours:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


MEDIA_ENV = (
    "SIGHTSOUND_MEDIA_ACCEL_REDIRECT",
    "SIGHTSOUND_MEDIA_RENDITIONS_DIR",
    "SIGHTSOUND_MEDIA_ACCESS_LOG",
    "SIGHTSOUND_MEDIA_THROTTLE_IN_PROXY",
    "SIGHTSOUND_MEDIA_DIRECT",
)
# nginx's flood throttle per trial slot: (sustained rate, burst). A burst of 300 at once and
# then 5 a second: issue 23's 300 requests a minute, as a token bucket instead of the app's
# fixed one-minute window (at most 600 in a slot's first minute, 300 in any later one).
MEDIA_THROTTLE = ("5r/s", 300)


def media_includes(folder: Path, media: MediaAccel, upstream: str,
                   throttle: tuple[str, int] = MEDIA_THROTTLE,
                   secure: bool = False) -> tuple[Path, Path]:
    """Render deploy/nginx-media.conf.template (the media locations, for a server block) and
    deploy/nginx-media-log.conf.template (the media log's format, for the http block) into
    `folder`, proxying the media route to `upstream`; returns their paths. nginx_config
    includes them, and so do the test's and the benchmark's smaller configs. `secure`: the
    app servers' SESSION_COOKIE_SECURE (their security headers then include HSTS, and so must
    nginx's direct sends)."""
    from study_app import security_headers
    from study_app.media_accel import DIRECT_EXTENSIONS

    media.renditions_dir.mkdir(parents=True, exist_ok=True)
    folder_path = "/$sightsound_p.$sightsound_t/$sightsound_s"
    values = {
        "media_direct_files": " ".join(f"{folder_path}.{e}" for e in DIRECT_EXTENSIONS.values()),
        "media_direct_types": "\n".join(
            f"        {mimetype} {extension};" for mimetype, extension in DIRECT_EXTENSIONS.items()
        ),
        "media_direct_headers": "\n".join(
            f'    add_header {name} "{value}";' for name, value in security_headers(secure)
        ),
        "media_upstream": upstream,
        "proxy_params": str(DEPLOY / "proxy_params.conf"),
        "media_accel_prefix": "/" + media.prefix.strip("/") + "/",
        "media_renditions_dir": str(media.renditions_dir).rstrip("/"),
        "media_access_log": str(media.access_log),
        # the flood throttle (issue 23's 300 a minute per slot), in nginx: MEDIA_THROTTLE
        "media_slot_rate": throttle[0],
        "media_slot_burst": str(throttle[1]),
    }
    paths = folder / "nginx-media.conf", folder / "nginx-media-log.conf"
    for path in paths:
        template = (DEPLOY / f"{path.name}.template").read_text()
        path.write_text(render(template, values))
    return paths


def nginx_config(
    run_dir: Path,
    listen: str,
    upstreams: list[str],
    static_root: Path,
    *,
    access_log: str = "off",
    worker_processes: str = "auto",
    media: MediaAccel | None = None,
    secure: bool = False,
) -> Path:
    """Render deploy/nginx.conf.template into `run_dir`, with deploy/nginx-media.conf.template
    (server block) and deploy/nginx-media-log.conf.template (http block) when `media` go
    through nginx; without, both includes are empty files and the app sends the media."""
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (run_dir / temp).mkdir(parents=True, exist_ok=True)
    values = {
        "run_dir": str(run_dir),
        "listen": listen,
        "upstream_servers": "\n".join(f"        server {address};" for address in upstreams),
        "static_root": str(static_root),
        "access_log": access_log,
        "worker_processes": worker_processes,
        "worker_connections": "4096",
        "mime_types": MIME_TYPES,
        "proxy_params": str(DEPLOY / "proxy_params.conf"),
        # nginx started as root runs its workers as `nobody`, who cannot read a private run
        # folder; as root, run them as the user who started it (a real server: www-data).
        "user_directive": f"user {getpass.getuser()};" if os.geteuid() == 0 else "",
    }
    if media is None:
        locations, log_format = run_dir / "nginx-media.conf", run_dir / "nginx-media-log.conf"
        locations.write_text("")
        log_format.write_text("")
    else:
        locations, log_format = media_includes(
            run_dir, media, "http://sightsound_app", secure=secure
        )
    values["media_locations"] = str(locations)
    values["media_log_format"] = str(log_format)
    config = run_dir / "nginx.conf"
    config.write_text(render((DEPLOY / "nginx.conf.template").read_text(), values))
    return config


@contextlib.contextmanager
def migration_lock(database_url: str, instance: Path) -> Iterator[None]:
    """Held while migrating: one process migrates, the others wait, then find nothing to do."""
    if database_url.startswith("sqlite") or not database_url:
        instance.mkdir(parents=True, exist_ok=True)
        with open(instance / "migrate.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        return
    import sqlalchemy

    from study_app import database_url as normalised

    engine = sqlalchemy.create_engine(normalised(database_url, instance))
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(
                    sqlalchemy.text("select pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY}
                )
    finally:
        engine.dispose()


def migrate(env: dict[str, str], instance: Path) -> None:
    """`flask db upgrade`, once, under the migration lock."""
    flask = str(Path(sys.executable).with_name("flask"))
    with migration_lock(env.get("DATABASE_URL", ""), instance):
        command = [flask, "--app", "study_app", "db", "upgrade"]
        subprocess.run(command, cwd=REPO, env=env, check=True)


@dataclass
class AppServer:
    """One gunicorn serving create_app(config) on 127.0.0.1:port, in its own process group."""

    port: int
    env: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)
    workers: int = 2
    log: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            str(Path(sys.executable).with_name("gunicorn")),
            "--workers", str(self.workers),
            "--bind", self.address,
            "--timeout", "60",
            "--log-level", "warning",
            f"study_app:create_app({self.config!r})",
        ]  # fmt: skip
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            command, cwd=REPO, env=self.env, stdout=out, stderr=out, start_new_session=True
        )

    def healthy(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                return sock.recv(64).startswith(b"HTTP/1.0 200")
        except OSError:
            return False

    def signal(self, number: int) -> None:
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, number)


@dataclass
class Shape:
    """nginx on `port` in front of `servers` app servers; `start()`, then `stop()`."""

    run_dir: Path
    port: int
    servers: int = 2
    workers: int = 2
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    config: dict[str, Any] = field(default_factory=dict)
    access_log: str = "off"  # e.g. "<path> sightsound" (the template's log format)
    nginx_workers: str = "auto"
    # False: media through nginx (X-Accel-Redirect), as `make serve` runs; True: the app sends them.
    media_through_app: bool = False
    media: MediaAccel | None = None
    app_servers: list[AppServer] = field(default_factory=list)
    nginx: subprocess.Popen | None = None
    conf: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        from study_app.static_assets import collect

        collect(REPO / "study_app" / "static", self.run_dir / "collected")
        # The app servers' media settings are the nginx config's, or none at all.
        if not self.media_through_app:
            self.media = MediaAccel.under(self.run_dir, self.env)
            if self.media.renditions_in_memory:
                sweep_memory_folders(self.media.renditions_dir, self.media.renditions_dir.parent)
        self.env = {k: v for k, v in self.env.items() if k not in MEDIA_ENV}
        self.env.update(self.media.env() if self.media else {})
        for _ in range(self.servers):
            server = AppServer(free_port(), self.env, self.config, self.workers)
            server.log = self.run_dir / f"app-{server.port}.log"
            self.app_servers.append(server)
        self.conf = nginx_config(
            self.run_dir,
            f"{self.host}:{self.port}",
            [server.address for server in self.app_servers],
            self.run_dir / "collected",
            access_log=self.access_log,
            worker_processes=self.nginx_workers,
            media=self.media,
            secure=self.env.get("SIGHTSOUND_SECURE_COOKIES", "") in ("1", "true", "yes"),
        )
        try:
            for server in self.app_servers:
                server.start()
            self.wait(lambda: all(server.healthy() for server in self.app_servers), timeout)
            self.start_nginx(timeout)
        except BaseException:
            self.stop()
            raise

    def start_nginx(self, timeout: float = 60.0) -> None:
        """nginx in the foreground from the rendered config (again, after a crash)."""
        self.nginx = subprocess.Popen(
            [NGINX, "-c", str(self.conf), "-p", str(self.run_dir)], start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while not self.nginx_up():
            if self.nginx.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start; logs in {self.run_dir}")
            time.sleep(0.05)

    def kill9_nginx(self) -> None:
        """SIGKILL to nginx's master and workers at once (a crash), reaped."""
        if self.nginx and self.nginx.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.nginx.pid, signal.SIGKILL)
            self.nginx.wait(timeout=10)

    def collect_renditions(self, timeout: float = 300.0) -> int | None:
        """`flask media-gc` with the app servers' environment (renditions no current trial
        needs, then old ones, then the oldest past the disk budget); its output is appended to
        media-gc.log. None when the app sends the media itself. A failure is logged, not
        fatal: serving goes on, and the next run tries again."""
        if self.media is None:
            return None
        flask = str(Path(sys.executable).with_name("flask"))
        with open(self.run_dir / "media-gc.log", "ab") as log:
            log.write(time.strftime("%Y-%m-%dT%H:%M:%SZ ", time.gmtime()).encode())
            log.flush()
            try:
                done = subprocess.run(
                    [flask, "--app", "study_app", "media-gc"],
                    cwd=REPO, env=self.env, stdout=log, stderr=log, timeout=timeout,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                log.write(b"media-gc timed out\n")
                return -1
        return done.returncode

    def wait(self, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited():
                raise RuntimeError(f"a process exited during start-up; logs in {self.run_dir}")
            if ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"not up after {timeout:.0f} s; logs in {self.run_dir}")

    def nginx_up(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=2):
                return True
        except OSError:
            return False

    def exited(self) -> bool:
        processes = [s.process for s in self.app_servers] + [self.nginx]
        return any(p is not None and p.poll() is not None for p in processes)

    def stop(self, timeout: float = 15.0) -> None:
        """nginx and the app servers: SIGTERM (quick shutdown), SIGKILL after `timeout`."""
        if self.nginx and self.nginx.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.nginx.pid, signal.SIGTERM)
        for server in self.app_servers:
            server.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        processes = [s.process for s in self.app_servers if s.process] + (
            [self.nginx] if self.nginx else []
        )
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self.media is not None and self.media.renditions_in_memory:
            # Memory, not disk: give it back (the next start remakes what it needs).
            shutil.rmtree(self.media.renditions_dir, ignore_errors=True)


def shared_secret_key(instance: Path, env: dict[str, str]) -> str:
    """SECRET_KEY from the environment, else instance/secret_key (made once): the same for
    every server, or a session signed by one would be refused by the next."""
    if env.get("SECRET_KEY"):
        return env["SECRET_KEY"]
    key_file = instance / "secret_key"
    if not key_file.exists():
        instance.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_hex(32))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=2, help="app servers (1 to 16)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    parser.add_argument("--host", default="127.0.0.1", help="nginx listens here")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")))
    parser.add_argument("--run-dir", type=Path, default=REPO / "instance" / "serve")
    parser.add_argument(
        "--media-dir", type=Path, help="the shared media folder (default: instance/media)"
    )
    parser.add_argument(
        "--media-through-app",
        action="store_true",
        help="the app servers send the media themselves (default: nginx, by X-Accel-Redirect)",
    )
    parser.add_argument("--no-migrate", action="store_true", help="skip `flask db upgrade`")
    parser.add_argument(
        "--migrate-only", action="store_true", help="migrate (under the lock) and exit"
    )
    parser.add_argument(
        "--collect-static", type=Path, metavar="DIR", help="collect static files for nginx and exit"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.servers <= 16:
        parser.error("--servers must be 1 to 16")
    if args.collect_static:
        from study_app.static_assets import collect

        collect(REPO / "study_app" / "static", args.collect_static)
        return 0
    instance = REPO / "instance"
    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        print(
            "DATABASE_URL is not set: SQLite in instance/ (fine to try; use PostgreSQL "
            "for a study)",
            file=sys.stderr,
        )
    env["SECRET_KEY"] = shared_secret_key(instance, env)
    env.setdefault("SIGHTSOUND_TRUSTED_PROXIES", "1")  # nginx is the one proxy in front
    if not args.no_migrate:
        migrate(env, instance)
    if args.migrate_only:
        return 0

    config = {"MEDIA_DIR": str(args.media_dir.resolve())} if args.media_dir else {}
    if not Path(NGINX).exists():
        parser.error(f"{NGINX} not found: `make nginx` installs Debian's nginx")
    shape = Shape(
        args.run_dir.resolve(), args.port, args.servers, args.workers, args.host, env, config,
        media_through_app=args.media_through_app,
    )  # fmt: skip
    stopping = {"signal": None}

    def on_signal(number: int, frame: Any) -> None:  # noqa: ARG001
        stopping["signal"] = number

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    shape.start()
    media = (
        f"media through nginx (renditions in {shape.media.renditions_dir}, log "
        f"{shape.media.access_log}; a `flask export` outside the servers needs "
        + " ".join(f"{k}={v}" for k, v in shape.media.env().items())
        + ")"
        if shape.media
        else "media through the app"
    )
    print(
        f"SightSound: nginx on {shape.url}, app servers on "
        f"{', '.join(s.address for s in shape.app_servers)}; logs in {args.run_dir}; "
        f"{media}; Ctrl-C stops",
        flush=True,
    )
    parent = os.getppid()
    next_gc = time.monotonic()  # once at start: a previous run's renditions
    try:
        # A parent that dies (`make serve` killed with SIGTERM does not pass it on) stops us too.
        while stopping["signal"] is None and not shape.exited() and os.getppid() == parent:
            if shape.media is not None and time.monotonic() >= next_gc:
                shape.collect_renditions()
                next_gc = time.monotonic() + MEDIA_GC_EVERY_S
            time.sleep(0.2)
    finally:
        shape.stop()
    if stopping["signal"] is None and os.getppid() == parent:
        print(f"a process exited; logs in {args.run_dir}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
