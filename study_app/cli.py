"""`flask --app study_app ...` commands: import-stimuli, create-researcher, create-study, export,
and demo-setup (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path

import click
from flask import Flask, current_app, url_for
from flask.cli import with_appcontext
from sqlalchemy import select

from .design import DesignError, read_design_file
from .export import write_export
from .extensions import db
from .media_accel import ingest_configured
from .models import Researcher, Study
from .services import ImportRefused, create_study, import_stimulus_set

REPO_ROOT = Path(__file__).resolve().parents[1]


def register(app: Flask) -> None:
    for command in (import_stimuli, create_researcher, create_study_cmd, export, demo_setup):
        app.cli.add_command(command)
    from .audit import audit_blinding  # issue 6: `flask audit-blinding STUDY`

    app.cli.add_command(audit_blinding)
    from .media_accel import ingest_media_log_command, media_gc_command  # issue 24

    app.cli.add_command(ingest_media_log_command)
    app.cli.add_command(media_gc_command)


def _media_dir() -> Path:
    return Path(current_app.config["MEDIA_DIR"])


@click.command("import-stimuli")
@with_appcontext
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
def import_stimuli(path: Path) -> None:
    """Validate and import the stimulus set in folder PATH (holding manifest.json)."""
    try:
        record = import_stimulus_set(path, _media_dir())
    except ImportRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"imported stimulus set {record.name!r}: {len(record.clips)} clips")


def _upsert_researcher(email: str, password: str, admin: bool) -> Researcher:
    email = email.strip().lower()
    researcher = db.session.scalar(select(Researcher).where(Researcher.email == email))
    if researcher is None:
        researcher = Researcher(email=email, is_admin=admin)
        db.session.add(researcher)
    researcher.is_admin = admin or researcher.is_admin
    researcher.set_password(password)
    db.session.commit()
    return researcher


@click.command("create-researcher")
@with_appcontext
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--admin", is_flag=True, help="May see every researcher's studies.")
def create_researcher(email: str, password: str, admin: bool) -> None:
    """Create a researcher account (or reset its password)."""
    if len(password) < 8:
        raise click.ClickException("the password must have at least 8 characters")
    researcher = _upsert_researcher(email, password, admin)
    click.echo(f"researcher {researcher.email} ready")


@click.command("create-study")
@with_appcontext
@click.argument("design_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--owner", required=True, help="Email of the researcher who owns the study.")
def create_study_cmd(design_file: Path, owner: str) -> None:
    """Create a study from a YAML/JSON design file (docs/design-format.md)."""
    researcher = db.session.scalar(select(Researcher).where(Researcher.email == owner.lower()))
    if researcher is None:
        raise click.ClickException(f"no researcher {owner!r}; run create-researcher first")
    try:
        study = create_study(read_design_file(design_file), researcher)
    except DesignError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"study {study.slug!r} created; participant link: /join/{study.entry_token}")


@click.command("export")
@with_appcontext
@click.argument("slug")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
def export(slug: str, out_dir: Path) -> None:
    """Write responses.csv, study.json (and any summary tables) of study SLUG into --out."""
    study = db.session.scalar(select(Study).where(Study.slug == slug))
    if study is None:
        raise click.ClickException(f"no study {slug!r}")
    ingest_configured()  # nginx's media log first (issue 24)
    for path in write_export(study, out_dir):
        click.echo(f"wrote {path}")


@click.command("demo-setup")
@with_appcontext
@click.option("--base-url", default="http://127.0.0.1:5000")
@click.option("--password", default="sightsound-demo")
def demo_setup(base_url: str, password: str) -> None:
    """Build and import the demo stimulus set, create the demo researcher and study."""
    from flask_migrate import upgrade

    from demo_set import build_demo_set

    upgrade(directory=str(Path(__file__).parent / "migrations"))
    set_dir = REPO_ROOT / "stimuli" / "demo"
    if not (set_dir / "manifest.json").exists():
        build_demo_set(set_dir)
    try:
        import_stimulus_set(set_dir, _media_dir())
    except ImportRefused as exc:
        raise click.ClickException(str(exc)) from exc
    email = "researcher@demo.invalid"
    researcher = _upsert_researcher(email, password, admin=True)
    links = []
    for design_file in ("demo_study.yaml", "demo_all_types.yaml"):
        design = read_design_file(REPO_ROOT / "stimuli" / design_file)
        study = db.session.scalar(select(Study).where(Study.slug == design["slug"]))
        if study is None:
            study = create_study(design, researcher)
        with current_app.test_request_context(base_url=base_url):
            links.append(url_for("participant.join", entry_token=study.entry_token, _external=True))
    with current_app.test_request_context(base_url=base_url):
        login = url_for("auth.login", _external=True)
    click.echo("")
    click.echo(f"  Participant link : {links[0]}")
    click.echo(f"  Every trial type : {links[1]}")
    click.echo(f"  Researcher login : {login}")
    click.echo(f"      email        : {email}")
    click.echo(f"      password     : {password}")
    click.echo("")
