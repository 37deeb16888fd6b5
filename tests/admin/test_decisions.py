"""The DPO refuses a request on a legal ground, or extends its deadline once; the person is told."""

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from core import deadlines
from core.audit import verify_chain
from core.decisions import (
    GROUNDS,
    decision_note,
    deny_request,
    extend_request,
    extension_note,
    find_ground,
    grounds_for,
)
from core.extensions import db
from core.models import AuditEvent, DataSubjectRequest, RequestType, Role, StaffUser, Status
from core.operations import DomainError, find_request, received_on, submit_request, verify_email
from core.security import hash_password
from tests.conftest import DPO_EMAIL, csrf_token, outbox_messages
from tests.flows import login, submit, verify_latest

AUTHORITY = "the Data Protection Commission"
AUTHORITY_URL = "https://www.dataprotection.ie/"
EDPB_MEMBERS = "https://www.edpb.europa.eu/about-edpb/about-edpb/members_en"


def verified_request(
    app,
    request_type: RequestType = RequestType.ERASURE,
    language: str = "en",
    email: str = "alice@example.com",
) -> str:
    """Record a request whose address is proven, ready for the DPO; return its reference."""
    with app.app_context():
        request, _ = submit_request(db.session, email, request_type, language)
        verify_email(db.session, request)
        db.session.commit()
        return request.reference


def load(app, reference: str) -> DataSubjectRequest:
    """Return a fresh copy of the request, read in the current app context."""
    db.session.expire_all()
    return find_request(db.session, reference)


def refuse(client, reference: str, reason: str, note: str = "", confirm: str | None = None):
    page = client.get(f"/admin/requests/{reference}")
    return client.post(
        f"/admin/requests/{reference}/deny",
        data={
            "deny-csrf_token": csrf_token(page.text),
            "deny-reason": reason,
            "deny-note": note,
            "deny-confirm_reference": reference if confirm is None else confirm,
        },
    )


def extend(client, reference: str, reason: str = "complexity", note: str = ""):
    page = client.get(f"/admin/requests/{reference}")
    return client.post(
        f"/admin/requests/{reference}/extend",
        data={
            "extend-csrf_token": csrf_token(page.text),
            "extend-reason": reason,
            "extend-note": note,
        },
    )


def body_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def add_staff(app, email: str, role: Role) -> None:
    with app.app_context():
        db.session.add(StaffUser(email=email, role=role, password_hash=hash_password("pw " * 4)))
        db.session.commit()


def test_every_type_has_the_common_grounds_and_only_erasure_has_article_17():
    common = {"identity-not-verified", "art12-5-manifestly-unfounded", "art12-5-excessive"}
    codes = {kind: {ground.code for ground in grounds_for(kind)} for kind in RequestType}
    assert all(common <= found for found in codes.values())
    assert codes[RequestType.OBJECTION] == common  # Art. 21(3): an absolute right
    assert {code for code in codes[RequestType.ERASURE] if code.startswith("art17-3-")} == {
        "art17-3-a-expression",
        "art17-3-b-legal-obligation",
        "art17-3-c-public-health",
        "art17-3-d-archiving-research",
        "art17-3-e-legal-claims",
    }
    assert codes[RequestType.ACCESS] == common | {"art15-4-rights-of-others"}
    assert codes[RequestType.PORTABILITY] == common | {"art20-4-rights-of-others"}
    assert {g.code for g in GROUNDS if g.needs_note} == common - {"identity-not-verified"}
    assert all(len(ground.code) <= 40 for ground in GROUNDS)


