"""Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import study_app
from study_app import create_app
from study_app.extensions import db

MIGRATIONS = str(Path(study_app.__file__).parent / "migrations")


@pytest.fixture
def empty_app(database, tmp_path):
    url, options = database
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": url,
            "SQLALCHEMY_ENGINE_OPTIONS": options,
            "MEDIA_DIR": str(tmp_path / "media"),
        }
    )
    yield app
    with app.app_context():
        db.engine.dispose()


def test_upgrade_matches_models_and_downgrades(empty_app):
    from flask_migrate import downgrade, upgrade

    with empty_app.app_context():
        upgrade(directory=MIGRATIONS)
        with db.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), db.metadata)
        assert diff == []
        downgrade(directory=MIGRATIONS, revision="base")
        with db.engine.connect() as connection:
            tables = set(db.inspect(connection).get_table_names()) - {"alembic_version"}
        assert tables == set()


def test_upgrade_keeps_every_stored_answer(empty_app):
    """Migrations run on live data: a table rebuild must not cascade-delete child rows."""
    from flask_migrate import upgrade
    from sqlalchemy import text

    first_revision = "006d051bacf7"
    rows = [
        "insert into researchers (id, email, password_hash, is_admin, created_at) "
        "values (1, 'a@b.c', 'x', false, '2026-01-01 00:00:00+00')",
        "insert into stimulus_sets (id, name, folder, manifest, manifest_sha256, imported_at) "
        "values (1, 'set', '/f', '{}', 'h', '2026-01-01 00:00:00+00')",
        "insert into studies (id, slug, title, owner_id, stimulus_set_id, design, status, "
        "entry_token, completion_code, created_at) "
        "values (1, 's', 't', 1, 1, '{}', 'open', 'e', 'c', '2026-01-01 00:00:00+00')",
        "insert into participants (id, study_id, token, assignment_index, seed, started_at, "
        "screened_out) values (1, 1, 'p', 0, 7, '2026-01-01 00:00:00+00', false)",
        "insert into trials (id, participant_id, trial_index, trial_in_block, block_id, "
        "block_index, trial_type, token, spec) values (1, 1, 0, 0, 'b', 0, 'abx', 't', '{}')",
        "insert into responses (id, trial_id, answer, answered_at) "
        "values (1, 1, '{\"answer\": \"A\"}', '2026-01-01 00:00:01+00')",
    ]
    with empty_app.app_context():
        upgrade(directory=MIGRATIONS, revision=first_revision)
        with db.engine.begin() as connection:
            for statement in rows:
                connection.execute(text(statement))
        upgrade(directory=MIGRATIONS)
        with db.engine.connect() as connection:
            counts = [
                connection.execute(text(f"select count(*) from {table}")).scalar()
                for table in ("participants", "trials", "responses")
            ]
            preview = connection.execute(text("select is_preview from participants")).scalar()
        assert counts == [1, 1, 1]
        assert preview in (False, 0)


def test_migrating_leaves_the_process_s_log_handlers_alone(empty_app):
    """`flask db upgrade` runs inside processes that have logging of their own (demo-setup, a
    server's start-up, the test suite): it must not close their handlers. alembic's stock
    env.py used logging.config.fileConfig, which closes every handler ever created, and absl's
    handler (imported with note-seq) then closed the stream it wrote to: the test suite's
    captured stderr, mid-run."""
    import logging

    from flask_migrate import upgrade

    class Recording(logging.Handler):
        closed = False

        def emit(self, record):
            pass

        def close(self):
            self.closed = True
            super().close()

    library_handler = Recording()  # like a library's, attached to no logger
    with empty_app.app_context():
        upgrade(directory=MIGRATIONS)
    assert not library_handler.closed
