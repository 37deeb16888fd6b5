"""Staff accounts: lockout, two-factor, session limits, the users page and the CLI."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta
from xml.etree import ElementTree

import pyotp
import sqlalchemy as sa

from core import create_app
from core.audit import verify_chain
from core.cli import cli
from core.config import load_config
from core.crypto import decrypt
from core.extensions import db
from core.models import AuditEvent, Role, StaffUser, utcnow
from core.security import hash_password
from core.signing import load_or_create_signing_key
from tests.conftest import DPO_EMAIL, DPO_PASSWORD, csrf_token
from tests.flows import login

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin password of some length"
OPERATOR_EMAIL, OPERATOR_PASSWORD = "operator@example.com", "operator password, long enough"
REFUSED = "Wrong email or password."


def add_staff(app, email: str, role: Role, password: str) -> int:
    with app.app_context():
        user = StaffUser(email=email, role=role, password_hash=hash_password(password))
        db.session.add(user)
        db.session.commit()
        return user.id


def staff(app, email: str) -> StaffUser:
    with app.app_context():
        user = db.session.scalars(sa.select(StaffUser).where(StaffUser.email == email)).one()
        db.session.expunge(user)
        return user


def update_staff(app, email: str, **values) -> None:
    with app.app_context():
        db.session.execute(sa.update(StaffUser).where(StaffUser.email == email).values(**values))
        db.session.commit()


def sign_in(client, email: str, password: str):
    page = client.get("/admin/login")
    return client.post(
        "/admin/login",
        data={"email": email, "password": password, "csrf_token": csrf_token(page.text)},
    )


def post(client, path: str, page: str, **data):
    """Post a form with the CSRF token of the staff page ``page``."""
    token = csrf_token(client.get(page).text)
    return client.post(path, data={"csrf_token": token, **data})


def signed_in(client) -> bool:
    return client.get("/admin/").status_code == 200


def events(app, action: str | None = None) -> list[AuditEvent]:
    with app.app_context():
        query = sa.select(AuditEvent).order_by(AuditEvent.position)
        if action:
            query = query.where(AuditEvent.action == action)
        found = db.session.scalars(query).all()
        db.session.expunge_all()
        return found


def assert_audit_free_of(app, *secrets: str) -> None:
    with app.app_context():
        assert verify_chain(db.session).ok
    for event in events(app):
        text = json.dumps([event.actor, event.details])
        for secret in secrets:
            assert secret not in text, f"{event.action} holds a password or code"


def from_another_address(app, address: str):
    """Return a client of its own IP address, so sign-in rate limits stay apart."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


# --- Lockout ----------------------------------------------------------------------------


def test_five_failures_lock_the_account_even_against_the_right_password(app, client):
    add_staff(app, OPERATOR_EMAIL, Role.OPERATOR, OPERATOR_PASSWORD)
    unknown = sign_in(client, "nobody@example.com", "whatever it is")
    for attempt in range(5):
        wrong = sign_in(client, OPERATOR_EMAIL, f"wrong guess {attempt}")
        assert wrong.status_code == 200 and REFUSED in wrong.text
    locked = sign_in(client, OPERATOR_EMAIL, OPERATOR_PASSWORD)
    assert locked.status_code == 200 and not signed_in(client)
    # The page says the same whether the address is unknown, mistyped or locked.
    refusal = re.compile(r'<p class="flash" role="status">(.*?)</p>', re.S)
    assert refusal.findall(unknown.text) == refusal.findall(wrong.text)
    assert refusal.findall(locked.text) == refusal.findall(wrong.text)
    user = staff(app, OPERATOR_EMAIL)
    assert user.locked_until > utcnow() + timedelta(minutes=14)
    failed = events(app, "staff.login_failed")
    assert [e.details.get("failures") for e in failed[:5]] == [1, 2, 3, 4, 5]
    assert failed[5].details["reason"] == "locked" and len(failed) == 6
    assert all(e.details["staff"] == OPERATOR_EMAIL for e in failed)
    [lock] = events(app, "staff.locked")
    assert lock.details == {"staff": OPERATOR_EMAIL, "failures": 5, "minutes": 15}
    assert not events(app, "staff.login")
    assert_audit_free_of(
        app, OPERATOR_PASSWORD, "wrong guess", "whatever it is", "nobody@example.com"
    )


