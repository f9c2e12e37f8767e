"""SightSound study app: researchers design blind listening studies, participants take them."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import markdown
import nh3
from flask import Flask, redirect, send_from_directory, url_for
from markupsafe import Markup
from werkzeug.middleware.proxy_fix import ProxyFix

from .version import __version__  # noqa: F401 - the package's version, as before


def security_headers(secure: bool) -> list[tuple[str, str]]:
    """The headers every response carries (unless it sets its own). nginx's direct media sends
    (deploy/nginx-media.conf.template, rendered by scripts/serve.py) add the same list, so a
    medium nginx sends looks exactly like one the app sends. `secure`: SESSION_COOKIE_SECURE
    (HTTPS only: Strict-Transport-Security)."""
    headers = [
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
    ]
    if secure:
        headers.append(("Strict-Transport-Security", "max-age=31536000"))
    headers.append((
        "Content-Security-Policy",
        "default-src 'self'; media-src 'self' blob:; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self' https:",
    ))
    return headers


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Application factory (as in Flask's tutorial): config from instance/ and the environment."""
    # static_folder=None: static_assets.install routes /static/ with fingerprinted URLs.
    app = Flask(__name__, instance_relative_config=True, static_folder=None)
    instance = Path(app.instance_path)
    instance.mkdir(parents=True, exist_ok=True)
    app.config.from_mapping(
        SECRET_KEY=_secret_key(instance),
        SQLALCHEMY_DATABASE_URI=database_url(os.environ.get("DATABASE_URL"), instance),
        MEDIA_DIR=str(instance / "media"),
        MAX_CONTENT_LENGTH=64 * 1024,  # answers are small; a large body is an attack
        # werkzeug's method for researchers' passwords (and the unknown-email dummy hash).
        PASSWORD_HASH_METHOD="scrypt",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,  # a participant may take an hour over a page
        # Production behind TLS: SIGHTSOUND_SECURE_COOKIES=1 (docs/operations.md). Off by default
        # because `make demo` serves plain HTTP.
        SECURE_COOKIES=os.environ.get("SIGHTSOUND_SECURE_COOKIES", "") in ("1", "true", "yes"),
        # How many reverse proxies in front of the app set X-Forwarded-For/-Proto (nginx: 1).
        # 0, the default, trusts no such header: a client could write any address into it.
        # Behind a proxy, 0 makes every client the proxy's address (docs/operations.md).
        TRUSTED_PROXIES=os.environ.get("SIGHTSOUND_TRUSTED_PROXIES", "0"),
        # Media through nginx (media_accel.py), off unless set: scripts/serve.py sets all three
        # for its app servers and for `flask media-gc`, to match the nginx config it renders.
        MEDIA_ACCEL_REDIRECT=os.environ.get("SIGHTSOUND_MEDIA_ACCEL_REDIRECT") or None,
        MEDIA_RENDITIONS_DIR=os.environ.get("SIGHTSOUND_MEDIA_RENDITIONS_DIR") or None,
        MEDIA_ACCESS_LOG=os.environ.get("SIGHTSOUND_MEDIA_ACCESS_LOG") or None,
        # With media through nginx: nginx keeps the flood throttle (limit_req), so the media
        # route only authorises and the requests are counted from nginx's log.
        MEDIA_THROTTLE_IN_PROXY=os.environ.get("SIGHTSOUND_MEDIA_THROTTLE_IN_PROXY", "")
        in ("1", "true", "yes"),
        # And nginx sends a current trial's media straight from the URL's path (rendered
        # when the page is shown): no app request per media fetch (media_accel.py).
        MEDIA_DIRECT=os.environ.get("SIGHTSOUND_MEDIA_DIRECT", "") in ("1", "true", "yes"),
    )
    app.config.from_pyfile("config.py", silent=True)
    if test_config:
        app.config.update(test_config)
    if app.config["SECURE_COOKIES"] and not (app.debug or app.testing):
        app.config.update(SESSION_COOKIE_SECURE=True, REMEMBER_COOKIE_SECURE=True)
    if app.config.get("MEDIA_DIRECT") and not (
        app.config.get("MEDIA_ACCEL_REDIRECT") and app.config.get("MEDIA_THROTTLE_IN_PROXY")
    ):
        # Direct sends never reach the app: only nginx's log can count them, and only nginx
        # can throttle them.
        raise ValueError("MEDIA_DIRECT needs MEDIA_ACCEL_REDIRECT and MEDIA_THROTTLE_IN_PROXY")
    app.config.setdefault(
        "SQLALCHEMY_ENGINE_OPTIONS", engine_options(app.config["SQLALCHEMY_DATABASE_URI"])
    )
    proxies = trusted_proxies(app.config["TRUSTED_PROXIES"])
    if proxies:
        # The client address (login throttle, re-entry flags) and scheme (Secure cookies) come
        # from the last `proxies` entries of X-Forwarded-For/-Proto, which our proxies wrote.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)

    from . import auth, cli, errors, models, participant, researcher  # noqa: F401 - models: tables
    from .extensions import csrf, db, login_manager, migrate
    from .static_assets import install as serve_fingerprinted_static

    db.init_app(app)
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        from .pool import ping_after_idle

        with app.app_context():
            ping_after_idle(db.engine)
        from . import db_retry

        db_retry.install(app)  # a connection dropped mid-request: reads and answers run again
    migrate.init_app(app, db, directory=str(Path(__file__).parent / "migrations"))
    csrf.init_app(app)
    login_manager.init_app(app)
    serve_fingerprinted_static(app)
    app.register_blueprint(participant.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(researcher.bp)
    cli.register(app)
    errors.register(app)
    # Register every trial type now (their modules import numpy and scipy): otherwise the first
    # participant each server worker meets pays for the imports, inside a request.
    from .trial_types import all_trial_types

    all_trial_types()

    @app.after_request
    def add_security_headers(response):
        for name, value in security_headers(bool(app.config.get("SESSION_COOKIE_SECURE"))):
            response.headers.setdefault(name, value)
        return response

    app.add_template_filter(render_markdown, "markdown")

    @app.get("/")
    def index():
        return redirect(url_for("researcher.studies"))

    @app.get("/favicon.ico")
    def favicon():
        # Browsers and tools ask for /favicon.ico whatever the page links to; without this every
        # visit logs a 404. An SVG under the .ico name is what they get (all current browsers
        # read it by its Content-Type).
        return send_from_directory(
            app.static_folder, "favicon.svg", mimetype="image/svg+xml", max_age=86400
        )

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    return app


# What consent and debrief Markdown may become: ordinary text markup and links, nothing that
# runs or loads anything. An allow-list, so a tag or scheme not named here never gets through.
MARKDOWN_TAGS = frozenset(
    {"p", "br", "hr", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li", "a"}
    | {f"h{level}" for level in range(1, 7)}
)
MARKDOWN_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
MARKDOWN_URL_SCHEMES = frozenset({"http", "https", "mailto"})


def render_markdown(text: str | None) -> Markup:
    """Consent or debrief Markdown (written by a researcher, shown to participants) as safe HTML.

    Raw HTML is escaped before Markdown sees it (so it shows as text), and the output then goes
    through nh3 with an allow-list: Markdown itself writes `[x](javascript:...)` links as given,
    and nh3 decodes entities and case before judging a scheme, which a hand-written filter
    would get wrong. Relative links are dropped too: a participant page has nothing to link to.
    """
    html = markdown.markdown((text or "").replace("<", "&lt;"))
    return Markup(
        nh3.clean(
            html,
            tags=set(MARKDOWN_TAGS),
            attributes={tag: set(names) for tag, names in MARKDOWN_ATTRIBUTES.items()},
            url_schemes=set(MARKDOWN_URL_SCHEMES),
            url_relative="deny",
        )
    )


def trusted_proxies(value: Any) -> int:
    """TRUSTED_PROXIES as a count of proxies (0 to 5); anything else stops the app starting,
    since a wrong count either trusts a forged address or sees only the proxy's."""
    text = str(value).strip()
    if not text.isdigit() or int(text) > 5:
        raise ValueError(f"TRUSTED_PROXIES must be a number of proxies from 0 to 5, not {value!r}")
    return int(text)


def database_url(url: str | None, instance: Path) -> str:
    """DATABASE_URL when set (PostgreSQL in production), else SQLite in instance/."""
    if not url:
        return f"sqlite:///{instance / 'sightsound.sqlite'}"
    # We ship psycopg 3; a bare postgresql:// URL would ask SQLAlchemy for psycopg2.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30}}
    return {}  # liveness: pool.ping_after_idle, installed by create_app


def _secret_key(instance: Path) -> str:
    """SECRET_KEY from the environment, else a random key kept in instance/ across restarts."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    key_file = instance / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_hex(32))
        key_file.chmod(0o600)
    return key_file.read_text().strip()
