"""Public participant ids are never given twice: a withdrawn participant's id stays retired (the
audit log keeps it, the export never shows a new person under it), while their counterbalancing
cell goes to the next arrival, so the Latin-square lists stay balanced over who remains. Arrivals
that race, previews and the migration from the assignment-index ids keep both promises."""

from __future__ import annotations

import csv
import io
import random
import threading
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import DEMO_DESIGN
from conftest import testing_app as unmigrated_app
from flow import run_to_end, start, valid_answer
from sqlalchemy import select, text

import study_app
from study_app.export import responses_csv
from study_app.extensions import db
from study_app.models import AuditEvent, Participant, Researcher, Study
from study_app.services import ExternalIds, enroll, withdraw

MIGRATIONS = str(Path(study_app.__file__).parent / "migrations")
CONDITIONS = ["sine_resynthesis", "shuffled_notes", "mismatched"]  # three Latin-square lists
DESIGN = {
    "slug": "ids",
    "title": "Public ids",
    "stimulus_set": "demo",
    "completion": {"code": "IDS-1"},
    "blocks": [
        {"id": "consent", "type": "consent", "text": "Please agree."},
        {"id": "abx", "type": "abx", "conditions": CONDITIONS, "trials_per_participant": 2},
    ],
}


@pytest.fixture
def study(make_study, tmp_path) -> tuple[str, str]:
    """(slug, entry token) of a small open study: consent and two ABX trials."""
    path = tmp_path / "ids.yaml"
    path.write_text(yaml.safe_dump(DESIGN))
    return make_study(path)


@pytest.fixture
def owner(app, study):
    client = app.test_client()
    response = client.post(
        "/researcher/login", data={"email": "owner@example.org", "password": "owner-password"}
    )
    assert response.status_code == 302
    return client


def arrive(app, token: str, client=None) -> str:
    """A participant joins through the link and answers every trial; returns their step URL."""
    client = client or app.test_client()
    step = start(client, token)
    run_to_end(client, step, answers=lambda page: valid_answer(app, page))
    return step


def people(app, slug: str, *, previews: bool = False) -> dict[str, Participant]:
    """The study's current participants by public id."""
    with app.app_context():
        rows = db.session.scalars(
            select(Participant)
            .join(Study)
            .where(Study.slug == slug, Participant.is_preview.is_(previews))
        ).all()
        for row in rows:  # loaded before the session goes
            _ = row.trials
        return {p.public_id: p for p in rows}


def cells(participant: Participant) -> list[tuple[str, str]]:
    """The (segment, condition) cells of a participant's ABX trials: what their counterbalancing
    cell (assignment index) decides."""
    return sorted(
        (t.spec["segment"], t.spec["condition"]) for t in participant.trials if t.block_id == "abx"
    )


def newest(app, slug: str) -> Participant:
    current = people(app, slug)
    return max(current.values(), key=lambda p: p.public_number)


def withdraw_with_service(app, slug: str, public_id: str) -> None:
    with app.app_context():
        participant = db.session.scalar(
            select(Participant)
            .join(Study)
            .where(Study.slug == slug, Participant.public_number == int(public_id[1:]))
        )
        researcher = db.session.scalar(
            select(Researcher).where(Researcher.email == "owner@example.org")
        )
        withdraw(participant, researcher, "service")


def withdraw_with_route(owner, slug: str, public_id: str) -> None:
    response = owner.post(
        f"/researcher/studies/{slug}/participants/{public_id}/withdraw", data={"reason": "route"}
    )
    assert response.status_code == 302


def withdrawn_in_audit_log(app, slug: str) -> list[str]:
    with app.app_context():
        study_id = db.session.scalar(select(Study.id).where(Study.slug == slug))
        events = db.session.scalars(
            select(AuditEvent)
            .where(AuditEvent.study_id == study_id, AuditEvent.action == "withdraw")
            .order_by(AuditEvent.id)
        )
        return [event.detail["participant"] for event in events]


