"""Researcher-facing pages: studies, the designer, previews, the dashboard, exports (login is
auth.py's).

Every study page goes through `_own_study`: another researcher's study answers 404, exactly
like a missing one (an admin sees all)."""

from __future__ import annotations

import io
import itertools
import json
import zipfile
from datetime import UTC, datetime

import yaml
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
from flask_login import current_user, login_required
from sqlalchemy import func, select

from . import media_accel, prereg_store
from .auth import safe_next
from .dashboard import participant_row, study_summary
from .design import (
    DesignError,
    design_problems,
    normalize_design,
    parse_design_json,
    parse_design_yaml,
)
from .export import export_files, responses_csv
from .extensions import db
from .media_accel import ingest_configured
from .models import Participant, StimulusSet, Study
from .power_hint import power_hints
from .preregistration import (
    DISTINGUISHABLE,
    INDISTINGUISHABLE,
    TEXT_FIELDS,
    PlanTextError,
    hypothesis_keys,
    plan_markdown,
)
from .services import (
    ExternalIds,
    catalog_for,
    create_study,
    duplicate_study,
    enroll,
    set_status,
    update_design,
    withdraw,
)
from .trial_types import COMMON_BLOCK_OPTIONS, all_trial_types, get_trial_type

bp = Blueprint("researcher", __name__, url_prefix="/researcher")

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
    return _studies_page()


def _studies_page(status: int = 200):
    """The list of studies; with status 400 it shows a refused import's flashed problems."""
    studies = _visible_studies()
    counts = {}
    for study in studies:
        started, completed = db.session.execute(
            select(func.count(Participant.id), func.count(Participant.completed_at)).where(
                Participant.study_id == study.id, Participant.is_preview.is_(False)
            )
        ).one()
        counts[study.id] = {"started": started, "completed": completed}
    sets = db.session.scalars(select(StimulusSet).order_by(StimulusSet.name)).all()
    page = render_template(
        "researcher/studies.html", studies=studies, counts=counts, stimulus_sets=sets
    )
    return page, status


@bp.get("/studies/<slug>/export.zip")
@login_required
def export_zip(slug: str):
    study = _own_study(slug)
    ingest_configured()  # nginx's media log first (issue 24)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in export_files(study).items():
            archive.writestr(name, text)
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
    ingest_configured()  # nginx's media log first (issue 24)
    return send_file(
        io.BytesIO(responses_csv(study).encode()),
        mimetype="text/csv",
        as_attachment=True,
        download_name=f"{study.slug}-responses.csv",
    )


# Designing ----------------------------------------------------------------------------------

STARTER_CONSENT = (
    "## About this study\n\nYou will listen to short music clips and answer questions about "
    "them. Please use headphones. You may stop at any time by closing this page."
)


@bp.post("/studies/new")
@login_required
def new_study():
    """A draft from an imported stimulus set: a consent block to start from."""
    form = request.form
    stimulus_set = db.session.scalar(
        select(StimulusSet).where(StimulusSet.name == form.get("stimulus_set", ""))
    )
    if stimulus_set is None:
        flash("Choose an imported stimulus set.")
        return redirect(url_for(".studies"))
    design = {
        "slug": form.get("slug", "").strip().lower(),
        "title": form.get("title", "").strip(),
        "stimulus_set": stimulus_set.name,
        "blocks": [{"id": "consent", "type": "consent", "text": STARTER_CONSENT}],
    }
    return _new_draft(design)


def _new_draft(design: dict):
    """Create a draft and open it in the designer, or go back to the list with every problem."""
    try:
        study = create_study(design, current_user, status="draft")
    except DesignError as exc:
        for problem in exc.problems:
            flash(problem)
        return redirect(url_for(".studies"))
    return redirect(url_for(".designer", slug=study.slug))


@bp.post("/studies/import")
@login_required
def import_design():
    """A draft from an uploaded YAML/JSON design file (the format the designer exports)."""
    upload = request.files.get("design")
    try:
        if not upload:
            raise DesignError(["Choose a design file (YAML or JSON)."])
        data = parse_design_yaml(upload.read(), source="the file")
    except DesignError as exc:
        # A file that cannot be read as a design is a bad request: say why on the page itself.
        for problem in exc.problems:
            flash(problem)
        return _studies_page(400)
    return _new_draft(data)


@bp.get("/studies/<slug>/")
@login_required
def designer(slug: str):
    study = _own_study(slug)
    return render_template("researcher/designer.html", study=study)


