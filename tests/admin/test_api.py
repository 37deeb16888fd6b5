"""The JSON API under /api/v1: keys, each endpoint's happy path and its errors."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from core.api_keys import ApiKey, create_api_key
from core.cli import cli
from core.extensions import db
from core.models import AuditEvent, DataSubjectRequest, Proof, Role, StaffUser, Status
from tests.conftest import DPO_EMAIL, outbox_messages

ALICE = "alice@example.com"


def today():
    """Return today in the controller's time zone, as the app sees it."""
    return datetime.now(ZoneInfo(os.environ.get("LETHE_TIMEZONE", "Europe/Dublin"))).date()


def make_key(app, role: Role = Role.DPO, name: str | None = None, owner: str | None = None) -> str:
    """Create an API key with ``role`` and return the key text."""
    with app.app_context():
        staff = None
        if owner:
            staff = db.session.scalars(sa.select(StaffUser).where(StaffUser.email == owner)).one()
        _, token = create_api_key(db.session, name or f"test-{role}", role, "test", owner=staff)
        db.session.commit()
    return token


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def intake(**fields) -> dict:
    body = {
        "email": ALICE,
        "type": "erasure",
        "channel": "phone",
        "received_on": today().isoformat(),
        "identity_method": "callback",
        "identity_note": "called back the number on file",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def submit_verified(app, client, token: str, **fields) -> str:
    """Record a request whose identity staff checked; return its reference."""
    response = client.post("/api/v1/requests", json=intake(**fields), headers=auth(token))
    assert response.status_code == 201, response.text
    return response.get_json()["request"]["reference"]


def events(app, reference: str) -> list[tuple[str, str]]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(AuditEvent.actor, AuditEvent.action)
            .where(AuditEvent.reference == reference)
            .order_by(AuditEvent.position)
        ).all()
    return [tuple(row) for row in rows]


def test_submit_records_a_verified_request_as_the_key(app, client):
    token = make_key(app, Role.OPERATOR, name="crm-sync")
    response = client.post("/api/v1/requests", json=intake(country="GB"), headers=auth(token))
    assert response.status_code == 201
    body = response.get_json()
    assert body["created"] is True
    request = body["request"]
    assert request["state"] == "verified"
    assert request["jurisdiction"] == "uk-gdpr"
    assert request["channel"] == "phone"
    assert request["identity_method"] == "callback"
    assert ALICE not in response.text  # the address is never sent back
    assert ("api:crm-sync", "request.submitted") in events(app, request["reference"])
    assert ("api:crm-sync", "status.verified") in events(app, request["reference"])
    # The same person asking the same thing again joins the open request.
    again = client.post("/api/v1/requests", json=intake(), headers=auth(token))
    assert again.status_code == 200
    assert again.get_json()["created"] is False
    assert again.get_json()["request"]["reference"] == request["reference"]


def test_submit_without_identity_check_emails_a_link(app, client):
    token = make_key(app, Role.DPO)
    response = client.post(
        "/api/v1/requests",
        json=intake(identity_method=None, identity_note=None, type="access"),
        headers=auth(token),
    )
    assert response.status_code == 201
    body = response.get_json()
    assert body["request"]["state"] == "submitted"
    assert body["email_sent"] is True
    assert "/verify/" in outbox_messages(app)[-1].get_body(("plain",)).get_content()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": "not an address"}, "email"),
        ({"type": "delete-everything"}, "type"),
        ({"channel": "portal"}, "channel"),
        ({"received_on": "yesterday"}, "received_on"),
        ({"language": "fr"}, "language"),
        ({"country": "'; DROP TABLE x"}, "country"),
        ({"surprise": 1}, "surprise"),
        ({"email": None}, "email"),
    ],
)
def test_submit_refuses_a_bad_payload_with_the_field_and_writes_nothing(app, client, change, field):
    token = make_key(app, Role.DPO)
    with app.app_context():
        before = db.session.scalar(sa.select(sa.func.count()).select_from(DataSubjectRequest))
    body = intake(**change) if None not in change.values() else intake()
    if None in change.values():
        body.pop(field)
    response = client.post("/api/v1/requests", json=body, headers=auth(token))
    assert response.status_code == 422, response.text
    assert field in response.get_json()["fields"]
    assert response.get_json()["error"]
    with app.app_context():
        after = db.session.scalar(sa.select(sa.func.count()).select_from(DataSubjectRequest))
    assert after == before


