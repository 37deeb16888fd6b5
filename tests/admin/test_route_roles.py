"""Every route says who may use it, and the app enforces it.

To add a route: add its endpoint to ACCESS below — "public", "subject-link" (the signed
link in a person's email is the key), or the set of staff roles allowed; when GET and POST
differ, a dict per method. A route missing from the table fails the first test.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from flask import url_for
from werkzeug.routing import IntegerConverter

from core.api_keys import create_api_key
from core.extensions import db
from core.models import DataSubjectRequest, Role, StaffUser
from core.security import hash_password
from tests.conftest import DPO_EMAIL, DPO_PASSWORD, csrf_token
from tests.flows import login, submit, verify_latest

PUBLIC = "public"
SUBJECT_LINK = "subject-link"
ALL_STAFF = frozenset(Role)
#: Admins pass every role check, so they appear in every staff set.
DECIDERS = frozenset({Role.ADMIN, Role.DPO})
PREPARERS = frozenset({Role.ADMIN, Role.DPO, Role.OPERATOR})
REPORT_READERS = frozenset({Role.ADMIN, Role.DPO, Role.AUDITOR})
ADMINS = frozenset({Role.ADMIN})


class ApiKeyRoles(frozenset):
    """The roles whose API keys may use an /api/v1 route; no cookie ever opens it."""


ACCESS: dict[str, object] = {
    "static": PUBLIC,
    # The portal.
    "portal.index": PUBLIC,
    "portal.submitted": PUBLIC,
    "portal.verify": SUBJECT_LINK,
    "portal.status": SUBJECT_LINK,
    "portal.feedback": SUBJECT_LINK,
    "portal.download": SUBJECT_LINK,
    "portal.renew": SUBJECT_LINK,
    "portal.resend": SUBJECT_LINK,
    "portal.cancel": SUBJECT_LINK,
    # The owner of a system kept by hand: the signed link of their task email is the key.
    "portal.manual_task": SUBJECT_LINK,
    "portal.manual_task_done": PUBLIC,
    # A processor or recipient told of an erasure (Art. 19): the signed link is the key.
    "portal.recipient_ack": SUBJECT_LINK,
    "portal.recipient_ack_done": PUBLIC,
    # A system that confirms an erasure later (http [async]): its signed URL is the key.
    "portal.callback": SUBJECT_LINK,
    # Anyone may check a proof of deletion and fetch the keys that sign proofs.
    "portal.proof_check": PUBLIC,
    "portal.proof_keys": PUBLIC,
    "portal.proof_key_pem": PUBLIC,
    # Signing in and one's own account.
    "admin.login": PUBLIC,
    "admin.login_code": PUBLIC,
    "admin.logout": PUBLIC,
    "admin.account": ALL_STAFF,
    "admin.change_own_password": ALL_STAFF,
    "admin.two_factor": ALL_STAFF,
    "admin.two_factor_off": ALL_STAFF,
    # Staff accounts.
    "admin.users": ADMINS,
    "admin.systems_page": ADMINS,
    "admin.create_user": ADMINS,
    "admin.user_role": ADMINS,
    "admin.user_active": ADMINS,
    "admin.user_unlock": ADMINS,
    "admin.user_reset_two_factor": ADMINS,
    # Requests.
    "admin.queue": ALL_STAFF,
    "admin.dashboard": ALL_STAFF,
    "admin.yearly_csv": REPORT_READERS,
    # The auditor's side (tests/admin/test_audit.py): read only, downloads are audited.
    "admin.audit_requests": REPORT_READERS,
    "admin.audit_proofs_zip": REPORT_READERS,
    "admin.audit_log": REPORT_READERS,
    "admin.audit_log_csv": REPORT_READERS,
    "admin.audit_log_json": REPORT_READERS,
    "admin.audit_act_pdf": REPORT_READERS,
    "admin.audit_act_csv": REPORT_READERS,
    "admin.request_page": ALL_STAFF,
    "admin.new_request": PREPARERS,
    "admin.approve": DECIDERS,
    "admin.deny": DECIDERS,
    "admin.extend": DECIDERS,
    "admin.pause": DECIDERS,
    "admin.resume": DECIDERS,
    "admin.proof_pdf": ALL_STAFF,
    # Retrying failed systems (tests/admin/test_retry_actions.py).
    "admin.retry_run": PREPARERS,
    "admin.retry_failed": PREPARERS,
    "admin.pause_runs_view": DECIDERS,
    "admin.resume_runs_view": DECIDERS,
    # Legal holds.
    "admin.holds": {"GET": ALL_STAFF, "POST": DECIDERS},
    "admin.hold_request_subject": DECIDERS,
    "admin.release": DECIDERS,
    # Bulk erasure.
    "admin.bulk_list": ALL_STAFF,
    "admin.bulk_new": PREPARERS,
    "admin.bulk_upload": PREPARERS,
    "admin.bulk_segment": PREPARERS,
    "admin.bulk_batch": ALL_STAFF,
    "admin.bulk_approve": DECIDERS,
    "admin.bulk_discard": PREPARERS,
    "admin.bulk_resume": DECIDERS,
    "admin.bulk_summary": ALL_STAFF,
    # The JSON API (tests/admin/test_api.py): an API key of these roles, never a cookie.
    "api-docs.openapi_json": PUBLIC,
    "api.submit_request": ApiKeyRoles(PREPARERS),
    "api.list_requests": ApiKeyRoles(ALL_STAFF),
    "api.get_request": ApiKeyRoles(ALL_STAFF),
    "api.approve": ApiKeyRoles(DECIDERS),
    "api.deny": ApiKeyRoles(DECIDERS),
    "api.extend": ApiKeyRoles(DECIDERS),
    "api.list_proofs": ApiKeyRoles(REPORT_READERS),
    "api.get_proof_pdf": ApiKeyRoles(ALL_STAFF),
}

PASSWORDS = {
    Role.ADMIN: ("admin@example.com", "admin password, long"),
    Role.DPO: (DPO_EMAIL, DPO_PASSWORD),
    Role.OPERATOR: ("operator@example.com", "operator password, long"),
    Role.AUDITOR: ("auditor@example.com", "auditor password, long"),
}


def routes(app) -> list[tuple[str, str, object]]:
    """Return (endpoint, method, access) for every route and method of the app."""
    found = []
    for rule in app.url_map.iter_rules():
        access = ACCESS.get(rule.endpoint)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append(
                (rule.endpoint, method, access.get(method) if isinstance(access, dict) else access)
            )
    return found


def test_every_route_is_classified(app):
    missing = sorted({endpoint for endpoint, _, access in routes(app) if access is None})
    assert not missing, (
        "These endpoints are not in ACCESS of tests/admin/test_route_roles.py; say who may "
        "use them (public, subject-link, or a set of staff roles): " + ", ".join(missing)
    )


def snapshot() -> str:
    """Return a digest of every row of every table: it changes if anything is written."""
    digest = hashlib.sha256()
    for table in db.metadata.sorted_tables:
        rows = db.session.execute(sa.select(table)).all()
        digest.update(repr((table.name, sorted(map(repr, rows)))).encode())
    return digest.hexdigest()


def url_of(app, endpoint: str, samples: dict[str, object]) -> str:
    rule = next(r for r in app.url_map.iter_rules() if r.endpoint == endpoint)
    values = {}
    for name in rule.arguments:
        if name in samples:
            values[name] = samples[name]
        elif isinstance(rule._converters[name], IntegerConverter):
            values[name] = 999_999
        else:
            values[name] = "UNKNOWN"
    with app.test_request_context():
        return url_for(endpoint, **values)


def fetch(client, method: str, url: str, token: str | None = None) -> tuple[int, str]:
    """Return the status and the redirect path (if any) of one request, closed at once."""
    data = {"csrf_token": token} if token else None
    with client.open(url, method=method, data=data) as response:
        return response.status_code, urlsplit(response.headers.get("Location", "")).path


@pytest.fixture
def signed_in(app, client):
    """Return a signed-in client per role, and sample values for the routes' arguments."""
    submit(client, "alice@example.com")
    verify_latest(app, client)
    with app.app_context():
        for role, (email, password) in PASSWORDS.items():
            if role != Role.DPO:
                db.session.add(
                    StaffUser(email=email, role=role, password_hash=hash_password(password))
                )
        target = StaffUser(
            email="target@example.com", role=Role.OPERATOR, password_hash=hash_password("x" * 16)
        )
        db.session.add(target)
        db.session.commit()
        samples = {
            "reference": db.session.scalars(sa.select(DataSubjectRequest.reference)).one(),
            "user_id": target.id,
            "filename": "lethe.css",
        }
    clients = {}
    for number, (role, (email, password)) in enumerate(PASSWORDS.items()):
        staff = app.test_client()
        staff.environ_base["REMOTE_ADDR"] = f"192.0.2.{20 + number}"  # apart for rate limits
        login(staff, email, password)
        clients[role] = staff
    return clients, samples


