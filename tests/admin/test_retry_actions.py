"""Staff retry a failed system, or every failed one, from the request page."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from core.extensions import db
from core.jobs import start_due_erasures
from core.models import (
    AuditEvent,
    DataSubjectRequest,
    Role,
    RunStatus,
    StaffUser,
    Status,
    utcnow,
)
from core.security import hash_password
from core.systems import SystemConfig
from tests.conftest import DPO_EMAIL, csrf_token
from tests.core.test_retries import FlakyConnector
from tests.flows import approve, login, submit, verify_latest

OPERATOR = ("operator@example.com", "operator password, long")
AUDITOR = ("auditor@example.com", "auditor password, long")


@pytest.fixture
def broken(app):
    """Add systems that refuse for good; return a function that repairs them."""
    systems = app.extensions["lethe.systems"]
    systems.classes["flaky"] = FlakyConnector
    FlakyConnector.calls = []
    names = {"helpdesk": "Helpdesk", "billing": "Billing"}
    for name, label in names.items():
        systems.configs[name] = SystemConfig(name, "flaky", label, {"permanent": True})
    with app.app_context():
        for email, password, role in (*OPERATOR, Role.OPERATOR), (*AUDITOR, Role.AUDITOR):
            db.session.add(StaffUser(email=email, password_hash=hash_password(password), role=role))
        db.session.commit()

    def repair(*which: str) -> None:
        for name in which:
            systems.configs[name] = SystemConfig(
                name, "flaky", names[name], {"transient_failures": 0}
            )

    yield repair
    for name in names:
        systems.configs.pop(name, None)


def only_request() -> DataSubjectRequest:
    db.session.expire_all()
    return db.session.scalars(sa.select(DataSubjectRequest)).one()


def failed_erasure(app, client) -> str:
    submit(client, "alice@example.com")
    verify_latest(app, client)
    dpo = app.test_client()
    login(dpo)
    with app.app_context():
        reference = only_request().reference
    assert approve(dpo, reference).status_code == 302
    with app.app_context():
        request = only_request()
        assert request.status == Status.PARTIALLY_COMPLETED
        assert {r.system for r in request.runs if r.status == RunStatus.FAILED} == {
            "helpdesk",
            "billing",
        }
    return reference


def staff_client(app, account):
    staff = app.test_client()
    login(staff, *account)
    return staff


def test_an_operator_retries_one_failed_system(app, client, broken):
    reference = failed_erasure(app, client)
    with app.app_context():
        proofs = len(only_request().proofs)
        helpdesk = next(r.id for r in only_request().runs if r.system == "helpdesk")
    operator = staff_client(app, OPERATOR)
    page = operator.get(f"/admin/requests/{reference}")
    assert page.text.count("Retry this system") == 2
    assert "Retry all failed systems" in page.text
    broken("helpdesk")  # the owner fixed the API key
    response = operator.post(
        f"/admin/requests/{reference}/systems/{helpdesk}/retry",
        data={"csrf_token": csrf_token(page.text)},
    )
    assert response.status_code == 302
    page = operator.get(f"/admin/requests/{reference}")
    assert "Retrying: Helpdesk." in page.text
    assert page.text.count("Retry this system") == 1  # billing still failed
    with app.app_context():
        request = only_request()
        runs = {r.system: r for r in request.runs}
        assert runs["helpdesk"].status == RunStatus.COMPLETED
        assert runs["helpdesk"].attempts == 1  # a fresh budget of attempts
        assert runs["billing"].status == RunStatus.FAILED
        assert request.status == Status.PARTIALLY_COMPLETED
        assert len(request.proofs) == proofs + 1  # closed again: a new proof
        (event,) = db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "run.retry_requested")
        )
        assert event.actor == f"staff:{OPERATOR[0]}"
        assert event.details == {"system": "helpdesk", "previous_attempts": 1}


def test_retry_all_failed_systems_completes_the_request(app, client, broken):
    reference = failed_erasure(app, client)
    dpo = app.test_client()
    login(dpo)
    page = dpo.get(f"/admin/requests/{reference}")
    broken("helpdesk", "billing")
    response = dpo.post(
        f"/admin/requests/{reference}/systems/retry-failed",
        data={"csrf_token": csrf_token(page.text)},
    )
    assert response.status_code == 302
    with app.app_context():
        request = only_request()
        assert request.status == Status.COMPLETED
        assert {str(r.status) for r in request.runs} == {"completed"}
        retried = db.session.scalars(
            sa.select(AuditEvent.details).where(AuditEvent.action == "run.retry_requested")
        ).all()
        assert sorted(d["system"] for d in retried) == ["billing", "helpdesk"]
    page = dpo.get(f"/admin/requests/{reference}")
    assert "Retry this system" not in page.text
    # Nothing is left to retry: the request says so and changes nothing.
    response = dpo.post(
        f"/admin/requests/{reference}/systems/retry-failed",
        data={"csrf_token": csrf_token(page.text)},
        follow_redirects=True,
    )
    assert "Not retried: a completed request has nothing to retry." in response.text


def test_an_auditor_may_not_retry(app, client, broken):
    reference = failed_erasure(app, client)
    with app.app_context():
        helpdesk = next(r.id for r in only_request().runs if r.system == "helpdesk")
    auditor = staff_client(app, AUDITOR)
    page = auditor.get(f"/admin/requests/{reference}")
    assert page.status_code == 200
    assert "Retry this system" not in page.text
    token = csrf_token(page.text)
    broken("helpdesk", "billing")
    for url in (
        f"/admin/requests/{reference}/systems/{helpdesk}/retry",
        f"/admin/requests/{reference}/systems/retry-failed",
    ):
        assert auditor.post(url, data={"csrf_token": token}).status_code == 403
    with app.app_context():
        assert only_request().status == Status.PARTIALLY_COMPLETED
        assert sorted(FlakyConnector.calls) == ["billing", "helpdesk"]  # no new attempt


def test_a_paused_request_starts_no_system_until_resumed(app, client, broken):
    reference = failed_erasure(app, client)
    dpo = app.test_client()
    login(dpo)
    page = dpo.get(f"/admin/requests/{reference}")
    token = csrf_token(page.text)
    assert "Pause the request" in page.text
    dpo.post(f"/admin/requests/{reference}/systems/pause", data={"csrf_token": token})
    page = dpo.get(f"/admin/requests/{reference}")
    assert "Paused: no system of this request starts until you resume it." in page.text
    assert "Resume the request" in page.text
    broken("helpdesk", "billing")
    dpo.post(f"/admin/requests/{reference}/systems/retry-failed", data={"csrf_token": token})
    with app.app_context():
        request = only_request()
        # Retried, but paused: the systems wait, planned, and nothing was asked of them.
        assert request.status == Status.RUNNING
        assert {r.system: str(r.status) for r in request.runs if r.system != "crm"} == {
            "helpdesk": "planned",
            "billing": "planned",
        }
        assert sorted(FlakyConnector.calls) == ["billing", "helpdesk"]
    # An operator may retry but not pause or resume.
    operator = staff_client(app, OPERATOR)
    operator_token = csrf_token(operator.get(f"/admin/requests/{reference}").text)
    response = operator.post(
        f"/admin/requests/{reference}/systems/resume", data={"csrf_token": operator_token}
    )
    assert response.status_code == 403
    dpo.post(f"/admin/requests/{reference}/systems/resume", data={"csrf_token": token})
    with app.app_context():
        request = only_request()
        assert request.status == Status.COMPLETED
        assert not request.runs_paused
        actions = db.session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.actor == f"staff:{DPO_EMAIL}")
        ).all()
        assert "request.runs_paused" in actions and "request.runs_resumed" in actions


def test_a_request_paused_in_its_cooling_off_period_does_not_start_when_it_ends(
    app, client, broken
):
    broken("helpdesk", "billing")
    app.config["COOLING_OFF_MINUTES"] = 60
    submit(client, "alice@example.com")
    verify_latest(app, client)
    dpo = app.test_client()
    login(dpo)
    with app.app_context():
        reference = only_request().reference
    assert approve(dpo, reference).status_code == 302
    page = dpo.get(f"/admin/requests/{reference}")
    assert "Pause the request" in page.text
    token = csrf_token(page.text)
    dpo.post(f"/admin/requests/{reference}/systems/pause", data={"csrf_token": token})
    with app.app_context():
        request = only_request()
        assert request.status == Status.APPROVED and request.runs_paused
        request.cooling_off_until = utcnow() - timedelta(minutes=1)  # the hour has passed
        db.session.commit()
        assert start_due_erasures() == 1
        request = only_request()
        assert request.status == Status.RUNNING
        assert {str(run.status) for run in request.runs} == {"planned"}
        assert FlakyConnector.calls == []  # no system was touched while paused
    dpo.post(f"/admin/requests/{reference}/systems/resume", data={"csrf_token": token})
    with app.app_context():
        assert only_request().status == Status.COMPLETED
        assert sorted(FlakyConnector.calls) == ["billing", "helpdesk"]