def test_a_success_resets_the_count_and_a_lock_ends_by_itself(app, client):
    add_staff(app, OPERATOR_EMAIL, Role.OPERATOR, OPERATOR_PASSWORD)
    app.config.update(LOGIN_MAX_FAILURES=3, LOGIN_LOCKOUT_MINUTES=60)
    for attempt in range(2):
        sign_in(client, OPERATOR_EMAIL, f"wrong {attempt}")
    assert sign_in(client, OPERATOR_EMAIL, OPERATOR_PASSWORD).status_code == 302
    assert staff(app, OPERATOR_EMAIL).failed_logins == 0
    client.post("/admin/logout", data={"csrf_token": csrf_token(client.get("/admin/").text)})
    for attempt in range(2):
        sign_in(client, OPERATOR_EMAIL, f"again wrong {attempt}")
    assert sign_in(client, OPERATOR_EMAIL, OPERATOR_PASSWORD).status_code == 302
    client.post("/admin/logout", data={"csrf_token": csrf_token(client.get("/admin/").text)})

    other = from_another_address(app, "192.0.2.7")
    for attempt in range(3):
        sign_in(other, OPERATOR_EMAIL, f"third run {attempt}")
    assert staff(app, OPERATOR_EMAIL).locked_until > utcnow() + timedelta(minutes=59)
    assert sign_in(other, OPERATOR_EMAIL, OPERATOR_PASSWORD).status_code == 200
    update_staff(app, OPERATOR_EMAIL, locked_until=utcnow() - timedelta(seconds=1))
    assert sign_in(other, OPERATOR_EMAIL, OPERATOR_PASSWORD).status_code == 302
    assert signed_in(other)


def test_an_admin_unlocks_an_account_on_the_users_page(app, client):
    add_staff(app, ADMIN_EMAIL, Role.ADMIN, ADMIN_PASSWORD)
    user_id = add_staff(app, OPERATOR_EMAIL, Role.OPERATOR, OPERATOR_PASSWORD)
    update_staff(app, OPERATOR_EMAIL, locked_until=utcnow() + timedelta(minutes=10))
    operator = from_another_address(app, "192.0.2.8")
    assert sign_in(operator, OPERATOR_EMAIL, OPERATOR_PASSWORD).status_code == 200
    login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    listing = client.get("/admin/users")
    assert re.search(r"operator@example.com</th>.*?until \d\d:\d\d UTC", listing.text, re.S)
    done = post(client, f"/admin/users/{user_id}/unlock", "/admin/users")
    assert done.status_code == 302
    assert "is unlocked" in client.get("/admin/users").text
    assert staff(app, OPERATOR_EMAIL).locked_until is None
    assert sign_in(operator, OPERATOR_EMAIL, OPERATOR_PASSWORD).status_code == 302
    [unlock] = events(app, "staff.unlocked")
    assert unlock.actor == f"staff:{ADMIN_EMAIL}" and unlock.details == {"staff": OPERATOR_EMAIL}


def test_the_cli_unlocks_an_account(app):
    add_staff(app, OPERATOR_EMAIL, Role.OPERATOR, OPERATOR_PASSWORD)
    update_staff(
        app, OPERATOR_EMAIL, locked_until=utcnow() + timedelta(minutes=10), failed_logins=3
    )
    runner = app.test_cli_runner()
    result = runner.invoke(cli, ["unlock-user", "--email", "Operator@Example.com"])
    assert result.exit_code == 0, result.output
    user = staff(app, OPERATOR_EMAIL)
    assert user.locked_until is None and user.failed_logins == 0
    assert events(app, "staff.unlocked")[0].actor == "cli"
    missing = runner.invoke(cli, ["unlock-user", "--email", "ghost@example.com"])
    assert missing.exit_code == 1 and "no staff account" in missing.output


def test_the_cli_refuses_a_short_password(app):
    result = app.test_cli_runner().invoke(
        cli, ["create-user", "--email", "x@example.com", "--password", "short"]
    )
    assert result.exit_code == 1 and "at least 12 characters" in result.output
    with app.app_context():
        assert (
            db.session.scalars(
                sa.select(StaffUser).where(StaffUser.email == "x@example.com")
            ).first()
            is None
        )


def test_a_deactivated_account_cannot_sign_in(app, client):
    add_staff(app, OPERATOR_EMAIL, Role.OPERATOR, OPERATOR_PASSWORD)
    update_staff(app, OPERATOR_EMAIL, active=False)
    response = sign_in(client, OPERATOR_EMAIL, OPERATOR_PASSWORD)
    assert response.status_code == 200 and REFUSED in response.text
    assert events(app, "staff.login_failed")[0].details["reason"] == "inactive"


