"""Security headers on every page, and secure cookies when production asks for them."""

from __future__ import annotations

from flow import current, start
from sqlalchemy import select

from study_app.extensions import db
from study_app.models import Study


def csp_directives(value: str) -> dict[str, str]:
    return {
        part.split()[0]: " ".join(part.split()[1:]) for part in value.split(";") if part.strip()
    }


def check_headers(response) -> None:
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    csp = csp_directives(headers["Content-Security-Policy"])
    assert csp["default-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["base-uri"] == "'none'"
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert "'unsafe-eval'" not in headers["Content-Security-Policy"]


def test_every_participant_and_researcher_response_has_the_headers(app, client, demo_study):
    with app.app_context():
        token = db.session.scalar(select(Study.entry_token))
    seen = [client.get(f"/join/{token}"), client.get("/researcher/login"), client.get("/healthz")]
    step = start(client, token)
    page = current(client, step)
    seen.append(client.get(step))
    seen.append(client.post(page.action, data={}))  # a 400 page
    seen.append(client.get("/p/" + "A" * 43 + "/"))  # a 404
    page = current(client, step)
    client.post(page.action, data={"consent": "yes"})
    page = current(client, step)
    seen.append(client.get(page.media[0]))
    for response in seen:
        check_headers(response)
    html_pages = [r for r in seen if r.mimetype == "text/html" and r.status_code == 200]
    assert all(r.headers["Cache-Control"] == "no-store" for r in html_pages[:1] + seen[3:4])
    # no Secure flag in testing/demo: plain HTTP must keep working
    assert "Strict-Transport-Security" not in seen[0].headers


def test_secure_cookies_in_production(monkeypatch, database, tmp_path, demo_set_dir):
    from study_app import create_app

    monkeypatch.setenv("SIGHTSOUND_SECURE_COOKIES", "1")
    url, options = database
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": url,
            "SQLALCHEMY_ENGINE_OPTIONS": options,
            "MEDIA_DIR": str(tmp_path / "media"),
            "SECRET_KEY": "prod-secret",
        }
    )
    assert app.config["SESSION_COOKIE_SECURE"] and app.config["REMEMBER_COOKIE_SECURE"]
    assert app.config["SESSION_COOKIE_HTTPONLY"]
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    try:
        client = app.test_client()
        response = client.get("/researcher/login")
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
        cookie = response.headers.get("Set-Cookie", "")
        assert "Secure" in cookie and "HttpOnly" in cookie
    finally:
        with app.app_context():
            db.engine.dispose()


def test_testing_app_keeps_plain_cookies(monkeypatch, tmp_path):
    from study_app import create_app

    monkeypatch.setenv("SIGHTSOUND_SECURE_COOKIES", "1")
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'x.sqlite'}",
            "SECRET_KEY": "x",
        }
    )
    assert not app.config.get("SESSION_COOKIE_SECURE")
