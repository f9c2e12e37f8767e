"""The blinding audit with its media served by nginx from renditions (MEDIA_ACCEL_REDIRECT):
pages and answers go through the test client as in tests/app/test_blinding_audit.py, every media
request over HTTP to /usr/sbin/nginx in front of a real server, so the classifier sees what a
browser behind nginx sees (status, headers, sizes, bytes, timing)."""

from __future__ import annotations

import http.client
import os

import pytest
from nginx_front import NGINX, accel, nginx_in_front

from study_app import audit
from study_app.audit import TRANSPORT, analyse, collect, x_copy_reveals_answer

# SQLite, as tests/app/test_blinding_audit.py (the audit plays whole sessions).
pytestmark = pytest.mark.sqlite_only


@pytest.mark.skipif(
    NGINX is None and not os.environ.get("CI"),
    reason="nginx is not installed (apt-get install nginx-light); CI installs it",
)
@pytest.mark.parametrize("direct", [False, True], ids=["x-accel", "direct"])
def test_demo_study_is_blind_through_nginx(app, demo_study, tmp_path, monkeypatch, direct):
    """`direct`: MEDIA_DIRECT, as `make serve` runs: nginx sends every medium of a shown trial
    without the app (pages render the renditions); else X-Accel-Redirect after the app's
    authorisation."""
    with nginx_in_front(app, tmp_path) as (port, _):

        class ThroughNginx(audit.BrowserClient):
            def open(self, *args, **kwargs):
                path = args[0] if args and isinstance(args[0], str) else None
                if path is None or "/m/" not in path:
                    return super().open(*args, **kwargs)
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                connection.request("GET", path)
                got = connection.getresponse()
                body = got.read()
                connection.close()
                assert got.status == 200 and "X-Accel-Redirect" not in got.headers
                return app.response_class(body, status=got.status, headers=got.getheaders())

        monkeypatch.setattr(audit, "BrowserClient", ThroughNginx)
        accel(app, tmp_path, direct=direct)
        observations = collect(app, demo_study, participants=12, seed=1)
    logged = (tmp_path / "media.log").read_text().splitlines()
    assert logged and all(('"direct.' in line) == direct for line in logged)
    labelled = [o for o in observations if o.label is not None]
    assert {o.trial_type for o in labelled} == {"abx", "emotion_rating"}
    assert len(labelled) >= 12 * (4 * 3 + 4)
    assert all(o.headers.get("Server", "").startswith("nginx") for o in labelled)
    for result in analyse(observations, permutations=499, seed=0):
        if result.group == TRANSPORT:
            assert not result.leaks, result
    x = x_copy_reveals_answer(observations)
    assert x["abx_trials"] == 12 * 4 and x["x_bytes_equal_a_or_b"] == 0
    assert all(o.seen_before == 0 for o in labelled)
