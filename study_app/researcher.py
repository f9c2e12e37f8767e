"""Researcher-facing pages: login, the list of one's studies, exports."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from .export import responses_csv, study_json
from .extensions import db
from .models import Participant, Researcher, Study

bp = Blueprint("researcher", __name__, url_prefix="/researcher")

# Per-process login throttle: enough to make guessing slow; issue 6 hardens it further.
MAX_FAILURES, FAILURE_WINDOW = 5, timedelta(minutes=5)


def _failed_logins() -> dict[str, list[datetime]]:
    return current_app.extensions.setdefault("sightsound_failed_logins", {})


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


def _throttled(key: str) -> bool:
    now = datetime.now(UTC)
    recent = [t for t in _failed_logins().get(key, []) if now - t < FAILURE_WINDOW]
    _failed_logins()[key] = recent
    return len(recent) >= MAX_FAILURES


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        key = form.email.data.lower()
        if _throttled(key):
            flash("Too many failed attempts. Wait a few minutes and try again.")
            status = 429
        else:
            researcher = db.session.scalar(select(Researcher).where(Researcher.email == key))
            if researcher is not None and researcher.check_password(form.password.data):
                _failed_logins().pop(key, None)
                login_user(researcher)
                return redirect(url_for(".studies"))
            _failed_logins().setdefault(key, []).append(datetime.now(UTC))
            flash("Unknown email or wrong password.")
            status = 401
    elif request.method == "POST":
        status = 400
    return render_template("researcher/login.html", form=form), status


@bp.post("/logout")
@login_required
def logout():
    logout_user()
    return redirect(url_for(".login"))


def _visible_studies():
    query = select(Study).order_by(Study.created_at.desc())
    if not current_user.is_admin:
        query = query.where(Study.owner_id == current_user.id)
    return db.session.scalars(query).all()


def _own_study(slug: str) -> Study:
    study = db.session.scalar(select(Study).where(Study.slug == slug))
    # Another researcher's study is answered exactly like a missing one: nothing leaks.
    if study is None or (study.owner_id != current_user.id and not current_user.is_admin):
        abort(404)
    return study


@bp.get("/")
@login_required
def studies():
    studies = _visible_studies()
    counts = {}
    for study in studies:
        started, completed = db.session.execute(
            select(func.count(Participant.id), func.count(Participant.completed_at)).where(
                Participant.study_id == study.id
            )
        ).one()
        counts[study.id] = {"started": started, "completed": completed}
    return render_template("researcher/studies.html", studies=studies, counts=counts)


@bp.get("/studies/<slug>/export.zip")
@login_required
def export_zip(slug: str):
    import json

    study = _own_study(slug)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("responses.csv", responses_csv(study))
        archive.writestr("study.json", json.dumps(study_json(study), indent=2) + "\n")
    buffer.seek(0)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return send_file(
        buffer,
        mimetype="application/zip",
        as_attachment=True,
        download_name=f"{study.slug}-export-{stamp}.zip",
    )


@bp.get("/studies/<slug>/responses.csv")
@login_required
def export_csv(slug: str):
    study = _own_study(slug)
    return send_file(
        io.BytesIO(responses_csv(study).encode()),
        mimetype="text/csv",
        as_attachment=True,
        download_name=f"{study.slug}-responses.csv",
    )
