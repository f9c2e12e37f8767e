"""The production shape, tested: Debian's nginx in front of two gunicorn app servers on one
PostgreSQL schema and one media folder (scripts/serve.py, deploy/nginx.conf.template), with the
media through nginx (X-Accel-Redirect, deploy/nginx-media.conf.template) as `make serve` runs.

A participant's whole study, media included, goes through nginx with round robin and no sticky
sessions, so consecutive requests to the app alternate between the servers (checked in nginx's
access log; a current trial's media nginx sends directly, MEDIA_DIRECT, without asking either);
the export, with the listening evidence nginx logged, is the one a single in-process server
sending the media itself gives for the same participant (same seed, same answers, same media
read), time columns aside. Then one app server is killed with SIGKILL mid-study and the participant
goes on without seeing an error.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy
from flow import DEFAULT_ANSWERS, read_page
from sqlalchemy import select

from study_app.export import responses_csv
from study_app.extensions import db
from study_app.media_accel import ingest_media_log
from study_app.models import Participant, Study

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
NGINX = "/usr/sbin/nginx"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
# Columns that depend on when and how fast the answers came, not on what they were.
TIME_COLUMNS = ("presented_at", "answered_at", "rt_ms", "server_rt_ms")
SECRET = "nginx-shape-secret"

pytestmark = [
    pytest.mark.slow,  # two gunicorn start-ups and nginx: about 15 s
    pytest.mark.skipif(
        not os.path.exists(NGINX) and not os.environ.get("CI"),
        reason="needs Debian's nginx at /usr/sbin/nginx (`make nginx`; CI installs it)",
    ),
    pytest.mark.skipif(importlib.util.find_spec("gunicorn") is None, reason="needs gunicorn"),
]


@pytest.fixture(scope="module")
def serve():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import serve

        yield serve
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.fixture
def shape(serve, tmp_path, database, request):
    """(the running Shape, the study's entry token); the `app` fixture is on the same schema."""
    url, options = database
    if not url.startswith("postgresql"):
        pytest.skip("the production shape runs on PostgreSQL (several processes, one database)")
    _, entry = request.getfixturevalue("make_study")()
    running = serve.Shape(
        tmp_path / "run",
        serve.free_port(),
        servers=2,
        workers=1,
        config={
            "SQLALCHEMY_DATABASE_URI": url,
            "SQLALCHEMY_ENGINE_OPTIONS": options,
            "MEDIA_DIR": str(tmp_path / "media"),
            "SECRET_KEY": SECRET,
            "TRUSTED_PROXIES": "1",
        },
        access_log=f"{tmp_path / 'run' / 'access.log'} sightsound",
        nginx_workers="1",  # one round-robin counter: strict alternation
    )
    running.start()
    try:
        yield running, entry
    finally:
        running.stop()


def play(
    base: str, entry: str, on_step=None, max_steps: int = 60, sent: list[str] | None = None
) -> str:
    """Join through `base`, read each trial's media whole and answer every trial with flow's
    default answers (CSRF tokens from the pages, as a browser sends them); returns the
    participant's token. `sent` gets the path of each request, in order."""
    import requests

    sent = [] if sent is None else sent

    def record(response, *args, **kwargs):
        sent.append(response.request.path_url)

    with requests.Session() as http:
        http.hooks["response"].append(record)
        join = http.get(f"{base}/join/{entry}", timeout=30)
        assert join.status_code == 200
        joined = http.post(
            f"{base}/join/{entry}",
            data={"csrf_token": CSRF.search(join.text).group(1)},
            allow_redirects=False,
            timeout=30,
        )
        assert joined.status_code == 302, joined.status_code
        step = base + joined.headers["Location"]
        for number in range(max_steps):
            if on_step:
                on_step(number)
            response = http.get(step, timeout=30)
            assert response.status_code == 200, response.status_code
            page = read_page(_Adapter(response))
            if page.trial_type is None:
                assert "DEMO-2026" in page.html  # the completion code: finished
                return step.rstrip("/").rsplit("/", 1)[1]
            for url in page.media:
                media = http.get(base + url, timeout=30)
                assert media.status_code == 200 and media.content, (url, media.status_code)
            data = dict(DEFAULT_ANSWERS[page.trial_type])
            data["csrf_token"] = CSRF.search(page.html).group(1)
            answered = http.post(base + page.action, data=data, allow_redirects=False, timeout=30)
            assert answered.status_code == 303, (page.trial_type, answered.status_code)
    raise AssertionError("the study did not end")


class _Adapter:
    """A requests response as flow.read_page reads a Flask test response."""

    def __init__(self, response) -> None:
        self.status_code = response.status_code
        self._text = response.text

    def get_data(self, as_text: bool = False):
        return self._text


def export_without_time(app) -> list[dict[str, str]]:
    with app.app_context():
        study = db.session.scalar(select(Study))
        rows = list(csv.DictReader(io.StringIO(responses_csv(study))))
    return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in rows]