def exported_participants(app, slug: str) -> list[str]:
    with app.app_context():
        study = db.session.scalar(select(Study).where(Study.slug == slug))
        rows = csv.DictReader(io.StringIO(responses_csv(study)))
        return [row["participant"] for row in rows]


def list_counts(current: dict[str, Participant]) -> Counter:
    """How many current participants hold each Latin-square list."""
    return Counter(p.assignment_index % len(CONDITIONS) for p in current.values())


# Withdrawals and arrivals in any order --------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_any_order_of_withdrawals_and_arrivals_never_reuses_an_id(app, study, owner, seed):
    slug, token = study
    rng = random.Random(seed)
    given: list[str] = []  # every public id handed out, in order of arrival
    withdrawn: list[str] = []
    for _ in range(16):
        current = people(app, slug)
        if current and rng.random() < 0.4:
            victim = rng.choice(sorted(current))
            if rng.random() < 0.5:
                withdraw_with_service(app, slug, victim)
            else:
                withdraw_with_route(owner, slug, victim)
            withdrawn.append(victim)
            continue
        taken = {p.assignment_index for p in current.values()}
        smallest_free = min(set(range(len(taken) + 1)) - taken)
        arrive(app, token)
        new = newest(app, slug)
        assert new.public_id not in given  # never handed out before, withdrawn or not
        assert new.assignment_index == smallest_free  # a withdrawn cell is refilled first
        given.append(new.public_id)
    # in order of arrival, with no gaps and no repeats
    assert given == [f"P{n:04d}" for n in range(1, len(given) + 1)]
    current = people(app, slug)
    assert set(current) == set(given) - set(withdrawn)
    assert withdrawn_in_audit_log(app, slug) == withdrawn
    exported = exported_participants(app, slug)
    assert set(exported) == set(current)  # every remaining participant answered
    assert not set(exported) & set(withdrawn)  # no new person's rows under a withdrawn id
    # Arrivals until every withdrawn cell is taken again: the cells are exactly 0..n-1 again,
    # so the three Latin-square lists are balanced to within one over the remaining people.
    while sorted(p.assignment_index for p in people(app, slug).values()) != list(
        range(len(people(app, slug)))
    ):
        arrive(app, token)
    counts = list_counts(people(app, slug))
    assert max(counts.values()) - min(counts.values()) <= 1


def test_a_withdrawn_cell_goes_to_the_next_arrival(app, study, owner):
    slug, token = study
    for _ in range(6):
        arrive(app, token)
    before = people(app, slug)
    assert [before[f"P{n:04d}"].assignment_index for n in range(1, 7)] == list(range(6))
    withdraw_with_route(owner, slug, "P0002")  # cell 1
    withdraw_with_service(app, slug, "P0005")  # cell 4

    arrive(app, token)
    seventh = people(app, slug)["P0007"]
    assert seventh.assignment_index == 1
    assert cells(seventh) == cells(before["P0002"])  # the same conditions on the same segments
    arrive(app, token)
    eighth = people(app, slug)["P0008"]
    assert eighth.assignment_index == 4 and cells(eighth) == cells(before["P0005"])
    arrive(app, token)
    assert people(app, slug)["P0009"].assignment_index == 6  # no gap left: a new cell

    current = people(app, slug)
    assert sorted(current) == ["P0001", "P0003", "P0004", "P0006", "P0007", "P0008", "P0009"]
    assert list_counts(current) == Counter({0: 3, 1: 2, 2: 2})
    assert withdrawn_in_audit_log(app, slug) == ["P0002", "P0005"]
    exported = set(exported_participants(app, slug))
    assert exported == set(current) and not exported & {"P0002", "P0005"}
    # the researcher's pages for a withdrawn id stay gone: it names nobody new
    assert owner.get(f"/researcher/studies/{slug}/participants/P0002").status_code == 404
    with app.app_context():
        study_row = db.session.scalar(select(Study).where(Study.slug == slug))
        assert study_row.participants_enrolled == 9


