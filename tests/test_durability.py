"""kill -9 the server while participants answer: no acknowledged answer is lost or doubled, and
everyone resumes at the right trial (scripts/durability.py, small and bounded)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

pytestmark = [
    pytest.mark.slow,  # about 20 s per database: three gunicorn start-ups
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


def test_kill_9_loses_no_acknowledged_answer(durability, database, tmp_path, demo_set_dir):
    import loadgen

    url, options = database
    set_dir = tmp_path / "set"
    shutil.copytree(demo_set_dir, set_dir)
    entry = loadgen.set_up_study(url, tmp_path / "media", set_dir, options)
    result = durability.run_durability(
        url,
        tmp_path / "media",
        entry,
        participants=10,
        concurrency=3,
        kills=2,
        every=0.6,
        workers=2,
        engine_options=options,
        time_limit=90,
        log=tmp_path / "gunicorn.log",
    )
    assert result["kills"] == 2
    assert result["client_retries"] > 0, "the kills happened after everyone had finished"
    assert result["lost"] == 0
    assert result["duplicated"] == 0
    assert result["acknowledged_twice"] == 0
    assert result["participants_out_of_order"] == 0
    assert result["finished"] == 10
    # a join cut off by a kill leaves an enrolled participant the client never heard of (it
    # joins again); such a participant must have no answers
    assert result["participants"] - result["enrolled_without_ack"] == 10
    assert result["unacknowledged_with_answers"] == 0
    # each of the 10 participants answered their 15 trials exactly once, nothing more
    assert result["stored_answers"] == 10 * 15