# --- Two-factor -------------------------------------------------------------------------


def enrol(client) -> pyotp.TOTP:
    """Turn two-factor on for the signed-in staff member; return their authenticator."""
    page = client.get("/admin/account/two-factor")
    assert page.status_code == 200
    secret = re.search(r'<code class="secret">([A-Z2-7 ]+)</code>', page.text)[1]
    totp = pyotp.TOTP(secret.replace(" ", ""))
    done = client.post(
        "/admin/account/two-factor",
        data={"csrf_token": csrf_token(page.text), "code": totp.now()},
    )
    assert done.status_code == 302, done.text
    return totp


def enter_code(client, code: str):
    page = client.get("/admin/login/code")
    return client.post(
        "/admin/login/code", data={"code": code, "csrf_token": csrf_token(page.text)}
    )


def let_time_pass(app, email: str) -> None:
    """Move the account's last code use two minutes back, as if time had passed."""
    earlier = utcnow() - timedelta(minutes=2)
    update_staff(app, email, totp_enabled_at=earlier, last_login_at=earlier)


def test_enrolment_shows_a_qr_code_and_needs_a_code_before_it_is_on(app, client):
    login(client)
    page = client.get("/admin/account/two-factor")
    qr = re.search(r'<img class="qr" src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', page.text)
    svg = ElementTree.fromstring(base64.b64decode(qr[1]))
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    secret = re.search(r'<code class="secret">([A-Z2-7 ]+)</code>', page.text)[1].replace(" ", "")
    assert page.text.count(secret[:4]) >= 1
    user = staff(app, DPO_EMAIL)
    assert user.totp_enabled_at is None and secret.encode() not in user.totp_secret_sealed
    key = bytes.fromhex(app.config["DATA_KEY"])
    assert decrypt(key, user.totp_secret_sealed, f"staff-totp:{user.id}".encode()) == secret
    # Reloading shows the same secret until it is confirmed.
    assert secret[:8] in client.get("/admin/account/two-factor").text.replace(" ", "")

    totp = pyotp.TOTP(secret)
    wrong = f"{(int(totp.now()) + 1) % 1_000_000:06d}"
    refused = client.post(
        "/admin/account/two-factor", data={"csrf_token": csrf_token(page.text), "code": wrong}
    )
    assert refused.status_code == 200 and "not right" in refused.text
    assert staff(app, DPO_EMAIL).totp_enabled_at is None
    done = client.post(
        "/admin/account/two-factor",
        data={"csrf_token": csrf_token(page.text), "code": totp.now()},
    )
    assert done.status_code == 302
    assert "Two-factor authentication is on" in client.get("/admin/account").text
    [enabled] = events(app, "staff.totp_enabled")
    assert enabled.actor == f"staff:{DPO_EMAIL}"
    assert_audit_free_of(app, secret, totp.now())


def test_with_two_factor_on_signing_in_takes_a_code_used_only_once(app, client):
    login(client)
    totp = enrol(client)
    client.post("/admin/logout", data={"csrf_token": csrf_token(client.get("/admin/").text)})

    first = sign_in(client, DPO_EMAIL, DPO_PASSWORD)
    assert first.status_code == 302 and first.headers["Location"].endswith("/admin/login/code")
    assert not signed_in(client)  # the password alone does not sign in
    # The code that confirmed the enrolment cannot be used again in its window (taken from
    # the enrolment's time, not the clock's: a 30-second boundary may have passed since).
    code = totp.at(staff(app, DPO_EMAIL).totp_enabled_at)
    reused = enter_code(client, code)
    assert reused.status_code == 200 and "already used" in reused.text
    assert not signed_in(client)

    let_time_pass(app, DPO_EMAIL)
    code = totp.now()
    assert enter_code(client, code).status_code == 302
    assert signed_in(client)
    assert events(app, "staff.login")[-1].details == {"two_factor": True}
    client.post("/admin/logout", data={"csrf_token": csrf_token(client.get("/admin/").text)})

    # Someone who saw that code and the password cannot sign in with them.
    sign_in(client, DPO_EMAIL, DPO_PASSWORD)
    again = enter_code(client, code)
    assert again.status_code == 200 and not signed_in(client)
    assert_audit_free_of(app, code, DPO_PASSWORD)