def upstreams(access_log: Path) -> list[str]:
    """The app server of each logged participant request, in order. (A media request is logged
    in the media log instead, where nginx's X-Accel-Redirect ends it.)"""
    lines = access_log.read_text().splitlines()
    return [
        line.rsplit('"', 2)[1]
        for line in lines
        if re.search(r'"(GET|POST) /(join|p)/', line) and not MEDIA_PATH.search(line)
    ]


MEDIA_PATH = re.compile(r"/p/[^/ ]+/t/[^/ ]+/m/[^/ ?]+")


def wait_for_lines(log: Path, count: int, timeout: float = 30.0) -> None:
    """nginx writes a request's log line just after its last byte: wait for `count` lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"nginx logged {log.read_text() if log.exists() else 'nothing'}")


@pytest.fixture
def one_server_app(make_app, database):
    """A second, empty schema on the same PostgreSQL, for the one-server run."""
    from conftest import POSTGRES_URL

    schema = "t_one_server_" + secrets.token_hex(4)
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    try:
        app = make_app(POSTGRES_URL, {"connect_args": {"options": f"-csearch_path={schema}"}})
        app.config.update(SECRET_KEY=SECRET)
        with app.app_context():
            db.create_all()
        yield app
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_a_study_alternating_between_two_servers_exports_as_one_server(
    serve, shape, app, one_server_app, demo_set_dir, monkeypatch
):
    running, entry = shape
    assert running.media is not None  # as `make serve` runs: media through nginx
    sent: list[str] = []
    play(running.url, entry, sent=sent)
    media_sent = [path for path in sent if MEDIA_PATH.fullmatch(path)]
    assert media_sent  # the demo study's ABX and rating trials have media
    media_log = running.media.access_log
    wait_for_lines(media_log, len(media_sent))
    # nginx sent renditions (the media log has its lines), each deleted with its trial's answer
    assert running.media.renditions_dir.is_dir()
    assert not list(running.media.renditions_dir.iterdir())
    if running.media.renditions_in_memory:  # as make serve runs where there is /dev/shm
        assert running.media.renditions_dir.parent == serve.MEMORY_FOLDERS
    # Every request went to an app server, a media request too (the app authorises it, then
    # nginx sends the file), so round robin alternates over all of them; the access log has
    # the others, which must sit on the servers their place in that sequence gives.
    # Every request that reached an app server took a turn of round robin: the pages and
    # answers (in the access log), and any media request that nginx could not send directly
    # (the app authorised it and X-Accel-Redirect ended it in the media log, with a signed key
    # instead of `direct.`). The access log's servers must sit where that sequence puts them.
    logged = media_log.read_text().splitlines()
    direct = [line.split('"')[3].startswith("direct.") for line in logged]
    assert all(direct)  # every medium of a shown trial was on disk: no app request for any
    media_turns = iter(not d for d in direct)
    turns = [not MEDIA_PATH.fullmatch(path) or next(media_turns) for path in sent]
    servers = upstreams(running.run_dir / "access.log")
    places = [i for i, path in enumerate(sent) if not MEDIA_PATH.fullmatch(path)]
    assert set(servers) == {server.address for server in running.app_servers}, servers
    assert len(servers) == len(places) >= 30  # join (2), 15 trials (2 each), the end page
    turn_of = {place: sum(turns[:place]) for place in places}
    expected = [
        servers[0] if (turn_of[place] - turn_of[places[0]]) % 2 == 0 else "other"
        for place in places
    ]
    assert [s if s == servers[0] else "other" for s in servers] == expected, servers
    # nginx's media log into the evidence, as an export by an app server does first.
    with app.app_context():
        ingested = ingest_media_log(running.media.access_log, SECRET)
    assert (ingested.lines, ingested.merged, ingested.refused) == (len(media_sent),) * 2 + (0,)

    # The same participant on one server: the same seed (so the same schedule), same answers.
    with app.app_context():
        seed = db.session.scalar(select(Participant.seed))
    from flow import run_to_end, start

    from study_app import services
    from study_app.design import read_design_file
    from study_app.models import Researcher

    with one_server_app.app_context():
        services.import_stimulus_set(demo_set_dir, Path(one_server_app.config["MEDIA_DIR"]))
        owner = Researcher(email="owner@example.org")
        owner.set_password("owner-password")
        db.session.add(owner)
        db.session.commit()
        design = read_design_file(Path(__file__).resolve().parents[2] / "stimuli/demo_study.yaml")
        one_entry = services.create_study(design, owner).entry_token
    # enroll draws the seed with secrets.randbelow; here it draws the nginx run's.
    monkeypatch.setattr(secrets, "randbelow", lambda _: seed)
    client = one_server_app.test_client()

    def read_media(page) -> None:  # the app path: the app sends (and counts) the bytes
        for url in page.media:
            assert client.get(url, buffered=True).status_code == 200

    run_to_end(client, start(client, one_entry), on_page=read_media)

    through_nginx, one_server = export_without_time(app), export_without_time(one_server_app)
    assert len(through_nginx) == 14
    heard = [row for row in through_nginx if row["media_fetched"] not in ("", "0")]
    assert heard and all(row["flag_unheard"] == "0" for row in heard), through_nginx
    assert through_nginx == one_server


def test_a_participant_goes_on_when_an_app_server_is_killed(shape, app):
    """kill -9 of one app server mid-study: nginx skips the refused server (the request had not
    been sent), so the participant sees no error and every answer is stored once."""
    running, entry = shape

    def kill_one(step: int) -> None:
        if step == 5:
            victim = running.app_servers[0]
            import signal

            os.killpg(victim.process.pid, signal.SIGKILL)
            victim.process.wait(timeout=10)

    token = play(running.url, entry, on_step=kill_one)
    with app.app_context():
        participant = db.session.scalar(select(Participant).where(Participant.token == token))
        answered = [t for t in participant.trials if t.response is not None]
        assert len(answered) == len(participant.trials) - 1  # all but the debrief
        assert participant.completed_at is not None


def test_serve_migrates_once_serves_and_stops_on_sigterm(serve, database, tmp_path):
    """scripts/serve.py as `make serve` runs it: migrations (under the lock) on an empty
    schema, nginx and two app servers up, and SIGTERM stops every one of them."""
    import signal
    import urllib.request

    url, options = database
    if not url.startswith("postgresql"):
        pytest.skip("the production shape runs on PostgreSQL")
    schema = options["connect_args"]["options"].split("=", 1)[1]
    port = serve.free_port()
    env = dict(
        os.environ,
        DATABASE_URL=f"{url}?options=-csearch_path%3D{schema}",
        SECRET_KEY=SECRET,
        PORT=str(port),
    )
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "serve.py"), "--run-dir", str(run_dir),
         "--media-dir", str(tmp_path / "media"), "--workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        up = False
        for _ in range(600):  # at most 60 s
            if process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    up = r.status == 200
                    break
            except OSError:
                time.sleep(0.1)
        assert up, process.communicate(timeout=30)[0] if process.poll() is not None else "no"
        engine = sqlalchemy.create_engine(url, connect_args=options["connect_args"])
        with engine.connect() as conn:  # migrated: the schema is at Alembic's head
            assert conn.execute(sqlalchemy.text("select version_num from alembic_version")).all()
        engine.dispose()
        ports = [int(p.name.split("-")[1].split(".")[0]) for p in run_dir.glob("app-*.log")]
        assert len(ports) == 2
        # media through nginx by default, and `flask media-gc` run once at start
        assert "internal;" in (run_dir / "nginx-media.conf").read_text()
        assert "log_format sightsound_media" in (run_dir / "nginx-media-log.conf").read_text()
        gc_log = run_dir / "media-gc.log"
        for _ in range(600):
            if "kept 0 renditions" in (gc_log.read_text() if gc_log.exists() else ""):
                break
            time.sleep(0.1)
        assert "kept 0 renditions" in gc_log.read_text(), gc_log.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    for closed in [port, *ports]:
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{closed}/healthz", timeout=2)


def test_renditions_live_in_memory_one_folder_per_run_and_go_when_the_shape_stops(
    serve, tmp_path
):
    memory = tmp_path / "shm"
    memory.mkdir()
    first = serve.MediaAccel.under(tmp_path / "run-a", {}, memory=memory)
    again = serve.MediaAccel.under(tmp_path / "run-a", {}, memory=memory)
    other = serve.MediaAccel.under(tmp_path / "run-b", {}, memory=memory)
    assert first.renditions_in_memory and first.renditions_dir.parent == memory
    assert first.renditions_dir == again.renditions_dir != other.renditions_dir
    assert first.access_log == tmp_path / "run-a" / "media-access.log"  # the log stays on disk
    # A folder the environment names is used as it is, and never removed by a stop.
    named = serve.MediaAccel.under(
        tmp_path / "run-a", {"SIGHTSOUND_MEDIA_RENDITIONS_DIR": str(tmp_path / "nfs")}, memory
    )
    assert named.renditions_dir == tmp_path / "nfs" and not named.renditions_in_memory
    # No writable memory folder: the run folder's renditions/.
    assert serve.MediaAccel.under(tmp_path / "run-a", {}, memory=tmp_path / "none") == (
        serve.MediaAccel(
            serve.MEDIA_ACCEL_PREFIX,
            tmp_path / "run-a" / "renditions",
            tmp_path / "run-a" / "media-access.log",
        )
    )
    for media, removed in ((first, True), (named, False)):
        media.renditions_dir.mkdir(parents=True)
        (media.renditions_dir / "r").write_bytes(b"x")
        serve.Shape(tmp_path / "run-a", 1, media=media).stop()
        assert media.renditions_dir.exists() is not removed


def test_a_start_sweeps_other_runs_idle_memory_folders(serve, tmp_path):
    memory = tmp_path / "shm"
    ours, idle, busy = (memory / f"sightsound-renditions-{n}" for n in ("ours", "idle", "busy"))
    for folder in (ours, idle, busy):
        folder.mkdir(parents=True)
        (folder / "r").write_bytes(b"x")
    (memory / "unrelated").mkdir()
    long_ago = time.time() - 7 * 3600
    for folder in (ours, idle, memory / "unrelated"):
        os.utime(folder, (long_ago, long_ago))
    assert serve.sweep_memory_folders(ours, memory) == [idle]
    assert ours.exists() and busy.exists() and (memory / "unrelated").exists()


@pytest.mark.parametrize(
    "media_through_nginx, secure", [(True, False), (True, True), (False, False)]
)
def test_the_rendered_config_is_valid_and_complete(serve, tmp_path, media_through_nginx, secure):
    # (renditions in the run folder here: where there is no memory folder)
    media = serve.MediaAccel.under(tmp_path, {}, memory=None) if media_through_nginx else None
    config = serve.nginx_config(
        tmp_path, "127.0.0.1:1", ["127.0.0.1:2", "127.0.0.1:3"], tmp_path / "collected",
        media=media, secure=secure,
    )  # fmt: skip
    text = config.read_text()
    assert "{{" not in text and "server 127.0.0.1:2;" in text and "server 127.0.0.1:3;" in text
    locations = (tmp_path / "nginx-media.conf").read_text()
    log_format = (tmp_path / "nginx-media-log.conf").read_text()
    assert f"include {tmp_path / 'nginx-media.conf'};" in text
    assert f"include {tmp_path / 'nginx-media-log.conf'};" in text
    if media_through_nginx:
        assert "{{" not in locations + log_format
        assert f"alias {tmp_path / 'renditions'}/;" in locations
        assert f"access_log {tmp_path / 'media-access.log'} sightsound_media;" in locations
        assert "location /_media_internal/ {" in locations
        # direct sends: the app's own security headers, HSTS only behind HTTPS
        from study_app import security_headers

        for name, value in security_headers(secure):
            assert f'add_header {name} "{value}";' in locations
        assert ('add_header Strict-Transport-Security "' in locations) == secure
        assert f"root {tmp_path / 'renditions'};" in locations
        assert media.env()["SIGHTSOUND_MEDIA_DIRECT"] == "1"  # serve.py's default
    else:
        assert locations == log_format == ""
    checked = subprocess.run(
        [NGINX, "-t", "-c", str(config), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    with pytest.raises(KeyError, match="listen"):
        serve.render("listen {{listen}};", {})


def test_machines_migrating_at_once_take_turns(serve, database, tmp_path):
    """Three `serve.py --migrate-only` at once on an empty schema (three machines starting
    together): the advisory lock lets one migrate, the others find nothing to do; all succeed.
    (Without the lock, concurrent `flask db upgrade`s collide creating the same tables.)"""
    url, options = database
    if not url.startswith("postgresql"):
        pytest.skip("the lock is PostgreSQL's advisory lock")
    schema = options["connect_args"]["options"].split("=", 1)[1]
    env = dict(
        os.environ, DATABASE_URL=f"{url}?options=-csearch_path%3D{schema}", SECRET_KEY=SECRET
    )
    processes = [
        subprocess.Popen(
            [sys.executable, str(SCRIPTS / "serve.py"), "--migrate-only"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    assert sum("Running upgrade  -> " in output for output in outputs) == 1, outputs