@pytest.mark.parametrize(
    ("request_type", "reason", "note"),
    [
        (RequestType.ERASURE, "art17-3-b-legal-obligation", ""),
        (RequestType.ERASURE, "art17-3-e-legal-claims", "Alice's claim against us is in court."),
        (RequestType.ACCESS, "art15-4-rights-of-others", "The tickets quote other customers."),
        (RequestType.PORTABILITY, "identity-not-verified", ""),
        (RequestType.OBJECTION, "art12-5-manifestly-unfounded", "Sent to harass our staff."),
        (RequestType.ERASURE, "art12-5-excessive", "The fifth identical request this week."),
    ],
)
def test_the_dpo_refuses_on_a_ground_and_the_person_is_told_why(
    app, client, request_type, reason, note
):
    reference = verified_request(app, request_type)
    login(client)
    page = client.get(f"/admin/requests/{reference}")
    assert "Refuse this request" in page.text and f'value="{reason}"' in page.text
    response = refuse(client, reference, reason, note)
    assert response.status_code == 302
    with app.app_context():
        dsr = load(app, reference)
        assert dsr.status == Status.DENIED
        assert dsr.decision_reason == reason
        assert dsr.decided_by.email == DPO_EMAIL and dsr.decided_at is not None
        assert decision_note(dsr) == note
        assert (dsr.decision_note_sealed is None) == (not note)
        if note:
            assert note.encode() not in dsr.decision_note_sealed
        with app.test_request_context():
            label = str(find_ground(reason).label)
    message = outbox_messages(app)[-1]
    assert reference in message["Subject"] and "refused" in message["Subject"]
    assert label in body_of(message)
    if note:
        assert note in body_of(message)
    shown = client.get(f"/admin/requests/{reference}").text
    assert "Refuse this request" not in shown and "Extend the deadline" not in shown
    assert label.replace("'", "&#39;") in shown and DPO_EMAIL in shown
    if note:
        assert note.replace("'", "&#39;") in shown


@pytest.mark.parametrize("reason", ["art12-5-manifestly-unfounded", "art12-5-excessive"])
def test_manifestly_unfounded_and_excessive_need_a_justification(app, client, reason):
    reference = verified_request(app)
    login(client)
    sent = len(outbox_messages(app))
    response = refuse(client, reference, reason, note="   ")
    assert response.status_code == 200
    assert "Not refused" in response.text and "needs a justification" in response.text
    with app.app_context():
        dsr = load(app, reference)
        assert dsr.status == Status.VERIFIED and dsr.decision_reason is None
    assert len(outbox_messages(app)) == sent


def test_a_ground_of_another_request_type_is_refused(app, client):
    reference = verified_request(app, RequestType.OBJECTION)
    login(client)
    page = client.get(f"/admin/requests/{reference}")
    assert "art17-3-e-legal-claims" not in page.text
    response = refuse(client, reference, "art17-3-e-legal-claims")
    assert response.status_code == 200 and "Not refused" in response.text
    with app.app_context():
        dsr = load(app, reference)
        assert dsr.status == Status.VERIFIED
        dpo = db.session.scalars(sa.select(StaffUser).where(StaffUser.email == DPO_EMAIL)).one()
        with pytest.raises(DomainError, match="does not apply to a request of type objection"):
            deny_request(db.session, dsr, dpo, "art17-3-e-legal-claims", "")
        with pytest.raises(DomainError, match="is not a ground for refusal"):
            deny_request(db.session, dsr, dpo, "we-would-rather-not", "")
        assert dsr.status == Status.VERIFIED


def test_only_a_verified_request_can_be_refused(app):
    with app.app_context():
        dsr, _ = submit_request(db.session, "bob@example.com", RequestType.ERASURE)
        dpo = db.session.scalars(sa.select(StaffUser).where(StaffUser.email == DPO_EMAIL)).one()
        with pytest.raises(DomainError, match="only a verified request can be refused"):
            deny_request(db.session, dsr, dpo, "identity-not-verified", "")
        assert dsr.status == Status.SUBMITTED


