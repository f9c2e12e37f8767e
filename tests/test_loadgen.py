"""scripts/loadgen.py end to end, small: a few participants against gunicorn on SQLite."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

pytestmark = [
    pytest.mark.slow,  # a gunicorn start-up and a short study, about 10 s
    pytest.mark.skipif(
        importlib.util.find_spec("gunicorn") is None or importlib.util.find_spec("aiohttp") is None,
        reason="needs gunicorn and aiohttp (dev extra)",
    ),
]


@pytest.fixture(scope="module")
def loadgen():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import loadgen

        yield loadgen
    finally:
        sys.path.remove(str(SCRIPTS))


def test_loadgen_reports_latency_throughput_cpu_and_integrity(loadgen, tmp_path):
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
    if Path("/proc/self/stat").exists():
        cpu = figures["cpu_ms_per_request"]
        study, bare = cpu["study"], cpu["healthz"]
        assert study["server"] > bare["server"] > 0  # a trial request costs more than /healthz
        assert study["client"] > 0 and bare["client"] > 0


def test_cpu_seconds_counts_a_process_group(loadgen):
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