def test_wrong_codes_count_towards_the_lockout(app, client):
    login(client)
    totp = enrol(client)
    client.post("/admin/logout", data={"csrf_token": csrf_token(client.get("/admin/").text)})
    let_time_pass(app, DPO_EMAIL)
    sign_in(client, DPO_EMAIL, DPO_PASSWORD)
    wrong = f"{(int(totp.now()) + 500_000) % 1_000_000:06d}"
    for _ in range(4):
        assert enter_code(client, wrong).status_code == 200
    locked = enter_code(client, wrong)
    assert locked.status_code == 302 and locked.headers["Location"].endswith("/admin/login")
    assert staff(app, DPO_EMAIL).locked_until > utcnow()
    assert [e.details.get("step") for e in events(app, "staff.login_failed")] == ["code"] * 5
    other = from_another_address(app, "192.0.2.9")
    assert sign_in(other, DPO_EMAIL, DPO_PASSWORD).status_code == 200
    assert not signed_in(other)


def test_the_code_step_needs_the_password_step_first(client):
    response = client.get("/admin/login/code")
    assert response.status_code == 302 and response.headers["Location"].endswith("/admin/login")


def test_turning_two_factor_off_needs_a_code(app, client):
    login(client)
    totp = enrol(client)
    page = client.get("/admin/account")
    assert "Turn two-factor authentication off" in page.text
    token = csrf_token(page.text)
    refused = client.post(
        "/admin/account/two-factor/off",
        data={"csrf_token": token, "off-code": "000000" if totp.now() != "000000" else "111111"},
    )
    assert refused.status_code == 200 and "stays on" in refused.text
    assert staff(app, DPO_EMAIL).totp_enabled_at is not None
    done = client.post(
        "/admin/account/two-factor/off", data={"csrf_token": token, "off-code": totp.now()}
    )
    assert done.status_code == 302
    user = staff(app, DPO_EMAIL)
    assert user.totp_enabled_at is None and user.totp_secret_sealed is None
    assert events(app, "staff.totp_disabled")[0].actor == f"staff:{DPO_EMAIL}"
    client.post("/admin/logout", data={"csrf_token": csrf_token(client.get("/admin/").text)})
    assert sign_in(client, DPO_EMAIL, DPO_PASSWORD).headers["Location"].endswith("/admin/")


def test_an_admin_without_two_factor_must_enrol_when_the_config_says_so(app, client):
    add_staff(app, ADMIN_EMAIL, Role.ADMIN, ADMIN_PASSWORD)
    app.config["TOTP_REQUIRED_FOR_ADMIN"] = True
    dpo = from_another_address(app, "192.0.2.10")
    login(dpo)
    assert dpo.get("/admin/").status_code == 200  # only admins are made to enrol

    login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    for page in ("/admin/", "/admin/users", "/admin/account"):
        response = client.get(page)
        assert response.status_code == 302, page
        assert response.headers["Location"].endswith("/admin/account/two-factor")
    assert "Administrators must use two-factor" in client.get("/admin/", follow_redirects=True).text
    enrol(client)
    assert client.get("/admin/users").status_code == 200
    account = client.get("/admin/account")
    assert "must keep two-factor authentication on" in account.text
    assert "Turn two-factor authentication off" not in account.text


# --- Sessions ---------------------------------------------------------------------------


def test_an_idle_session_ends_and_the_sign_in_page_says_so(client):
    login(client)
    with client.session_transaction() as session:
        session["staff_seen_at"] -= 29 * 60
    assert signed_in(client)  # 29 minutes idle: still in, and the clock starts again
    with client.session_transaction() as session:
        session["staff_seen_at"] -= 31 * 60
    response = client.get("/admin/", follow_redirects=True)
    assert "session ended after 30 minutes without activity" in response.text
    assert response.request.path == "/admin/login"
    assert not signed_in(client)


def test_a_session_ends_after_twelve_hours_however_active(client):
    login(client)
    with client.session_transaction() as session:
        session["staff_signed_in_at"] -= 12 * 3600 + 1
    response = client.get("/admin/account", follow_redirects=True)
    assert "sessions last at most 12 hours" in response.text
    assert not signed_in(client)


