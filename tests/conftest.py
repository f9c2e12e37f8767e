"""Fixtures every room shares. Database tests run twice: on SQLite and on the local PostgreSQL,
unless their module (or the test) is marked `sqlite_only`.

PostgreSQL tests get a schema of their own (dropped afterwards), so they never see each other's
rows. In CI (CI=true) an unreachable PostgreSQL fails the run instead of skipping.

The rooms: app/ (the Flask app, its CLI, database and servers), browser/ (headless Chromium),
analysis/ and synthesis/, each with a conftest.py of its own; the helpers every room may import
(flow.py, browser.py, researcher.py, ...) sit here, on pytest's `pythonpath`.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get(
    "SIGHTSOUND_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
DEMO_DESIGN = REPO_ROOT / "stimuli" / "demo_study.yaml"
# Researchers' passwords in tests: PBKDF2 with few rounds instead of the app's scrypt (0.4 s a
# login, hundreds of logins a run). Known and unknown emails still check the same method
# (test_login_throttle); tests/app/test_login_throttle.py checks the app's default is scrypt.
TEST_PASSWORD_HASH = "pbkdf2:sha256:1000"


def _postgres_available() -> str | None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        return str(exc).splitlines()[0]
    return None


@pytest.fixture(scope="session")
def postgres_ready() -> None:
    problem = _postgres_available()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required in CI: {problem}")
        pytest.skip(f"PostgreSQL not reachable: {problem}")


# Which databases the `database` tests run on: both by default (`make test`); `make test-fast`
# sets SIGHTSOUND_TEST_DATABASES=sqlite, so the quick loop needs no PostgreSQL server either.
TEST_DATABASES = tuple(
    name.strip()
    for name in os.environ.get("SIGHTSOUND_TEST_DATABASES", "sqlite,postgresql").split(",")
    if name.strip() in ("sqlite", "postgresql")
) or ("sqlite", "postgresql")


def pytest_generate_tests(metafunc):
    """A test using `database` runs once per database: SQLite and PostgreSQL, or SQLite alone
    where it is marked `sqlite_only` (it keeps its plain test id then)."""
    if "database" in metafunc.fixturenames and not metafunc.definition.get_closest_marker(
        "sqlite_only"
    ):
        metafunc.parametrize("database", list(TEST_DATABASES), indirect=True)


@pytest.fixture
def database(request, tmp_path):
    """(SQLALCHEMY_DATABASE_URI, SQLALCHEMY_ENGINE_OPTIONS) for a fresh, empty database."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite'}", {"connect_args": {"timeout": 30}}
        return
    request.getfixturevalue("postgres_ready")
    import sqlalchemy

    schema = "t_" + re.sub(r"\W", "_", request.node.name.lower())[:30] + "_" + secrets.token_hex(4)
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    options = {"connect_args": {"options": f"-csearch_path={schema}"}}
    yield POSTGRES_URL, options
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def testing_app(url: str, options: dict, media_dir: Path):
    """An app in testing mode on `url` (tables not created: the caller decides)."""
    from study_app import create_app

    return create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": url,
            "SQLALCHEMY_ENGINE_OPTIONS": options,
            "MEDIA_DIR": str(media_dir),
            "WTF_CSRF_ENABLED": False,
            "SECRET_KEY": "test-secret",
            "PASSWORD_HASH_METHOD": TEST_PASSWORD_HASH,
        }
    )


@pytest.fixture
def make_app(tmp_path):
    """`make_app(url, options)`: more apps, e.g. a second server worker on the same database;
    their connections are closed afterwards."""
    from study_app.extensions import db

    made = []

    def make(url: str, options: dict | None = None):
        made.append(testing_app(url, options or {}, tmp_path / "media"))
        return made[-1]

    yield make
    for app in made:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(database, tmp_path):
    from study_app.extensions import db

    url, options = database
    app = testing_app(url, options, tmp_path / "media")
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def demo_set_dir(tmp_path_factory) -> Path:
    from demo_set import build_demo_set

    folder = tmp_path_factory.mktemp("demo_set")
    build_demo_set(folder)
    return folder


@pytest.fixture(scope="session")
def long_demo_set_dir(tmp_path_factory) -> Path:
    """The demo set with 5 s clips: long enough for P.808 trapping clips."""
    from demo_set import build_demo_set

    folder = tmp_path_factory.mktemp("long_demo_set")
    build_demo_set(folder, duration=5.0)
    return folder


@functools.cache
def owner_password_hash() -> str:
    """The hash of "owner-password", made once, with the tests' hash method (logging in
    checks it in full)."""
    from werkzeug.security import generate_password_hash

    return generate_password_hash("owner-password", method=TEST_PASSWORD_HASH)


@pytest.fixture
def make_study(app, demo_set_dir):
    """`make_study(design_file, set_dir=demo set)`: import the stimulus set (once) and create
    the design's study, owned by owner@example.org (password owner-password); returns
    (slug, entry token)."""
    from sqlalchemy import select

    from study_app.design import read_design_file
    from study_app.extensions import db
    from study_app.models import Researcher
    from study_app.services import create_study, import_stimulus_set

    def make(design_file: Path = DEMO_DESIGN, set_dir: Path = demo_set_dir) -> tuple[str, str]:
        with app.app_context():
            import_stimulus_set(set_dir, Path(app.config["MEDIA_DIR"]))
            owner = db.session.scalar(
                select(Researcher).where(Researcher.email == "owner@example.org")
            )
            if owner is None:
                owner = Researcher(email="owner@example.org")
                owner.password_hash = owner_password_hash()
                db.session.add(owner)
                db.session.commit()
            study = create_study(read_design_file(design_file), owner)
            return study.slug, study.entry_token

    return make


@pytest.fixture
def demo_study(make_study):
    """The demo stimulus set imported and the demo study created; returns the study's slug."""
    return make_study()[0]
