"""Issue 23, item 6: password guessing spread over many addresses, the throttle behind a reverse
proxy, and which emails exist.

- Per account, across every address: after ACCOUNT_FREE_FAILURES failures each further one
  starts a doubling delay (Retry-After), in which even the right password waits; it always ends.
- Per client address: the real client's, through ProxyFix when TRUSTED_PROXIES says how many
  proxies to trust; without it X-Forwarded-For is ignored (anyone can write it).
- An unknown email costs one password hash, as a known one does.
- Every throttle that starts is in the audit log.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from study_app.auth import (
    ACCOUNT_BASE_DELAY,
    ACCOUNT_FREE_FAILURES,
    ACCOUNT_MAX_DELAY,
    ACCOUNT_WINDOW,
    MAX_CLIENT_FAILURES,
    MAX_FAILURES,
    account_delay,
)
from study_app.extensions import db
from study_app.models import AuditEvent, LoginFailure

OWNER, RIGHT = "owner@example.org", "owner-password"
PROXY = "10.0.0.2"  # the reverse proxy's own address, as the app sees it


def login(client, email: str, password: str, address: str, forwarded: str | None = None):
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return client.post(
        "/researcher/login",
        data={"email": email, "password": password},
        environ_base={"REMOTE_ADDR": address},
        headers=headers,
    )


def age(app, seconds: float) -> None:
    """Move every recorded failure `seconds` into the past (as if that much time had passed)."""
    with app.app_context():
        for failure in db.session.scalars(select(LoginFailure)):
            failure.at -= timedelta(seconds=seconds)
        db.session.commit()


def throttle_events(app) -> list[dict]:
    with app.app_context():
        events = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "login_throttle").order_by(AuditEvent.id)
        )
        return [event.detail | {"researcher_id": event.researcher_id} for event in events]


def test_guesses_from_many_addresses_meet_a_delay_for_the_account(app, demo_study):
    """The issue's attack: 120 guesses from 30 addresses. Each address stays under its own
    limits, so only the account's count across addresses stops them."""
    client = app.test_client()
    statuses = [
        login(client, OWNER, f"guess-{n}-{i}", f"198.51.100.{n}").status_code
        for n in range(30)
        for i in range(4)
    ]
    assert statuses == [401] * ACCOUNT_FREE_FAILURES + [429] * (120 - ACCOUNT_FREE_FAILURES)
    # during the delay even the right password from a fresh address waits ...
    refused = login(client, OWNER, RIGHT, "203.0.113.5")
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= ACCOUNT_BASE_DELAY.total_seconds()
    # ... and once it has passed, gets in: a delay, not a lockout
    age(app, ACCOUNT_BASE_DELAY.total_seconds())
    assert login(client, OWNER, RIGHT, "203.0.113.5").status_code == 302


def test_account_delays_double_and_are_capped_and_expire(app, demo_study):
    client = app.test_client()
    for i in range(ACCOUNT_FREE_FAILURES):
        assert login(client, OWNER, "wrong", f"198.51.100.{i}").status_code == 401
    for step in range(3):
        delay = ACCOUNT_BASE_DELAY * 2**step
        refused = login(client, OWNER, "wrong", "192.0.2.1")
        assert refused.status_code == 429
        assert (
            delay.total_seconds() - 5
            < int(refused.headers["Retry-After"])
            <= (delay.total_seconds())
        )
        age(app, delay.total_seconds())
        # one more guess once the delay is over: it counts, and starts the next, longer delay
        assert login(client, OWNER, "wrong", f"192.0.2.{10 + step}").status_code == 401
    assert account_delay(ACCOUNT_FREE_FAILURES + 40) == ACCOUNT_MAX_DELAY
    # failures older than the window no longer count: the account is free again
    age(app, ACCOUNT_WINDOW.total_seconds())
    assert login(client, OWNER, RIGHT, "192.0.2.99").status_code == 302
    with app.app_context():  # the owner is back: the account's count is gone
        assert not db.session.scalars(
            select(LoginFailure).where(LoginFailure.key.startswith("account:"))
        ).all()


def test_unknown_emails_are_throttled_exactly_like_known_ones(app, demo_study):
    """The throttle's answers must not tell which emails have accounts either."""
    client = app.test_client()

    def statuses(email: str, network: str) -> list[int]:
        return [
            login(client, email, "wrong", f"{network}.{i}").status_code
            for i in range(ACCOUNT_FREE_FAILURES + 2)
        ]

    assert statuses(OWNER, "198.51.100") == statuses("nobody@example.org", "203.0.113")


def test_an_unknown_email_costs_one_password_hash_like_a_known_one(app, demo_study, monkeypatch):
    """A known email used to cost a password hash (197 ms) and an unknown one none (16 ms):
    the timing told which emails exist. Now both check one hash, of the same kind."""
    import study_app.auth as auth

    checked: list[str] = []
    real = auth.check_password_hash

    def counting(stored: str, password: str) -> bool:
        checked.append(stored.split("$", 1)[0])  # the method and its cost parameters
        return real(stored, password)

    monkeypatch.setattr(auth, "check_password_hash", counting)
    client = app.test_client()
    assert login(client, OWNER, "wrong", "198.51.100.1").status_code == 401
    assert login(client, "nobody@example.org", "wrong", "198.51.100.2").status_code == 401
    assert login(client, "nobody@example.org", RIGHT, "198.51.100.3").status_code == 401
    assert len(checked) == 3 and len(set(checked)) == 1, checked