@pytest.mark.parametrize("typed", ["", "DSR-00000000", "the reference"])
def test_a_refusal_needs_the_reference_typed_to_confirm(app, client, typed):
    reference = verified_request(app)
    login(client)
    sent = len(outbox_messages(app))
    response = refuse(client, reference, "art17-3-b-legal-obligation", confirm=typed)
    assert response.status_code == 200 and "Not refused" in response.text
    with app.app_context():
        assert load(app, reference).status == Status.VERIFIED
    assert len(outbox_messages(app)) == sent


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.AUDITOR])
def test_operators_and_auditors_may_neither_refuse_nor_extend(app, client, role):
    reference = verified_request(app)
    add_staff(app, f"{role}@example.com", role)
    login(client, f"{role}@example.com", "pw " * 4)
    page = client.get(f"/admin/requests/{reference}")
    assert page.status_code == 200
    assert "Refuse this request" not in page.text and "Extend the deadline" not in page.text
    token = csrf_token(page.text)
    denied = client.post(
        f"/admin/requests/{reference}/deny",
        data={
            "deny-csrf_token": token,
            "deny-reason": "identity-not-verified",
            "deny-confirm_reference": reference,
        },
    )
    extended = client.post(
        f"/admin/requests/{reference}/extend",
        data={"extend-csrf_token": token, "extend-reason": "complexity"},
    )
    assert denied.status_code == 403 and extended.status_code == 403
    with app.app_context():
        dsr = load(app, reference)
        assert dsr.status == Status.VERIFIED and dsr.extended_due_on is None


def test_the_refusal_email_gives_the_right_to_complain_and_to_go_to_court(app, client):
    reference = verified_request(app)
    login(client)
    refuse(client, reference, "art17-3-e-legal-claims")
    message = outbox_messages(app)[-1]
    body = body_of(message)
    assert message["Subject"] == f"Your privacy request {reference} is refused"
    assert reference in body and "establish, exercise or defend legal claims" in body
    assert "Our explanation" not in body  # no note was written
    assert "lodge a complaint with your data protection supervisory authority" in body
    assert EDPB_MEMBERS in body and "judicial remedy" in body and "77 and 79" in body
    assert "/status/" in body
    html = message.get_body(("html",)).get_content()
    assert "lodge a complaint" in html and EDPB_MEMBERS in html


def test_the_refusal_email_is_in_the_language_of_the_request(app, client):
    app.config.update(SUPERVISORY_AUTHORITY=AUTHORITY, SUPERVISORY_AUTHORITY_URL=AUTHORITY_URL)
    reference = verified_request(app, language="ru")
    login(client)
    refuse(client, reference, "art12-5-excessive", note="Пятый одинаковый запрос за неделю.")
    message = outbox_messages(app)[-1]
    body = body_of(message)
    assert reference in message["Subject"] and reference in body
    assert "Здравствуйте" in body and "Пятый одинаковый запрос за неделю." in body
    # The configured authority is a proper name: it is given as it was set.
    assert AUTHORITY in body and AUTHORITY_URL in body
    assert "12(5)" in body and "77" in body and "79" in body
    assert 'lang="ru"' in message.get_body(("html",)).get_content()


def test_the_deadline_is_extended_once_by_two_months_and_the_person_is_told(app, client):
    reference = verified_request(app)
    login(client)
    with app.app_context():
        dsr = load(app, reference)
        received = received_on(dsr).date()
        expected = deadlines.due_on(
            "gdpr-eu",
            received,
            country=dsr.holiday_country,
            subdivision=dsr.holiday_subdivision,
            extended=True,
        )
        calendar = deadlines.get_calendar(dsr.holiday_country, dsr.holiday_subdivision)
        first_due = dsr.due_on
    # GDPR Art. 12(3): one month, then two further months, rolled to a working day.
    assert expected == deadlines.roll_forward(deadlines.add_months(received, 3), calendar)
    page = client.get(f"/admin/requests/{reference}")
    assert "Extend the deadline" in page.text and expected.isoformat() in page.text
    response = extend(client, reference, "number-of-requests", "Our archive team is on leave.")
    assert response.status_code == 302
    with app.app_context():
        dsr = load(app, reference)
        assert dsr.due_on == first_due and dsr.extended_due_on == expected
        assert dsr.effective_due_on == expected and dsr.extension_reason == "number-of-requests"
        assert extension_note(dsr) == "Our archive team is on leave."
        extended_at = dsr.extended_at
    message = outbox_messages(app)[-1]
    body = body_of(message)
    assert reference in message["Subject"] and "more time" in message["Subject"]
    assert expected.isoformat() in body and "large number of requests" in body
    assert "Our archive team is on leave." in body
    assert "lodge a complaint" in body and "judicial remedy" in body and EDPB_MEMBERS in body
    shown = client.get(f"/admin/requests/{reference}").text
    assert "Extend the deadline" not in shown and "Deadline extension" in shown
    assert "Our archive team is on leave." in shown

    sent = len(outbox_messages(app))
    again = extend(client, reference, "complexity")
    assert again.status_code == 200 and "already been extended once" in again.text
    with app.app_context():
        dsr = load(app, reference)
        assert dsr.extended_at == extended_at and dsr.extension_reason == "number-of-requests"
    assert len(outbox_messages(app)) == sent