def _option_fields(name: str, conditions: list[str]) -> list[dict]:
    """How the designer edits each option of a block type, derived from its defaults."""
    trial_type = all_trial_types()[name]
    choices = dict(getattr(trial_type, "option_choices", {}))
    fields = []
    for key, default in (COMMON_BLOCK_OPTIONS | trial_type.options).items():
        if key in ("id", "type"):
            continue
        if key == "pairs":  # pairs of conditions to compare (fit_preference); none: every pair
            pairs = [list(p) for p in itertools.combinations(conditions, 2)]
            fields.append({"key": key, "kind": "pairs", "default": default, "choices": pairs})
            continue
        if isinstance(default, bool):
            kind = "bool"
        elif isinstance(default, list):
            kind = "choices"
        elif isinstance(default, int) or (default is None and key not in ("title", "instructions")):
            kind = "number"
        elif key == "text":
            kind = "markdown"
        else:
            kind = "text"
        field = {"key": key, "kind": kind, "default": default}
        if kind == "choices":
            field["choices"] = conditions if key == "conditions" else list(choices.get(key, []))
        fields.append(field)
    return fields


@bp.get("/studies/<slug>/design.json")
@login_required
def design_json(slug: str):
    study = _own_study(slug)
    conditions = sorted(catalog_for(study.stimulus_set).conditions(), key=_reference_first)
    return {
        "design": study.design,
        "status": study.status,
        "editable": study.status == "draft",
        "conditions": conditions,
        "segments": len(catalog_for(study.stimulus_set).segments),
        "types": {
            name: {"label": t.label, "fields": _option_fields(name, conditions)}
            for name, t in sorted(all_trial_types().items())
        },
    }


def _reference_first(condition: str) -> tuple[bool, str]:
    return (condition != "reference", condition)


def _design_body() -> dict:
    """The designer's JSON body {design: {...}}, parsed by the design parser (size, depth and
    value checks; Flask's get_json would let a deeply nested body raise RecursionError)."""
    data = parse_design_json(request.get_data(), source="the request body")
    if not isinstance(data, dict) or not isinstance(data.get("design"), dict):
        raise DesignError(["the request body must be {design: {...}}"])
    return data


@bp.post("/studies/<slug>/design.json")
@login_required
def save_design(slug: str):
    """Validate and (for a draft) store the designer's design; problems come back as a list."""
    study = _own_study(slug)
    try:
        data = _design_body()
    except DesignError as exc:
        return {"ok": False, "problems": exc.problems}, 400
    try:
        study = update_design(study, data["design"])
    except DesignError as exc:
        db.session.rollback()
        return {"ok": False, "problems": exc.problems}, 422
    return {"ok": True, "problems": [], "design": study.design, "slug": study.slug}


@bp.post("/studies/<slug>/check")
@login_required
def check_design(slug: str):
    """Validate without saving (the designer checks as the researcher types)."""
    study = _own_study(slug)
    power: list[dict] = []
    try:
        design = normalize_design(_design_body()["design"])
        catalog = catalog_for(study.stimulus_set)
        problems = design_problems(design, catalog)
        if not problems:
            power = power_hints(design, catalog)
    except DesignError as exc:
        problems = exc.problems
    return {"ok": not problems, "problems": problems, "power": power}


@bp.get("/studies/<slug>/design.yaml")
@login_required
def design_yaml(slug: str):
    study = _own_study(slug)
    text = yaml.safe_dump(study.design, sort_keys=False, allow_unicode=True)
    return send_file(
        io.BytesIO(text.encode()),
        mimetype="application/yaml",
        as_attachment=True,
        download_name=f"{study.slug}.yaml",
    )


@bp.post("/studies/<slug>/status")
@login_required
def change_status(slug: str):
    study = _own_study(slug)
    if study.status == "draft" and request.form.get("status") == "open":
        # Opening freezes the pre-registration; set_status commits it with the status change.
        prereg_store.freeze(study, current_user)
    try:
        set_status(study, request.form.get("status", ""), current_user)
    except ValueError as exc:
        flash(str(exc))
    target = safe_next(request.form.get("next"))
    return redirect(target or url_for(".designer", slug=study.slug))


# Pre-registration (issue 22) ---------------------------------------------------------------


@bp.get("/studies/<slug>/preregistration")
@login_required
def preregistration(slug: str):
    """The plan: the draft's (with the researcher's text to edit) or the frozen one (with its
    amendments); print-ready, with downloads."""
    return _preregistration_page(_own_study(slug))


def _preregistration_page(study: Study, status: int = 200):
    plan, frozen = prereg_store.plan_and_record(study)
    text = prereg_store.plan_text(study) if frozen is None else plan["text"]
    page = render_template(
        "researcher/preregistration.html", study=study, plan=plan, record=frozen, text=text,
        choices=(DISTINGUISHABLE, INDISTINGUISHABLE), title=f"Pre-registration: {study.title}")
    return page, status


@bp.post("/studies/<slug>/preregistration")
@login_required
def save_preregistration(slug: str):
    """Store the researcher's text of a draft's plan (every problem is shown on the page)."""
    study = _own_study(slug)
    form = request.form
    raw: dict = {key: form.get(key, "") for key in (*TEXT_FIELDS, "stop_date", "sample_size")}
    raw["abx"] = {}
    raw["wording"] = {}
    for key, condition, dimension in hypothesis_keys(study.design):
        if dimension is None and form.get(f"abx:{condition}"):
            raw["abx"][condition] = form[f"abx:{condition}"]
        raw["wording"][key] = form.get(f"wording:{key}", "")
    try:
        prereg_store.save_text(study, raw)
    except (PlanTextError, prereg_store.PlanRefused) as exc:
        db.session.rollback()
        for problem in exc.problems:
            flash(problem)
        return _preregistration_page(study, 400)
    flash("Plan saved.")
    return redirect(url_for(".preregistration", slug=study.slug))