def test_withdrawing_the_latest_arrival_does_not_free_its_id(app, study, owner):
    """The old ids (assignment index + 1) gave the latest arrival's id to the next one."""
    slug, token = study
    arrive(app, token)
    arrive(app, token)
    withdraw_with_route(owner, slug, "P0002")
    arrive(app, token)
    current = people(app, slug)
    assert sorted(current) == ["P0001", "P0003"]
    assert current["P0003"].assignment_index == 1  # its cell, though, is refilled
    assert "P0002" not in exported_participants(app, slug)


# Concurrent arrivals --------------------------------------------------------------------------


def _arrive_together(apps, token: str, count: int) -> list[str]:
    """`count` participants join at once, spread over `apps` (server workers); their steps."""
    barrier = threading.Barrier(count)
    steps: list[str] = []
    errors: list[BaseException] = []

    def one(app) -> None:
        client = app.test_client()
        try:
            barrier.wait(timeout=30)
            response = client.post(f"/join/{token}")
            assert response.status_code == 302, response.status_code
            steps.append(response.headers["Location"])
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(apps[i % len(apps)],)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return steps


def test_concurrent_arrivals_on_two_workers_get_distinct_numbers_and_cells(
    app, study, database, make_app
):
    slug, token = study
    url, options = database
    workers = [make_app(url, options), make_app(url, options)]
    steps = _arrive_together(workers, token, 10)
    assert len(set(steps)) == 10
    current = people(app, slug)
    assert sorted(current) == [f"P{n:04d}" for n in range(1, 11)]
    assert sorted(p.assignment_index for p in current.values()) == list(range(10))

    # Withdraw three, then three arrive at once beside a researcher's preview: they take
    # exactly the three freed cells and three new numbers; the preview takes neither.
    for public_id in ("P0002", "P0005", "P0009"):
        withdraw_with_service(app, slug, public_id)
    preview_done = threading.Event()

    def preview() -> None:
        with workers[1].app_context():
            enroll(
                db.session.scalar(select(Study).where(Study.slug == slug)),
                ExternalIds(),
                preview=True,
            )
        preview_done.set()

    previewer = threading.Thread(target=preview)
    previewer.start()
    _arrive_together(workers, token, 3)
    previewer.join(timeout=60)
    assert preview_done.is_set()
    current = people(app, slug)
    assert sorted(current) == [f"P{n:04d}" for n in (1, 3, 4, 6, 7, 8, 10, 11, 12, 13)]
    assert sorted(p.assignment_index for p in current.values()) == list(range(10))
    (preview_row,) = people(app, slug, previews=True).values()
    assert preview_row.public_number < 0 and preview_row.assignment_index < 0
    with app.app_context():
        assert (
            db.session.scalar(select(Study.participants_enrolled).where(Study.slug == slug)) == 13
        )


# Previews --------------------------------------------------------------------------------------


def test_previews_never_take_a_participants_number_or_cell(app, study, owner):
    slug, token = study
    arrive(app, token)
    assert owner.post(f"/researcher/studies/{slug}/preview").status_code == 302
    arrive(app, token)
    withdraw_with_route(owner, slug, "P0001")  # frees cell 0
    # a preview now must not take the freed cell (nor the next number)
    preview_client = owner
    step = owner.post(f"/researcher/studies/{slug}/preview").headers["Location"]
    run_to_end(preview_client, step, answers=lambda page: valid_answer(app, page))
    with app.app_context():
        study_row = db.session.scalar(select(Study).where(Study.slug == slug))
        preview_id = enroll(study_row, ExternalIds(), preview=True).public_id
    arrive(app, token)

    current = people(app, slug)
    assert sorted(current) == ["P0002", "P0003"]
    assert current["P0003"].assignment_index == 0  # the withdrawn cell went to a participant
    previews = people(app, slug, previews=True)
    assert sorted(previews) == ["PREVIEW0001", "PREVIEW0002", "PREVIEW0003"]
    assert preview_id == "PREVIEW0003"
    assert all(p.public_number < 0 and p.assignment_index < 0 for p in previews.values())
    assert set(exported_participants(app, slug)) == {"P0002", "P0003"}
    with app.app_context():
        assert db.session.scalar(select(Study.participants_enrolled).where(Study.slug == slug)) == 3


