"""kill -9 the server while participants answer: no acknowledged answer is lost or doubled, and
everyone resumes at the right trial (scripts/durability.py, small and bounded); and the load
generator it is built on (scripts/loadgen.py) end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

pytestmark = [
    pytest.mark.slow,  # gunicorn start-ups: about 20 s per database for the kills, 10 s for load
    pytest.mark.serial,  # timing under load: run alone, after the parallel part of `make test`
    pytest.mark.skipif(
        importlib.util.find_spec("gunicorn") is None or importlib.util.find_spec("aiohttp") is None,
        reason="needs gunicorn and aiohttp (dev extra)",
    ),
]


@pytest.fixture(scope="module")
def durability():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import durability

        yield durability
    finally:
        sys.path.remove(str(SCRIPTS))


PARTICIPANTS = 10


def play_through(durability, url, options, tmp_path, demo_set_dir, **chaos):
    """PARTICIPANTS participants (3 at a time, 2 workers) through the demo study under `chaos`
    (run_durability's kills, every, restart_db); returns its verification."""
    import loadgen

    set_dir = tmp_path / "set"
    shutil.copytree(demo_set_dir, set_dir)
    entry = loadgen.set_up_study(url, tmp_path / "media", set_dir, options)
    return durability.run_durability(
        url,
        tmp_path / "media",
        entry,
        participants=PARTICIPANTS,
        concurrency=3,
        workers=2,
        engine_options=options,
        time_limit=90,
        log=tmp_path / "gunicorn.log",
        **chaos,
    )


def assert_nothing_lost(result, participants: int = PARTICIPANTS) -> None:
    assert result["disruptions_after_study"] == 0, "an outage came after everyone had finished"
    assert result["lost"] == 0
    assert result["duplicated"] == 0
    assert result["acknowledged_twice"] == 0
    assert result["participants_out_of_order"] == 0
    assert result["finished"] == participants
    # a join cut off by a kill leaves an enrolled participant the client never heard of (it
    # joins again); such a participant must have no answers
    assert result["participants"] - result["enrolled_without_ack"] == participants
    assert result["unacknowledged_with_answers"] == 0
    assert result["stored_never_sent"] == 0  # an answer stored unacknowledged was one sent
    # each participant answered their 15 trials exactly once, nothing more
    assert result["stored_answers"] == participants * 15


def test_kill_9_loses_no_acknowledged_answer(durability, database, tmp_path, demo_set_dir):
    url, options = database
    result = play_through(durability, url, options, tmp_path, demo_set_dir, kills=2, every=0.6)
    assert result["kills"] == 2
    assert_nothing_lost(result)


def test_loadgen_reports_latency_throughput_cpu_and_integrity(durability, tmp_path):
    import loadgen

    out = tmp_path / "load.json"
    arguments = ["--participants", "4", "--concurrency", "2", "--workers", "2"]
    assert loadgen.main([*arguments, "--database", "sqlite", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    integrity = figures["integrity"]
    assert integrity["finished"] == 4
    assert integrity["acknowledged_answers"] == integrity["stored_answers"] == 4 * 15
    assert integrity["lost"] == integrity["duplicated"] == 0
    assert figures["endpoints"]["media"]["n"] == 4 * 32  # the demo study: 32 media fetches each
    assert figures["healthz"]["n"] == figures["trial_loop"]["n"]
    assert 0 < figures["throughput_ratio"] < 1
    minutes = figures["pages_and_answers_by_minute"]
    assert minutes and minutes[0]["minute"] == 0
    assert sum(m["n"] for m in minutes) == 4 * 16 + 4 * 15  # every page and answer, once
    # uvloop comes with the dev extra; one gunicorn closes every connection, so one each
    assert figures["setup"]["client"] == {"event_loop": "uvloop",
                                          "connections": "one per request"}
    if Path("/proc/self/stat").exists():
        cpu = figures["cpu_ms_per_request"]
        study, bare = cpu["study"], cpu["healthz"]
        assert study["server"] > bare["server"] > 0  # a trial request costs more than /healthz
        assert study["client"] > 0 and bare["client"] > 0


def test_folder_watch_keeps_the_peak_of_a_folder_that_grows_and_empties(durability, tmp_path):
    import loadgen

    folder = tmp_path / "renditions"
    with loadgen.FolderWatch(folder, every=0.02) as watch:
        time.sleep(0.1)  # no folder yet: nothing, no error
        folder.mkdir()
        for index in range(3):
            (folder / f"r{index}").write_bytes(b"x" * 1000)
        time.sleep(0.2)
        for path in folder.iterdir():
            path.unlink()
        time.sleep(0.1)
    assert (watch.peak_bytes, watch.peak_files) == (3000, 3)
    assert watch.size() == (0, 0)


def test_cpu_seconds_counts_a_process_group(durability):
    import loadgen

    spin = "import time\nend = time.time() + 1.0\nwhile time.time() < end: pass"
    busy = subprocess.Popen([sys.executable, "-c", spin], start_new_session=True)
    try:
        time.sleep(0.6)
        used = loadgen.cpu_seconds(busy.pid)  # the group it leads, as gunicorn's in loadgen
    finally:
        busy.wait(timeout=10)
    if not used:
        pytest.skip("no /proc here")
    assert used["server"] > 0.1
    assert used["client"] == pytest.approx(sum(os.times()[:2]), abs=0.5)


@pytest.fixture
def scratch_cluster(durability):
    """A PostgreSQL cluster of our own on a free port, so that restarting it disturbs nobody."""
    import loadgen

    if shutil.which("pg_createcluster") is None or os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the database restart test needs Debian's pg_createcluster, as root")
        pytest.skip("needs Debian's pg_createcluster, as root")
    version = durability.installed_postgres_version()
    name, port = f"sstest{os.getpid()}", loadgen.free_port()
    run = lambda *command: subprocess.run(command, check=True, capture_output=True, timeout=120)  # noqa: E731
    run("pg_createcluster", version, name, "-p", str(port), "--", "--auth=trust")
    try:
        run("pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start")
        yield name, f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            ["pg_dropcluster", "--stop", version, name], capture_output=True, timeout=120
        )


def test_database_restart_under_load_loses_nothing(
    durability, scratch_cluster, tmp_path, demo_set_dir
):
    """PostgreSQL restarts while the server keeps running: every pooled connection breaks at
    once. The server retries a request whose connection dropped, so participants see no 5xx;
    the workers carry on on new connections, and nothing acknowledged is lost or doubled."""
    import loadgen

    cluster, admin_url = scratch_cluster
    with loadgen.scratch_postgres(admin_url) as url:
        result = play_through(
            durability, url, None, tmp_path, demo_set_dir, kills=0, every=1.5, restart_db=cluster
        )
    assert result["database_restarts"] == 1
    assert_nothing_lost(result)
    # The server retries a dropped connection once (study_app/db_retry.py): no participant
    # sees an error page while the database restarts.
    assert result["server_errors"] == 0, result["errors_by_request"]


@pytest.mark.skipif(
    not os.path.exists("/usr/sbin/nginx") and not os.environ.get("CI"),
    reason="needs Debian's nginx at /usr/sbin/nginx (`make nginx`; CI installs it)",
)
def test_the_production_shape_survives_app_server_and_nginx_kills_and_a_database_restart(
    durability, scratch_cluster, tmp_path, demo_set_dir
):
    """nginx in front of two app servers (media through nginx): kill -9 one app server (back
    2 s later), then nginx (restarted), then restart PostgreSQL with both servers running.
    Nothing acknowledged is lost or doubled, nothing is stored that the client did not send,
    and no participant sees a 5xx."""
    import loadgen

    cluster, admin_url = scratch_cluster
    with loadgen.scratch_postgres(admin_url) as url:
        set_dir = tmp_path / "set"
        shutil.copytree(demo_set_dir, set_dir)
        entry = loadgen.set_up_study(url, tmp_path / "media", set_dir, None)
        # enough participants to outlast the three disruptions (about 8 s in all)
        result = durability.run_durability(
            url, tmp_path / "media", entry, participants=40, concurrency=3,
            kills=1, every=0.5, workers=1, restart_db=cluster, time_limit=120,
            shape=2, run_dir=tmp_path / "serve",
        )  # fmt: skip
    assert result["kills"] == 2  # an app server, then nginx
    assert result["database_restarts"] == 1
    assert_nothing_lost(result, participants=40)
    # nginx resends a request whose app server died (answers and enrolments too: they are
    # idempotent), so no disruption shows a participant a 5xx; only nginx's own death cuts
    # connections, and the client resends those
    assert result["server_errors"] == 0, result["errors_by_request"]
    failures = result["connection_failures_by_disruption"]
    assert failures["app server back"] == failures["postgresql restarted"] == 0, failures