def test_each_role_gets_exactly_what_the_table_says(app, signed_in):
    clients, samples = signed_in
    anonymous = app.test_client()
    anonymous_token = csrf_token(anonymous.get("/admin/login").text)
    tokens = {role: csrf_token(c.get("/admin/account").text) for role, c in clients.items()}
    problems = []
    for endpoint, method, access in routes(app):
        url = url_of(app, endpoint, samples)
        if access is None:
            continue  # test_every_route_is_classified names it
        if isinstance(access, ApiKeyRoles):
            continue  # test_api_keys_get_exactly_what_the_table_says
        if access in (PUBLIC, SUBJECT_LINK):
            if method == "GET" and fetch(anonymous, "GET", url)[0] >= 500:
                problems.append(f"GET {endpoint}: server error for a visitor")
            continue
        with app.app_context():
            before = snapshot()
        status, location = fetch(anonymous, method, url, anonymous_token)
        if (status, location) != (302, "/admin/login"):
            problems.append(f"{method} {endpoint}: a visitor got {status}, not the sign-in page")
        for role, staff in clients.items():
            if method != "GET" and role in access:
                continue  # allowed changes are each feature's own tests
            status, location = fetch(staff, method, url, tokens[role])
            if role not in access and status != 403:
                problems.append(f"{method} {endpoint}: {role} is not allowed but got {status}")
            if role in access and (
                status in (401, 403) or status >= 500 or location == "/admin/login"
            ):
                problems.append(f"GET {endpoint}: {role} is allowed but got {status}")
        if method != "GET":
            with app.app_context():
                if snapshot() != before:
                    problems.append(f"{method} {endpoint}: a refused request changed the database")
    assert not problems, "\n".join(problems)