# The migration ---------------------------------------------------------------------------------


def test_migration_keeps_public_ids_and_retires_withdrawn_ones(database, tmp_path, demo_set_dir):
    """Upgrading from 7c1e5a9d2b40 (ids were assignment index + 1): every participant keeps the
    id they were shown, and an id the audit log says was withdrawn is never given again, not even
    the latest arrival's (whose row, and so whose number, is gone)."""
    from flask_migrate import upgrade

    from study_app.design import read_design_file, validated_design
    from study_app.services import catalog_for, import_stimulus_set

    url, options = database
    app = unmigrated_app(url, options, tmp_path / "media")
    # Explicit ids well above 1: PostgreSQL's sequences do not see them, and rows are inserted
    # after the upgrade too.
    rows = [
        "insert into researchers (id, email, password_hash, is_admin, created_at) "
        "values (1, 'a@b.c', 'x', false, '2026-01-01 00:00:00+00')",
        "insert into stimulus_sets (id, name, folder, manifest, manifest_sha256, imported_at) "
        "values (900, 'old', '/f', '{}', 'h', '2026-01-01 00:00:00+00')",
    ]
    for study_id, slug in ((1, "one"), (2, "two")):
        rows.append(
            "insert into studies (id, slug, title, owner_id, stimulus_set_id, design, status, "
            f"entry_token, completion_code, created_at) values ({study_id}, '{slug}', 't', 1, 900, "
            f"'{{}}', 'open', 'e{study_id}', 'c', '2026-01-01 00:00:00+00')"
        )
    # study one: P0001, P0002, P0004 remain; P0003 and P0005 (the latest) were withdrawn;
    # one preview. Study two: P0001 alone.
    people_rows = [(901, 1, 0, False), (902, 1, 1, False), (903, 1, 3, False), (904, 1, -1, True)]
    people_rows.append((905, 2, 0, False))
    for pid, study_id, index, preview in people_rows:
        rows.append(
            "insert into participants (id, study_id, token, assignment_index, seed, started_at, "
            f"screened_out, is_preview) values ({pid}, {study_id}, 'tok{pid}', {index}, 7, "
            f"'2026-01-01 00:00:00+00', false, {str(preview).lower()})"
        )
    for event_id, who in ((1, "P0003"), (2, "P0005")):
        rows.append(
            "insert into audit_events (id, researcher_id, study_id, action, detail, at) "
            f"values ({event_id}, 1, 1, 'withdraw', "
            f'\'{{"participant": "{who}", "answers_deleted": 3}}\', \'2026-01-02 00:00:00+00\')'
        )
    try:
        with app.app_context():
            upgrade(directory=MIGRATIONS, revision="7c1e5a9d2b40")
            with db.engine.begin() as connection:
                for statement in rows:
                    connection.execute(text(statement))
            upgrade(directory=MIGRATIONS)

            def ids(study_id: int) -> dict[int, str]:
                found = db.session.scalars(
                    select(Participant).where(Participant.study_id == study_id)
                )
                return {p.id: p.public_id for p in found}

            assert ids(1) == {901: "P0001", 902: "P0002", 903: "P0004", 904: "PREVIEW0001"}
            assert ids(2) == {905: "P0001"}
            enrolled = dict(db.session.execute(select(Study.id, Study.participants_enrolled)).all())
            assert enrolled == {1: 5, 2: 1}

            # The next arrival in study one: a new id (P0006, not the withdrawn P0005) and the
            # smallest free cell (2, P0003's). Study one gets a real stimulus set and design.
            stimulus_set = import_stimulus_set(demo_set_dir, tmp_path / "media")
            design = validated_design(read_design_file(DEMO_DESIGN), catalog_for(stimulus_set))
            study_one = db.session.get(Study, 1)
            study_one.stimulus_set, study_one.design = stimulus_set, design
            db.session.commit()
            arrival = enroll(study_one, ExternalIds())
            assert (arrival.public_id, arrival.assignment_index) == ("P0006", 2)
            assert enroll(db.session.get(Study, 1), ExternalIds()).public_id == "P0007"
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
