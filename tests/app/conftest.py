"""The app room: the Flask app through its test client, its CLI, its database code, and real
servers (gunicorn, nginx, werkzeug) without a browser. The `app`, `client`, `database` and study
fixtures they share are in tests/conftest.py; a module marked `sqlite_only` runs on SQLite alone."""

from __future__ import annotations

import pytest
from researcher import logged_in


@pytest.fixture
def owner(app, demo_study):
    """The demo study's owner, logged in (the demo set imported)."""
    return logged_in(app, "owner@example.org", "owner-password")