def test_submit_refusals_by_the_rules_are_409_and_not_json_is_4xx(app, client):
    token = make_key(app, Role.DPO)
    future = (today() + timedelta(days=2)).isoformat()
    response = client.post("/api/v1/requests", json=intake(received_on=future), headers=auth(token))
    assert response.status_code == 409
    assert "future" in response.get_json()["error"]
    no_note = intake(identity_note=None)
    response = client.post("/api/v1/requests", json=no_note, headers=auth(token))
    assert response.status_code == 409
    response = client.post(
        "/api/v1/requests",
        data="{not json",
        headers={**auth(token), "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500
    assert "error" in response.get_json()
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(DataSubjectRequest)) == 0


def test_read_shows_clock_plan_and_runs_then_approve_erases(app, client):
    token = make_key(app, Role.DPO, name="desk", owner=DPO_EMAIL)
    reference = submit_verified(app, client, token)
    page = client.get(f"/api/v1/requests/{reference}", headers=auth(token))
    assert page.status_code == 200
    body = page.get_json()
    assert body["clock"]["days_left"] >= 0 and body["clock"]["overdue"] is False
    assert body["runs"] == []
    digest = body["plan"]["digest"]
    assert len(digest) == 64 and body["plan"]["systems"]
    # A wrong digest, a missing confirmation: refused, nothing changes.
    wrong = client.post(
        f"/api/v1/requests/{reference}/approve",
        json={"plan_digest": "0" * 64, "confirm_reference": reference},
        headers=auth(token),
    )
    assert wrong.status_code == 409
    unconfirmed = client.post(
        f"/api/v1/requests/{reference}/approve", json={"plan_digest": digest}, headers=auth(token)
    )
    assert unconfirmed.status_code == 422
    assert "confirm_reference" in unconfirmed.get_json()["fields"]
    assert (
        client.get(f"/api/v1/requests/{reference}", headers=auth(token)).get_json()["state"]
        == "verified"
    )

    approved = client.post(
        f"/api/v1/requests/{reference}/approve",
        json={"plan_digest": digest, "confirm_reference": reference.lower()},
        headers=auth(token),
    )
    assert approved.status_code == 200, approved.text
    done = client.get(f"/api/v1/requests/{reference}", headers=auth(token)).get_json()
    assert done["state"] == "completed"
    assert done["plan"] is None
    run = done["runs"][0]
    assert run["state"] == "completed" and run["attempts"] >= 1
    assert sum(run["rows_affected"].values()) > 0
    assert done["proofs"] and done["proofs"][0]["url"].endswith(".pdf")
    assert ("api:desk", "status.approved") in events(app, reference)
    with app.app_context():
        dsr = db.session.scalars(sa.select(DataSubjectRequest)).one()
        assert dsr.approved_by.email == DPO_EMAIL  # the owner answers for the key
    again = client.post(
        f"/api/v1/requests/{reference}/approve",
        json={"plan_digest": digest, "confirm_reference": reference},
        headers=auth(token),
    )
    assert again.status_code == 409


def test_deny_needs_a_ground_that_fits_and_the_reference(app, client):
    token = make_key(app, Role.DPO, name="desk")
    reference = submit_verified(app, client, token)
    url = f"/api/v1/requests/{reference}/deny"
    bad_ground = client.post(
        url, json={"reason": "because", "confirm_reference": reference}, headers=auth(token)
    )
    assert bad_ground.status_code == 422 and "reason" in bad_ground.get_json()["fields"]
    wrong_type = client.post(
        url,
        json={"reason": "art15-4-rights-of-others", "confirm_reference": reference},
        headers=auth(token),
    )
    assert wrong_type.status_code == 409
    no_note = client.post(
        url,
        json={"reason": "art12-5-excessive", "confirm_reference": reference},
        headers=auth(token),
    )
    assert no_note.status_code == 409 and "justification" in no_note.get_json()["error"]
    mismatch = client.post(
        url,
        json={"reason": "art17-3-e-legal-claims", "confirm_reference": "DSR-X"},
        headers=auth(token),
    )
    assert mismatch.status_code == 422
    denied = client.post(
        url,
        json={
            "reason": "art17-3-e-legal-claims",
            "note": "open lawsuit",
            "confirm_reference": reference,
        },
        headers=auth(token),
    )
    assert denied.status_code == 200, denied.text
    body = denied.get_json()
    assert body["request"]["state"] == "denied" and body["email_sent"] is True
    assert body["request"]["decision_reason"] == "art17-3-e-legal-claims"
    assert "open lawsuit" not in denied.text  # the note is sealed and not sent back
    assert ("api:desk", "status.denied") in events(app, reference)


def test_extend_once(app, client):
    token = make_key(app, Role.DPO, name="desk")
    reference = submit_verified(app, client, token)
    url = f"/api/v1/requests/{reference}/extend"
    assert client.post(url, json={"reason": "boredom"}, headers=auth(token)).status_code == 422
    extended = client.post(url, json={"reason": "complexity"}, headers=auth(token))
    assert extended.status_code == 200, extended.text
    request = extended.get_json()["request"]
    assert request["clock"]["extended"] is True
    assert request["clock"]["due_on"] > request["clock"]["first_due_on"]
    assert ("api:desk", "request.extended") in events(app, reference)
    assert client.post(url, json={"reason": "complexity"}, headers=auth(token)).status_code == 409


def test_list_filters_and_pages(app, client):
    token = make_key(app, Role.AUDITOR)
    writer = make_key(app, Role.OPERATOR)
    first = submit_verified(app, client, writer)
    second = submit_verified(app, client, writer, email="bob@example.com", type="access")
    listing = client.get("/api/v1/requests", headers=auth(token)).get_json()
    assert {r["reference"] for r in listing["requests"]} == {first, second}
    assert listing["has_more"] is False
    only = client.get("/api/v1/requests?type=access", headers=auth(token)).get_json()
    assert [r["reference"] for r in only["requests"]] == [second]
    paged = client.get("/api/v1/requests?per_page=1&page=2", headers=auth(token)).get_json()
    assert len(paged["requests"]) == 1 and paged["page"] == 2
    found = client.get(f"/api/v1/requests?q={ALICE}", headers=auth(token)).get_json()
    assert [r["reference"] for r in found["requests"]] == [first]
    assert (
        client.get("/api/v1/requests?overdue=1", headers=auth(token)).get_json()["requests"] == []
    )
    bad = client.get("/api/v1/requests?state=lost&page=0", headers=auth(token))
    assert bad.status_code == 422
    assert set(bad.get_json()["fields"]) == {"state", "page"}
    missing = client.get("/api/v1/requests/DSR-NOPE1234", headers=auth(token))
    assert missing.status_code == 404 and missing.get_json()["error"]


def test_proofs_list_by_period_and_download(app, client):
    token = make_key(app, Role.DPO, name="desk")
    auditor = make_key(app, Role.AUDITOR, name="audit-bot")
    reference = submit_verified(app, client, token)
    digest = client.get(f"/api/v1/requests/{reference}", headers=auth(token)).get_json()["plan"][
        "digest"
    ]
    client.post(
        f"/api/v1/requests/{reference}/approve",
        json={"plan_digest": digest, "confirm_reference": reference},
        headers=auth(token),
    )
    day = today().isoformat()
    listing = client.get(f"/api/v1/proofs?from={day}&to={day}", headers=auth(auditor))
    assert listing.status_code == 200
    proofs = listing.get_json()["proofs"]
    assert [p["reference"] for p in proofs] == [reference]
    later = (today() + timedelta(days=1)).isoformat()
    empty = client.get(f"/api/v1/proofs?from={later}", headers=auth(auditor)).get_json()
    assert empty["proofs"] == []
    backwards = client.get(f"/api/v1/proofs?from={later}&to={day}", headers=auth(auditor))
    assert backwards.status_code == 422
    pdf = client.get(proofs[0]["url"], headers=auth(auditor))
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    with app.app_context():
        assert pdf.data == db.session.scalars(sa.select(Proof.pdf)).one()
    assert ("api:audit-bot", "proof.downloaded") in events(app, reference)
    assert client.get("/api/v1/proofs/999999.pdf", headers=auth(auditor)).status_code == 404


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Basic YWxpY2U6c2VjcmV0",
        "Bearer lethe_",
        "Bearer lethe_000000000000_wrong-secret",
        "Bearer not-even-close",
        "Bearer " + "x" * 5000,
    ],
)
def test_missing_malformed_and_unknown_keys_get_401_without_detail(app, client, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/requests", headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {
        "error": "a valid API key is needed: Authorization: Bearer <key>",
        "fields": {},
    }
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_secret_and_revoked_key_get_the_same_401(app, client):
    token = make_key(app, Role.DPO, name="soon-gone")
    prefix, key_id, secret = token.split("_", 2)
    wrong = client.get("/api/v1/requests", headers=auth(f"{prefix}_{key_id}_{secret[:-1]}A"))
    assert client.get("/api/v1/requests", headers=auth(token)).status_code == 200
    result = app.test_cli_runner().invoke(cli, ["revoke-api-key", "--id", key_id])
    assert result.exit_code == 0, result.output
    revoked = client.get("/api/v1/requests", headers=auth(token))
    assert wrong.status_code == revoked.status_code == 401
    assert wrong.get_json() == revoked.get_json()
    with app.app_context():
        key = db.session.scalars(sa.select(ApiKey)).one()
        assert key.revoked_at is not None and key.last_used_at is not None
        assert secret not in key.secret_hash  # only a keyed hash is kept