def test_api_keys_get_exactly_what_the_table_says(app, signed_in):
    clients, samples = signed_in
    with app.app_context():
        keys = {
            role: create_api_key(db.session, f"matrix-{role}", role, "test")[1] for role in Role
        }
        db.session.commit()
    anonymous = app.test_client()
    problems = []
    for endpoint, method, access in routes(app):
        if not isinstance(access, ApiKeyRoles):
            continue
        url = url_of(app, endpoint, samples)
        body = None if method == "GET" else {}
        with app.app_context():
            before = snapshot()
        # A visitor, and a DPO signed in on the staff side: cookies are not a key.
        for who, client in (("a visitor", anonymous), ("a signed-in DPO", clients[Role.DPO])):
            status = client.open(url, method=method, json=body).status_code
            if status != 401:
                problems.append(f"{method} {endpoint}: {who} without a key got {status}")
        for role, key in keys.items():
            if method != "GET" and role in access:
                continue  # allowed changes are tests/admin/test_api.py's
            headers = {"Authorization": f"Bearer {key}"}
            status = anonymous.open(url, method=method, json=body, headers=headers).status_code
            if role not in access and status != 403:
                problems.append(
                    f"{method} {endpoint}: a {role} key is not allowed but got {status}"
                )
            if role in access and (status in (401, 403) or status >= 500):
                problems.append(f"{method} {endpoint}: a {role} key is allowed but got {status}")
        if method != "GET":
            with app.app_context():
                if snapshot() != before:
                    problems.append(f"{method} {endpoint}: a refused request changed the database")
    assert not problems, "\n".join(problems)


#: POST routes that authenticate by a signature over the body instead of a form token.
SIGNED_BODIES = {"portal.callback"}


def test_every_form_refuses_a_post_without_its_csrf_token(app, signed_in):
    clients, samples = signed_in
    admin = clients[Role.ADMIN]  # allowed everywhere: only the missing token can refuse
    anonymous = app.test_client()
    problems = []
    for endpoint, method, access in routes(app):
        if method == "GET" or isinstance(access, ApiKeyRoles) or endpoint in SIGNED_BODIES:
            continue
        url = url_of(app, endpoint, samples)
        with app.app_context():
            before = snapshot()
        status, location = fetch(anonymous, method, url)
        # A visitor may be sent to sign in first (nothing to forge without a session).
        if status != 400 and (status, location) != (302, "/admin/login"):
            problems.append(f"{method} {endpoint}: a visitor without a token got {status}")
        status, _ = fetch(admin, method, url)
        if status != 400:
            problems.append(f"{method} {endpoint}: an admin without a token got {status}")
        with app.app_context():
            if snapshot() != before:
                problems.append(f"{method} {endpoint}: a post without a token changed something")
    assert not problems, "\n".join(problems)


def test_every_page_sends_the_security_headers(app, signed_in):
    clients, samples = signed_in
    problems = []
    for endpoint, method, access in routes(app):
        if method != "GET" or isinstance(access, ApiKeyRoles):
            continue
        with clients[Role.ADMIN].get(url_of(app, endpoint, samples)) as response:
            headers = response.headers
        policy = headers.get("Content-Security-Policy", "")
        if "unsafe-inline" in policy or "frame-ancestors 'none'" not in policy:
            problems.append(f"{endpoint}: Content-Security-Policy is {policy!r}")
        if headers.get("Referrer-Policy") != "no-referrer":
            problems.append(f"{endpoint}: Referrer-Policy is {headers.get('Referrer-Policy')!r}")
        if headers.get("X-Content-Type-Options") != "nosniff":
            problems.append(f"{endpoint}: no X-Content-Type-Options: nosniff")
        if "Strict-Transport-Security" in headers:
            problems.append(f"{endpoint}: HSTS outside production")  # http://127.0.0.1 in dev
    assert not problems, "\n".join(problems)
