"""A closed request keeps the person's data for the retention period, then only what
proves what was done, naming nobody, remains."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from core.audit import verify_chain
from core.extensions import db
from core.jobs import purge_personal_data
from core.models import (
    AuditEvent,
    DataSubjectRequest,
    LegalHold,
    Status,
    SubjectIdentity,
    utcnow,
)
from core.operations import subject_email, submit_request, unseal
from core.proof_issue import check_proof
from tests.conftest import DPO_EMAIL, DPO_PASSWORD
from tests.flows import approve, login, submit, verify_latest

EMAIL = "alice@example.com"


def erased(app, client, **fields: str) -> str:
    """Submit, verify and approve the erasure of EMAIL; return its reference."""
    submit(client, EMAIL, **fields)
    verify_latest(app, client)
    staff = app.test_client()
    login(staff, DPO_EMAIL, DPO_PASSWORD)
    with app.app_context():
        reference = db.session.scalars(sa.select(DataSubjectRequest.reference)).one()
    assert approve(staff, reference).status_code == 302
    return reference


def the(reference: str) -> DataSubjectRequest:
    db.session.expire_all()
    return db.session.scalars(
        sa.select(DataSubjectRequest).where(DataSubjectRequest.reference == reference)
    ).one()


def closed_days_ago(reference: str, days: int) -> None:
    the(reference).status_changed_at = utcnow() - timedelta(days=days)
    db.session.commit()


def test_personal_data_is_purged_when_retention_ends_and_the_proof_remains(app, client):
    reference = erased(app, client, customer_number="C-1001", reason="Moving to Mars")
    with app.app_context():
        request = the(reference)
        assert request.status == Status.COMPLETED
        assert unseal(request, request.reason_sealed) == "Moving to Mars"
        # Within the retention period (a year by default), nothing is purged.
        closed_days_ago(reference, 364)
        assert purge_personal_data() == {"requests": 0, "addresses": 0}
        assert subject_email(the(reference)) == EMAIL
        closed_days_ago(reference, 366)
        assert purge_personal_data() == {"requests": 1, "addresses": 1}
        request = the(reference)
        assert request.purged_at is not None
        assert request.customer_number_sealed is None and request.reason_sealed is None
        assert request.identity.email_sealed is None and request.identity.purged_at
        # What proves the erasure remains, and still verifies.
        (proof,) = request.proofs
        assert check_proof(db.session, proof.pdf).authentic
        assert verify_chain(db.session).ok
        actions = db.session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.reference == reference)
        ).all()
        assert actions[-1] == "request.purged"
        # Once is enough.
        assert purge_personal_data() == {"requests": 0, "addresses": 0}
    staff = app.test_client()
    login(staff, DPO_EMAIL, DPO_PASSWORD)
    page = staff.get(f"/admin/requests/{reference}")
    assert page.status_code == 200
    assert "purged" in page.text and "Moving to Mars" not in page.text


def test_the_address_stays_while_another_request_of_the_person_needs_it(app, client):
    reference = erased(app, client)
    with app.app_context():
        submit_request(db.session, EMAIL, the(reference).request_type)  # a new one, open
        db.session.commit()
        closed_days_ago(reference, 400)
        assert purge_personal_data() == {"requests": 1, "addresses": 0}
        assert the(reference).purged_at is not None
        identity = db.session.scalars(sa.select(SubjectIdentity)).one()
        assert identity.email_sealed is not None


def test_a_legal_hold_on_the_person_keeps_their_address(app, client):
    reference = erased(app, client)
    with app.app_context():
        identity = db.session.scalars(sa.select(SubjectIdentity)).one()
        db.session.add(LegalHold(identity_id=identity.id, ground="art17-3-e-legal-claims"))
        closed_days_ago(reference, 400)
        assert purge_personal_data() == {"requests": 1, "addresses": 0}
        assert db.session.get(SubjectIdentity, identity.id).email_sealed is not None


def test_the_retention_period_is_configurable(app, client):
    app.config["RETENTION_DAYS"] = 30
    reference = erased(app, client)
    with app.app_context():
        closed_days_ago(reference, 31)
        assert purge_personal_data()["requests"] == 1