def test_each_throttle_that_starts_is_in_the_audit_log(app, demo_study):
    client = app.test_client()
    for i in range(MAX_FAILURES):
        login(client, OWNER, f"guess-{i}", "198.51.100.7")
    for _ in range(3):  # refused attempts add no events (nor failures)
        assert login(client, OWNER, "guess", "198.51.100.7").status_code == 429
    events = throttle_events(app)
    assert [e["limit"] for e in events] == ["account_client"]
    assert events[0]["client_address"] == "198.51.100.7" and events[0]["known_account"]
    assert events[0]["researcher_id"] is not None and events[0]["retry_after"] > 0
    for i in range(MAX_CLIENT_FAILURES - MAX_FAILURES):
        login(client, f"user{i}@example.org", "guess", "198.51.100.7")
    assert [e["limit"] for e in throttle_events(app)][-1] == "client"
    for i in range(ACCOUNT_FREE_FAILURES - MAX_FAILURES):
        login(client, OWNER, "guess", f"192.0.2.{i}")
    last = throttle_events(app)[-1]
    assert last["limit"] == "account" and last["retry_after"] == ACCOUNT_BASE_DELAY.seconds


# Behind a reverse proxy ------------------------------------------------------------------------


@pytest.fixture
def proxied_app(app, database, tmp_path):
    """A second app on the same database, configured for one trusted proxy in front."""
    from study_app import create_app

    url, options = database
    proxied = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": url,
            "SQLALCHEMY_ENGINE_OPTIONS": options,
            "MEDIA_DIR": str(tmp_path / "media"),
            "WTF_CSRF_ENABLED": False,
            "SECRET_KEY": "test-secret",
            "TRUSTED_PROXIES": 1,
        }
    )
    yield proxied
    with proxied.app_context():
        db.session.remove()
        db.engine.dispose()


def test_behind_a_trusted_proxy_the_real_client_is_throttled_not_everyone(proxied_app, demo_study):
    """Every request comes from the proxy's address; X-Forwarded-For, written by the one trusted
    proxy, names the client. Junk guesses from one client throttle that client only."""
    client = proxied_app.test_client()
    for i in range(MAX_CLIENT_FAILURES):
        assert login(client, f"junk{i}@example.org", "x", PROXY, "198.51.100.9").status_code == 401
    assert login(client, "junk@example.org", "x", PROXY, "198.51.100.9").status_code == 429
    # the researcher, behind the same proxy, is another client
    assert login(client, OWNER, RIGHT, PROXY, "203.0.113.5").status_code == 302
    # a client cannot pose as another by adding its own X-Forwarded-For entry: only the last
    # one, written by our proxy, counts
    spoofed = login(client, "junk@example.org", "x", PROXY, "203.0.113.77, 198.51.100.9")
    assert spoofed.status_code == 429
    assert {e["client_address"] for e in throttle_events(proxied_app)} == {"198.51.100.9"}


def test_without_the_setting_x_forwarded_for_is_ignored(app, demo_study):
    """TRUSTED_PROXIES off (the default): a client that writes a new X-Forwarded-For each time is
    still counted by its own address. The price behind a proxy: every client has the proxy's
    address, so one guesser throttles everyone (docs/operations.md says to set it)."""
    client = app.test_client()
    for i in range(MAX_CLIENT_FAILURES):
        response = login(client, f"junk{i}@example.org", "x", PROXY, f"198.51.100.{i}")
        assert response.status_code == 401
    assert login(client, "junk@example.org", "x", PROXY, "192.0.2.200").status_code == 429
    assert login(client, OWNER, RIGHT, PROXY, "203.0.113.5").status_code == 429


@pytest.mark.parametrize("value", ["-1", "one", "6", "1.5"])
def test_a_bad_trusted_proxies_value_stops_the_app(value, tmp_path):
    from study_app import create_app

    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        create_app(
            {
                "TESTING": True,
                "TRUSTED_PROXIES": value,
                "SECRET_KEY": "x",
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'x.sqlite'}",
            }
        )


def test_researchers_passwords_are_scrypt_unless_configured(tmp_path):
    """The tests hash with cheap PBKDF2 (tests/conftest.py); the app itself uses scrypt, for the
    passwords it stores and for the unknown-email dummy it checks against."""
    from study_app import create_app
    from study_app.auth import _password_matches
    from study_app.models import Researcher

    app = create_app({"TESTING": True, "SECRET_KEY": "x",
                      "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'db.sqlite'}"})
    assert app.config["PASSWORD_HASH_METHOD"] == "scrypt"
    with app.app_context():
        researcher = Researcher(email="r@example.org")
        researcher.set_password("secret")
        assert researcher.password_hash.startswith("scrypt:")
        assert researcher.check_password("secret")
        assert not _password_matches(None, "secret")
