"""Benchmark the export and the dashboard's `study_summary` with a million media fetches.

    .venv/bin/python scripts/bench_evidence.py [--database URL] [--participants 200]
                                               [--fetches 1000000] [--no-old]

A demo study (docs/operations.md, "Listening evidence") with `--participants` participants who
answered every trial, and the evidence of `--fetches` media requests spread over their trial
slots, kept as the app keeps it: one row per trial slot (the union of the ranges sent, a
request count). Prints the time of `export_files` and `study_summary` and their peak Python
memory (tracemalloc, measured in a second run: tracing slows the code). Unless `--no-old`, it
then writes the same number of rows in the old form (one row per request, the table before
issue 23) and prints what reading them as the old export did costs, on top of the rest.

The database defaults to a fresh SQLite file; a PostgreSQL URL gets a schema of its own,
dropped afterwards. A benchmark prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo_set import build_demo_set  # noqa: E402
from study_app import create_app  # noqa: E402
from study_app.dashboard import study_summary  # noqa: E402
from study_app.design import read_design_file  # noqa: E402
from study_app.export import export_files  # noqa: E402
from study_app.extensions import db  # noqa: E402
from study_app.models import (  # noqa: E402
    MediaEvidence,
    Participant,
    Researcher,
    Response,
    Study,
    Trial,
    utcnow,
)
from study_app.services import ExternalIds, create_study, enroll, import_stimulus_set  # noqa: E402
from study_app.trial_types import get_trial_type  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIP_BYTES = 529_244  # a 3 s stereo 44.1 kHz clip as served
ANSWERS: dict[str, dict[str, Any]] = {
    "consent": {"consent": "yes"},
    "headphone_check": {"answer": 2},
    "emotion_rating": {"valence": 3, "arousal": 7, "fit": 2, "tempo": 5},
    "abx": {"answer": "B", "confidence": 2},
}


def measure(what: str, run: Callable[[], object]) -> None:
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    tracemalloc.start()
    try:
        run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"  {what:<44} {seconds:7.2f} s   peak {peak / 2**20:7.1f} MB")


def seed(participants: int, fetches: int, media_dir: Path, set_dir: Path) -> int:
    """The demo study, `participants` who answered everything, and the evidence of `fetches`
    requests; returns the number of evidence rows."""
    import_stimulus_set(set_dir, media_dir)
    owner = Researcher(email="bench@example.org")
    owner.set_password(secrets.token_urlsafe(12))
    db.session.add(owner)
    db.session.commit()
    study = create_study(read_design_file(REPO / "stimuli" / "demo_study.yaml"), owner)
    study.status = "open"
    db.session.commit()
    for _ in range(participants):
        enroll(study, ExternalIds())
    now = utcnow()
    trials = db.session.execute(
        sa.select(Trial.id, Trial.trial_type, Trial.spec)
        .join(Participant, Participant.id == Trial.participant_id)
        .where(Participant.study_id == study.id)
    ).all()
    db.session.execute(sa.update(Trial).values(presented_at=now - timedelta(minutes=5)))
    db.session.execute(
        sa.insert(Response),
        [
            {"trial_id": t.id, "answer": ANSWERS[t.trial_type], "answered_at": now}
            for t in trials
            if t.trial_type in ANSWERS
        ],
    )
    slots = [(t.id, slot) for t in trials for slot in get_trial_type(t.trial_type).media(t.spec)]
    share, rest = divmod(fetches, len(slots))
    then = now - timedelta(minutes=1)
    db.session.execute(
        sa.insert(MediaEvidence),
        [
            {
                "trial_id": trial_id,
                "slot": slot,
                "total_bytes": CLIP_BYTES,
                "ranges": [[0, CLIP_BYTES]],
                "requests": share + (i < rest),
                "first_at": then,
                "last_at": then,
                "window_start": then,
                "window_requests": 1,
            }
            for i, (trial_id, slot) in enumerate(slots)
        ],
    )
    db.session.execute(sa.update(Participant).values(completed_at=now))
    db.session.commit()
    return len(slots)


def old_form(fetches: int) -> None:
    """`fetches` rows in the shape of the old table, read as the old export read them."""
    from study_app.listening import Fetch

    metadata = sa.MetaData()
    old = sa.Table(
        "bench_old_media_fetches",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("trial_id", sa.Integer, index=True),
        sa.Column("slot", sa.String(16)),
        sa.Column("first_byte", sa.Integer),
        sa.Column("end_byte", sa.Integer),
        sa.Column("total_bytes", sa.Integer),
        sa.Column("at", sa.DateTime(timezone=True)),
    )
    metadata.create_all(db.engine)
    slots = db.session.execute(sa.select(MediaEvidence.trial_id, MediaEvidence.slot)).all()
    now = utcnow()
    started = time.perf_counter()
    batch = 20_000
    for offset in range(0, fetches, batch):
        db.session.execute(
            old.insert(),
            [
                {
                    "trial_id": slots[i % len(slots)][0],
                    "slot": slots[i % len(slots)][1],
                    "first_byte": 0,
                    "end_byte": 1,
                    "total_bytes": CLIP_BYTES,
                    "at": now,
                }
                for i in range(offset, min(fetches, offset + batch))
            ],
        )
    db.session.commit()
    print(f"  (wrote {fetches:,} old-form rows in {time.perf_counter() - started:.1f} s)")

    def read() -> None:
        log: dict[int, list[Fetch]] = {}
        statement = sa.select(
            old.c.trial_id,
            old.c.slot,
            old.c.first_byte,
            old.c.end_byte,
            old.c.total_bytes,
            old.c.at,
        )
        for trial_id, slot, first, end, total, at in db.session.execute(statement):
            log.setdefault(trial_id, []).append(Fetch(slot, first, end, total, at))

    measure("old form: reading the log as the export did", read)
    old.drop(db.engine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="SQLAlchemy URL (default: a fresh SQLite file)")
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--fetches", type=int, default=1_000_000)
    parser.add_argument("--no-old", action="store_true", help="skip the old form's figures")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_evidence_"))
    url, options, schema = args.database, {}, None
    if url is None:
        url = f"sqlite:///{tmp / 'bench.sqlite'}"
    elif url.startswith("postgresql"):
        schema = "bench_evidence_" + secrets.token_hex(4)
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        options = {"connect_args": {"options": f"-csearch_path={schema}"}}
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": url,
            "SQLALCHEMY_ENGINE_OPTIONS": options,
            "MEDIA_DIR": str(tmp / "media"),
            "SECRET_KEY": "bench",
        }
    )
    build_demo_set(tmp / "set")
    try:
        with app.app_context():
            db.create_all()
            started = time.perf_counter()
            rows = seed(args.participants, args.fetches, tmp / "media", tmp / "set")
            print(
                f"{db.engine.dialect.name}: {args.participants} participants, "
                f"{args.fetches:,} fetches kept as {rows:,} evidence rows "
                f"(seeded in {time.perf_counter() - started:.1f} s)"
            )
            study = db.session.scalar(sa.select(Study))
            measure("export_files", lambda: export_files(study))
            measure("study_summary", lambda: study_summary(study))
            if not args.no_old:
                old_form(args.fetches)
            db.session.remove()
            db.engine.dispose()
    finally:
        if schema is not None:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


if __name__ == "__main__":
    main()