def test_failed_authentications_are_rate_limited(app, client):
    app.config["API_AUTH_RATE_LIMIT"] = "3 per minute"
    token = make_key(app, Role.DPO)
    for _ in range(3):
        assert client.get("/api/v1/requests", headers=auth("lethe_x_y")).status_code == 401
    limited = client.get("/api/v1/requests", headers=auth(token))
    assert limited.status_code == 429
    assert "error" in limited.get_json()


def test_cookies_never_authenticate_and_csrf_is_not_asked(app, client):
    from tests.flows import login

    login(client)
    assert client.get("/api/v1/requests").status_code == 401
    token = make_key(app, Role.DPO)
    # No CSRF token: a key is the whole authentication.
    response = client.post("/api/v1/requests", json=intake(), headers=auth(token))
    assert response.status_code == 201


def test_create_api_key_command_prints_the_key_once(app):
    runner = app.test_cli_runner()
    result = runner.invoke(cli, ["create-api-key", "--name", "ERP", "--role", "operator"])
    assert result.exit_code == 0, result.output
    token = result.output.split("store it now): ")[1].strip()
    assert token.startswith("lethe_")
    with app.app_context():
        key = db.session.scalars(sa.select(ApiKey)).one()
        assert (key.name, key.role, key.created_by) == ("erp", Role.OPERATOR, "cli")
        assert token.split("_", 2)[2] not in key.secret_hash
    again = runner.invoke(cli, ["create-api-key", "--name", "erp", "--role", "dpo"])
    assert again.exit_code == 1 and "already exists" in again.output
    bad_owner = runner.invoke(
        cli, ["create-api-key", "--name", "x", "--role", "admin", "--owner", DPO_EMAIL]
    )
    assert bad_owner.exit_code == 1
    assert app.test_cli_runner().invoke(cli, ["revoke-api-key", "--id", "nope"]).exit_code == 1


def test_a_deactivated_owner_takes_the_key_along(app, client):
    token = make_key(app, Role.DPO, owner=DPO_EMAIL)
    assert client.get("/api/v1/requests", headers=auth(token)).status_code == 200
    with app.app_context():
        staff = db.session.scalars(sa.select(StaffUser)).one()
        staff.active = False
        db.session.commit()
    assert client.get("/api/v1/requests", headers=auth(token)).status_code == 401


def test_request_state_never_half_written_on_a_refused_approval(app, client):
    token = make_key(app, Role.DPO)
    reference = submit_verified(app, client, token)
    digest = client.get(f"/api/v1/requests/{reference}", headers=auth(token)).get_json()["plan"][
        "digest"
    ]
    response = client.post(
        f"/api/v1/requests/{reference}/approve",
        json={"plan_digest": digest, "confirm_reference": reference, "retain": {"crm": "nope"}},
        headers=auth(token),
    )
    assert response.status_code == 409
    with app.app_context():
        dsr = db.session.scalars(sa.select(DataSubjectRequest)).one()
        assert dsr.status == Status.VERIFIED and dsr.runs == []
