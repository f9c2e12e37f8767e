"""Researcher-facing pages: login, studies, the designer, previews, the dashboard, exports.

Every study page goes through `_own_study`: another researcher's study answers 404, exactly
like a missing one (an admin sees all)."""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import json
import math
import re
import secrets
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import yaml
from flask import (
    Blueprint,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import delete, func, select
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from . import prereg_store
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
from .models import AuditEvent, LoginFailure, Participant, Researcher, StimulusSet, Study, as_utc
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
from .trial_types import COMMON_BLOCK_OPTIONS, all_trial_types

bp = Blueprint("researcher", __name__, url_prefix="/researcher")

# Login throttle, counted in the database so every gunicorn worker sees the same attempts. Three
# counts share the login_failures table under distinct key prefixes:
# - per (account, client address), PAIR_KEY: MAX_FAILURES wrong passwords for one email from one
#   address lock that pair for FAILURE_WINDOW, so a stranger's guesses cannot lock the real
#   researcher out (their own address has not failed);
# - per client address, CLIENT_KEY: MAX_CLIENT_FAILURES failures across any emails, so one client
#   cannot try a different email each time;
# - per account across every address, ACCOUNT_KEY (issue 23: 120 guesses from 30 addresses all
#   got through): after ACCOUNT_FREE_FAILURES failures within ACCOUNT_WINDOW, each further
#   failure starts a delay, doubling from ACCOUNT_BASE_DELAY up to ACCOUNT_MAX_DELAY, in which
#   every attempt at the account (any address, any password) is refused with Retry-After. Never a
#   permanent lockout: each delay ends, failures leave the window, and a right password after
#   the delay clears the account's count. Unknown emails are counted exactly like known ones, so
#   the throttle does not tell which exist either.
# The address is request.remote_addr. Behind a reverse proxy that is the proxy's address, for
# every client, unless TRUSTED_PROXIES (create_app: Werkzeug's ProxyFix) says how many proxies
# to look through (docs/operations.md); otherwise every client shares one count.
MAX_FAILURES, MAX_CLIENT_FAILURES = 5, 10
FAILURE_WINDOW = timedelta(minutes=5)
ACCOUNT_FREE_FAILURES = 10
ACCOUNT_WINDOW = timedelta(hours=24)  # long: a guesser gets ~4 an hour, not 10 an hour
ACCOUNT_BASE_DELAY = timedelta(seconds=30)
ACCOUNT_MAX_DELAY = timedelta(minutes=15)
CLIENT_KEY, PAIR_KEY, ACCOUNT_KEY = "client:", "pair:", "account:"


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


@dataclass(frozen=True)
class FailureKeys:
    """The login_failures keys of one attempt. Hashed: an email or a forwarded address could
    overflow the column (254 characters) or carry odd bytes."""

    client: str
    pair: str
    account: str

    @classmethod
    def of(cls, email: str) -> FailureKeys:
        address = request.remote_addr or "unknown"
        return cls(
            client=CLIENT_KEY + hashlib.sha256(address.encode()).hexdigest(),
            pair=PAIR_KEY + hashlib.sha256(f"{email}\n{address}".encode()).hexdigest(),
            account=ACCOUNT_KEY + hashlib.sha256(email.encode()).hexdigest(),
        )


def _failures(key: str, since: datetime) -> tuple[int, datetime | None, datetime | None]:
    """(count, oldest, newest) of the key's failures since `since`."""
    count, oldest, newest = db.session.execute(
        select(
            func.count(LoginFailure.id), func.min(LoginFailure.at), func.max(LoginFailure.at)
        ).where(LoginFailure.key == key, LoginFailure.at >= since)
    ).one()
    return count, oldest and as_utc(oldest), newest and as_utc(newest)


def account_delay(failures: int) -> timedelta:
    """The delay that the account's `failures`-th failure in ACCOUNT_WINDOW starts: none before
    ACCOUNT_FREE_FAILURES, then ACCOUNT_BASE_DELAY doubling with each failure, at most
    ACCOUNT_MAX_DELAY."""
    if failures < ACCOUNT_FREE_FAILURES:
        return timedelta(0)
    doublings = min(failures - ACCOUNT_FREE_FAILURES, 16)  # 2**16 x 30 s is past any cap
    return min(ACCOUNT_BASE_DELAY * 2**doublings, ACCOUNT_MAX_DELAY)


def _waits(keys: FailureKeys, now: datetime) -> dict[str, float]:
    """Seconds each throttled count still refuses attempts for ({} when none does), by limit:
    'client', 'account_client' (the pair), 'account'."""
    waits = {}
    for limit, key, most in (
        ("client", keys.client, MAX_CLIENT_FAILURES),
        ("account_client", keys.pair, MAX_FAILURES),
    ):
        count, oldest, _ = _failures(key, now - FAILURE_WINDOW)
        if count >= most:  # refused until the oldest counted failure leaves the window
            waits[limit] = (oldest + FAILURE_WINDOW - now).total_seconds()
    count, _, newest = _failures(keys.account, now - ACCOUNT_WINDOW)
    if count >= ACCOUNT_FREE_FAILURES:
        left = (newest + account_delay(count) - now).total_seconds()
        if left > 0:
            waits["account"] = left
    return waits


def _forget_expired(now: datetime) -> None:
    window = {CLIENT_KEY: FAILURE_WINDOW, PAIR_KEY: FAILURE_WINDOW, ACCOUNT_KEY: ACCOUNT_WINDOW}
    for prefix, kept in window.items():
        db.session.execute(
            delete(LoginFailure).where(
                LoginFailure.key.startswith(prefix), LoginFailure.at < now - kept
            )
        )


@functools.cache
def _dummy_password_hash() -> str:
    """A hash of a random password, made as a researcher's is: checked against when the email
    is unknown, so that an unknown email takes as long as a wrong password (issue 23: 16 ms
    against 197 ms told which emails have accounts)."""
    return generate_password_hash(secrets.token_urlsafe(16))


def _password_matches(researcher: Researcher | None, password: str) -> bool:
    stored = researcher.password_hash if researcher is not None else _dummy_password_hash()
    return check_password_hash(stored, password) and researcher is not None


def _record_failure(keys: FailureKeys, researcher: Researcher | None, now: datetime) -> None:
    """Count a wrong password, and put each throttle it starts in the audit log."""
    db.session.add_all(
        [LoginFailure(key=key, at=now) for key in (keys.client, keys.pair, keys.account)]
    )
    db.session.flush()
    for limit, seconds in _waits(keys, now).items():
        db.session.add(
            AuditEvent(
                researcher_id=researcher.id if researcher is not None else None,
                action="login_throttle",
                detail={
                    "limit": limit,
                    "client_address": request.remote_addr,
                    "known_account": researcher is not None,
                    "retry_after": math.ceil(seconds),
                },
            )
        )


# One leading '/', then no backslash, whitespace or control character (see safe_next).
SAFE_NEXT = re.compile(r"/(?![/\\])[^\\\x00-\x20\x7f]*")


def safe_next(target: str | None) -> str | None:
    """`target` if it is a path inside this app, else None: an open redirect would let a link
    to our login page send a researcher on to any site.

    Only a single leading '/' is accepted: '//host' and '/\\host' are other hosts to a browser
    (which reads '\\' as '/'), and browsers drop tabs and newlines inside URLs, so any
    whitespace or control character is refused too.
    """
    if not target or len(target) > 2000 or not SAFE_NEXT.fullmatch(target):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    status, retry_after = 200, None
    if form.validate_on_submit():
        email = form.email.data.lower()
        keys = FailureKeys.of(email)
        now = datetime.now(UTC)
        _forget_expired(now)
        waits = _waits(keys, now)
        if waits:
            db.session.commit()
            flash("Too many failed attempts. Wait a few minutes and try again.")
            status, retry_after = 429, max(1, math.ceil(max(waits.values())))
        else:
            researcher = db.session.scalar(select(Researcher).where(Researcher.email == email))
            if _password_matches(researcher, form.password.data):
                # The client's own count stays: logging in to one account between guesses at
                # others must not reset it. The account's is cleared: its owner is back.
                db.session.execute(
                    delete(LoginFailure).where(LoginFailure.key.in_([keys.pair, keys.account]))
                )
                db.session.commit()
                login_user(researcher)
                return redirect(safe_next(request.args.get("next")) or url_for(".studies"))
            _record_failure(keys, researcher, now)
            db.session.commit()
            flash("Unknown email or wrong password.")
            status = 401
    elif request.method == "POST":
        status = 400
    response = make_response(render_template("researcher/login.html", form=form), status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


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
    return study_summary(_own_study(slug))


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
    withdraw(participant, current_user, request.form.get("reason", ""))
    flash(f"{public_id} withdrawn: their answers were deleted.")
    return redirect(url_for(".dashboard", slug=study.slug))
