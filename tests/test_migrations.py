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