@bp.post("/studies/<slug>/preregistration/amendments")
@login_required
def amend_preregistration(slug: str):
    """Append a dated amendment, with its reason, to a frozen plan."""
    study = _own_study(slug)
    try:
        prereg_store.amend(study, current_user, request.form.get("text", ""),
                           request.form.get("reason", ""))
    except prereg_store.PlanRefused as exc:
        db.session.rollback()
        for problem in exc.problems:
            flash(problem)
        return _preregistration_page(study, 400)
    flash("Amendment added.")
    return redirect(url_for(".preregistration", slug=study.slug))


def _plan_download(study: Study, extension: str):
    plan, frozen = prereg_store.plan_and_record(study)
    if extension == "json":
        body = prereg_store.record_json(study) or json.dumps(
            {"format": plan["format"], "draft": True, "plan": plan}, indent=2,
            ensure_ascii=False) + "\n"
        mimetype = "application/json"
    elif extension == "md":
        body, mimetype = plan_markdown(plan, frozen), "text/markdown"
    else:
        body = render_template("researcher/preregistration_print.html", study=study, plan=plan,
                               record=frozen)
        mimetype = "text/html"
    stem = "preregistration" if frozen else "preregistration-draft"
    return send_file(io.BytesIO(body.encode()), mimetype=mimetype, as_attachment=True,
                     download_name=f"{study.slug}-{stem}.{extension}")


@bp.get("/studies/<slug>/preregistration.json")
@login_required
def preregistration_json(slug: str):
    return _plan_download(_own_study(slug), "json")


@bp.get("/studies/<slug>/preregistration.md")
@login_required
def preregistration_md(slug: str):
    return _plan_download(_own_study(slug), "md")


@bp.get("/studies/<slug>/preregistration.html")
@login_required
def preregistration_html(slug: str):
    return _plan_download(_own_study(slug), "html")


@bp.post("/studies/<slug>/duplicate")
@login_required
def duplicate(slug: str):
    study = _own_study(slug)
    try:
        copy = duplicate_study(study, current_user)
    except DesignError as exc:
        for problem in exc.problems:
            flash(problem)
        return redirect(url_for(".designer", slug=study.slug))
    flash(f"Duplicated as the draft {copy.slug!r}.")
    return redirect(url_for(".designer", slug=copy.slug))


@bp.post("/studies/<slug>/preview")
@login_required
def preview(slug: str):
    """Take the study as a participant would; the run is marked and never counted."""
    study = _own_study(slug)
    participant = enroll(study, ExternalIds(), preview=True)
    return redirect(url_for("participant.step", token=participant.token))


# Monitoring ---------------------------------------------------------------------------------


@bp.get("/studies/<slug>/dashboard")
@login_required
def dashboard(slug: str):
    study = _own_study(slug)
    return render_template("researcher/dashboard.html", study=study)


@bp.get("/studies/<slug>/dashboard.json")
@login_required
def dashboard_json(slug: str):
    study = _own_study(slug)
    ingest_configured()  # nginx's media log first (issue 24)
    return study_summary(study)


def _participant_of(study: Study, public_id: str) -> Participant:
    participant = next(
        (p for p in study.participants if p.public_id == public_id and not p.is_preview), None
    )
    if participant is None:
        abort(404)
    return participant


@bp.get("/studies/<slug>/participants/<public_id>")
@login_required
def participant_detail(slug: str, public_id: str):
    study = _own_study(slug)
    participant = _participant_of(study, public_id)
    return render_template(
        "researcher/participant.html",
        study=study,
        participant=participant,
        summary=participant_row(study, participant),
    )


@bp.post("/studies/<slug>/participants/<public_id>/withdraw")
@login_required
def withdraw_participant(slug: str, public_id: str):
    study = _own_study(slug)
    participant = _participant_of(study, public_id)
    # A shown, unanswered trial's renditions: under direct sends nginx would go on sending
    # them (they exist while the trial is current), so they go with the participant.
    # (Read only with media through nginx: it loads every trial and its answer.)
    shown = [
        (trial.token, get_trial_type(trial.trial_type).media(trial.spec))
        for trial in participant.trials
        if trial.presented_at is not None and trial.response is None
    ] if media_accel.enabled(current_app) else []
    participant_token = participant.token
    withdraw(participant, current_user, request.form.get("reason", ""))
    for trial_token, slots in shown:
        media_accel.forget_renditions(participant_token, trial_token, slots)
    flash(f"{public_id} withdrawn: their answers were deleted.")
    return redirect(url_for(".dashboard", slug=study.slug))