def test_the_session_cookie_is_http_only_and_same_site(app, client, tmp_path, monkeypatch):
    page = client.get("/admin/login")
    response = client.post(
        "/admin/login",
        data={"email": DPO_EMAIL, "password": DPO_PASSWORD, "csrf_token": csrf_token(page.text)},
    )
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    for name in ("SECRET_KEY", "DATA_KEY", "HASH_KEY"):
        monkeypatch.setenv(f"LETHE_{name}", "ab" * 32)
    monkeypatch.setenv("LETHE_ENV", "production")
    monkeypatch.setenv("LETHE_SIGNING_KEY_FILE", str(tmp_path / "key.pem"))
    monkeypatch.setenv("LETHE_DATABASE_URL", "postgresql+psycopg://lethe@db/lethe")
    assert load_config(tmp_path)["SESSION_COOKIE_SECURE"] is True


def test_production_pages_ask_browsers_for_https_only(tmp_path, monkeypatch):
    for name in ("SECRET_KEY", "DATA_KEY", "HASH_KEY"):
        monkeypatch.setenv(f"LETHE_{name}", "cd" * 32)
    monkeypatch.setenv("LETHE_ENV", "production")
    monkeypatch.setenv("LETHE_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("LETHE_SIGNING_KEY_FILE", str(tmp_path / "key.pem"))
    monkeypatch.setenv("LETHE_DATABASE_URL", "postgresql+psycopg://lethe@db.invalid/lethe")
    load_or_create_signing_key(tmp_path / "key.pem")  # production never makes one itself
    production = create_app()
    with production.test_client().get("/static/lethe.css") as response:
        assert response.status_code == 200
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
        assert "unsafe-inline" not in response.headers["Content-Security-Policy"]


# --- My account -------------------------------------------------------------------------


def test_changing_ones_password_needs_the_current_one_and_ends_other_sessions(app, client):
    login(client)
    elsewhere = from_another_address(app, "192.0.2.11")
    login(elsewhere)
    new = "a brand new passphrase"
    for data, message in (
        ({"current": "not it at all", "new": new, "confirm": new}, "current password is not"),
        ({"current": DPO_PASSWORD, "new": "too short", "confirm": "too short"}, "at least 12"),
        ({"current": DPO_PASSWORD, "new": new, "confirm": new + "!"}, "passwords differ"),
    ):
        refused = post(client, "/admin/account/password", "/admin/account", **data)
        assert refused.status_code == 200 and message in refused.text
    assert not events(app, "staff.password_changed")
    done = post(
        client,
        "/admin/account/password",
        "/admin/account",
        current=DPO_PASSWORD,
        new=new,
        confirm=new,
    )
    assert done.status_code == 302
    assert signed_in(client)  # this session goes on
    ended = elsewhere.get("/admin/", follow_redirects=True)
    assert "password or two-factor authentication changed" in ended.text
    client.post("/admin/logout", data={"csrf_token": csrf_token(client.get("/admin/").text)})
    assert sign_in(client, DPO_EMAIL, DPO_PASSWORD).status_code == 200
    assert sign_in(client, DPO_EMAIL, new).status_code == 302
    assert_audit_free_of(app, new, DPO_PASSWORD, "not it at all", "too short")


# --- The users page ---------------------------------------------------------------------


def test_an_admin_creates_an_account_whose_password_is_shown_once(app, client):
    add_staff(app, ADMIN_EMAIL, Role.ADMIN, ADMIN_PASSWORD)
    login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    created = post(
        client, "/admin/users/new", "/admin/users", email="New.Auditor@example.com", role="auditor"
    )
    assert created.status_code == 200 and created.headers["Cache-Control"] == "no-store"
    password = re.search(r'<code class="secret">([^<]+)</code>', created.text)[1]
    assert len(password) >= 12
    listing = client.get("/admin/users").text
    assert "new.auditor@example.com" in listing and password not in listing
    typed = post(
        client,
        "/admin/users/new",
        "/admin/users",
        email="typed@example.com",
        role="operator",
        password="typed password 123",
    )
    assert typed.status_code == 200 and "uses the password you typed" in typed.text
    short = post(
        client,
        "/admin/users/new",
        "/admin/users",
        email="s@example.com",
        role="dpo",
        password="short",
    )
    assert "at least 12 characters" in short.text
    twice = post(client, "/admin/users/new", "/admin/users", email="typed@example.com", role="dpo")
    assert "already exists" in twice.text
    bad = post(client, "/admin/users/new", "/admin/users", email="typed@", role="dpo")
    assert "not an email address" in bad.text
    assert [
        (e.details["staff"], e.details["role"], e.details["generated"])
        for e in events(app, "staff.created")
    ] == [
        ("new.auditor@example.com", "auditor", True),
        ("typed@example.com", "operator", False),
    ]
    other = from_another_address(app, "192.0.2.12")
    assert sign_in(other, "new.auditor@example.com", password).status_code == 302
    assert (
        sign_in(
            from_another_address(app, "192.0.2.13"), "typed@example.com", "typed password 123"
        ).status_code
        == 302
    )
    assert_audit_free_of(app, password, "typed password 123", ADMIN_PASSWORD)


def test_an_admin_changes_roles_deactivates_and_resets_two_factor(app, client):
    add_staff(app, ADMIN_EMAIL, Role.ADMIN, ADMIN_PASSWORD)
    operator_id = add_staff(app, OPERATOR_EMAIL, Role.OPERATOR, OPERATOR_PASSWORD)
    operator = from_another_address(app, "192.0.2.14")
    login(operator, OPERATOR_EMAIL, OPERATOR_PASSWORD)
    enrol(operator)
    login(client, ADMIN_EMAIL, ADMIN_PASSWORD)

    assert (
        post(client, f"/admin/users/{operator_id}/role", "/admin/users", role="dpo").status_code
        == 302
    )
    assert staff(app, OPERATOR_EMAIL).role == Role.DPO
    assert (
        post(client, f"/admin/users/{operator_id}/role", "/admin/users", role="boss").status_code
        == 302
    )
    assert staff(app, OPERATOR_EMAIL).role == Role.DPO

    assert "Reset two-factor" in client.get("/admin/users").text
    assert (
        post(client, f"/admin/users/{operator_id}/reset-two-factor", "/admin/users").status_code
        == 302
    )
    assert staff(app, OPERATOR_EMAIL).totp_secret_sealed is None
    assert (
        "two-factor authentication changed" in operator.get("/admin/", follow_redirects=True).text
    )

    assert (
        post(client, f"/admin/users/{operator_id}/active", "/admin/users", active="0").status_code
        == 302
    )
    assert not staff(app, OPERATOR_EMAIL).active
    assert sign_in(operator, OPERATOR_EMAIL, OPERATOR_PASSWORD).status_code == 200
    assert (
        post(client, f"/admin/users/{operator_id}/active", "/admin/users", active="1").status_code
        == 302
    )
    assert sign_in(operator, OPERATOR_EMAIL, OPERATOR_PASSWORD).status_code == 302

    actions = [
        (e.action, e.actor)
        for e in events(app)
        if e.details.get("staff") == OPERATOR_EMAIL and e.actor.startswith("staff:admin")
    ]
    assert [action for action, _ in actions] == [
        "staff.role_changed",
        "staff.totp_reset",
        "staff.deactivated",
        "staff.reactivated",
    ]
    [change] = events(app, "staff.role_changed")
    assert change.details == {"staff": OPERATOR_EMAIL, "old": "operator", "new": "dpo"}


def test_the_last_active_admin_can_be_neither_demoted_nor_deactivated(app, client):
    admin_id = add_staff(app, ADMIN_EMAIL, Role.ADMIN, ADMIN_PASSWORD)
    login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    demoted = post(client, f"/admin/users/{admin_id}/role", "/admin/users", role="dpo")
    assert "last active administrator" in client.get(demoted.headers["Location"]).text
    post(client, f"/admin/users/{admin_id}/active", "/admin/users", active="0")
    user = staff(app, ADMIN_EMAIL)
    assert user.role == Role.ADMIN and user.active
    assert not events(app, "staff.role_changed") and not events(app, "staff.deactivated")

    # An inactive admin does not count; a second active one does.
    second = add_staff(app, "second@example.com", Role.ADMIN, ADMIN_PASSWORD)
    update_staff(app, "second@example.com", active=False)
    post(client, f"/admin/users/{admin_id}/role", "/admin/users", role="dpo")
    assert staff(app, ADMIN_EMAIL).role == Role.ADMIN
    post(client, f"/admin/users/{second}/active", "/admin/users", active="1")
    assert (
        post(client, f"/admin/users/{admin_id}/role", "/admin/users", role="dpo").status_code == 302
    )
    assert staff(app, ADMIN_EMAIL).role == Role.DPO
    assert client.get("/admin/users").status_code == 403  # the role change holds at once