def test_no_extension_once_the_first_due_date_has_passed(app, client):
    reference = verified_request(app)
    with app.app_context():
        dsr = load(app, reference)
        dsr.received_at -= timedelta(days=40)
        dsr.due_on = deadlines.due_on(dsr.jurisdiction, received_on(dsr).date())
        db.session.commit()
    login(client)
    page = client.get(f"/admin/requests/{reference}")
    assert "Extend the deadline" not in page.text
    response = extend(client, reference)
    assert response.status_code == 200 and "can no longer be extended" in response.text
    with app.app_context():
        dsr = load(app, reference)
        assert dsr.extended_due_on is None and dsr.extended_at is None


def test_a_closed_request_cannot_be_extended_and_unknown_reasons_are_refused(app):
    reference = verified_request(app)
    with app.app_context():
        dsr = load(app, reference)
        dpo = db.session.scalars(sa.select(StaffUser).where(StaffUser.email == DPO_EMAIL)).one()
        with pytest.raises(DomainError, match="not a reason for extending"):
            extend_request(db.session, dsr, dpo, "we-are-busy", "")
        deny_request(db.session, dsr, dpo, "identity-not-verified", "")
        with pytest.raises(DomainError, match="it is closed"):
            extend_request(db.session, dsr, dpo, "complexity", "")
        assert dsr.extended_due_on is None


def test_the_audit_chain_holds_the_decisions_but_never_the_notes(app, client):
    reference = verified_request(app)
    login(client)
    extend(client, reference, "complexity", "Ticket 4411 mentions Alice's illness.")
    refuse(client, reference, "art17-3-b-legal-obligation", "Alice's invoices: kept 7 years.")
    with app.app_context():
        assert load(app, reference).status == Status.DENIED
        assert verify_chain(db.session).ok
        events = db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.reference == reference)
        ).all()
        by_action = {event.action: event for event in events}
        assert by_action["status.denied"].details["reason"] == "art17-3-b-legal-obligation"
        assert by_action["status.denied"].actor == f"staff:{DPO_EMAIL}"
        extended = by_action["request.extended"].details
        assert extended["reason"] == "complexity"
        assert extended["extended_due_on"] == load(app, reference).extended_due_on.isoformat()
        logged = json.dumps([[e.actor, e.action, e.details] for e in events], ensure_ascii=False)
    for secret in ("Ticket 4411", "illness", "invoices", "7 years"):
        assert secret not in logged


def test_the_status_page_says_why_a_request_was_refused_or_extended(app, client):
    submit(client, "alice@example.com", "access")
    status = verify_latest(app, client)
    submit(client, "bob@example.com", "erasure")
    other_status = verify_latest(app, client)
    with app.app_context():
        access, erasure = db.session.scalars(
            sa.select(DataSubjectRequest.reference).order_by(DataSubjectRequest.id)
        ).all()
    staff = app.test_client()
    login(staff)
    assert extend(staff, access, "complexity").status_code == 302
    page = client.get(status).text
    assert "Why we need more time" in page and "Your request is complex" in page
    assert "lodge a complaint" in page and EDPB_MEMBERS in page
    assert refuse(staff, erasure, "art17-3-e-legal-claims").status_code == 302
    page = client.get(other_status).text
    assert "Refused" in page and "Why we refused" in page
    assert "establish, exercise or defend legal claims" in page
    assert "lodge a complaint" in page
    assert "Cancel my request" not in page
