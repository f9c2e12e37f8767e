"""Owns the researcher's login and logout, and the login throttle that guards them.

The URLs stay under /researcher (/researcher/login, /researcher/logout); the study pages that
need a login are researcher.py's.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from flask import Blueprint, flash, make_response, redirect, render_template, request, url_for
from flask_login import login_required, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import delete, func, select
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from .extensions import db
from .models import AuditEvent, LoginFailure, Researcher, as_utc, password_hash_method

bp = Blueprint("auth", __name__, url_prefix="/researcher")

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
def _dummy_password_hash(method: str) -> str:
    """A hash of a random password, made as a researcher's is (the same ``method``): checked
    against when the email is unknown, so that an unknown email takes as long as a wrong
    password (issue 23: 16 ms against 197 ms told which emails have accounts)."""
    return generate_password_hash(secrets.token_urlsafe(16), method=method)


def _password_matches(researcher: Researcher | None, password: str) -> bool:
    stored = (researcher.password_hash if researcher is not None
              else _dummy_password_hash(password_hash_method()))
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
                target = safe_next(request.args.get("next"))
                return redirect(target or url_for("researcher.studies"))
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
