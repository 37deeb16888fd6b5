"""The DPO's workspace: the queue's filters and counts, the clock and its pauses, legal
holds, partial approval, requests from other channels, and the request's timeline."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.clock import clock_of, recompute_due_dates, today
from core.demo import create_demo_crm, demo_systems_toml
from core.extensions import db
from core.models import (
    AuditEvent,
    Channel,
    DataSubjectRequest,
    LegalHold,
    RequestPause,
    RequestType,
    Role,
    RunStatus,
    StaffUser,
    Status,
)
from core.operations import find_request, submit_request, unseal, verify_email
from core.queue import refresh_paused_clocks
from core.security import hash_password
from core.systems import load_systems
from tests.conftest import csrf_token, outbox_messages
from tests.flows import approve, login

ALICE = "alice@example.com"


def make_request(
    app,
    email: str = ALICE,
    kind: RequestType = RequestType.ERASURE,
    *,
    status: Status | None = None,
    received: date | None = None,
    jurisdiction: str | None = None,
) -> str:
    """Record a request directly, in a given state and with a given receipt; its reference."""
    with app.app_context():
        received_at = (
            datetime(received.year, received.month, received.day, 12, tzinfo=UTC)
            if received
            else None
        )
        request, _ = submit_request(
            db.session, email, kind, received_at=received_at, jurisdiction=jurisdiction
        )
        if status is not None and status != Status.SUBMITTED:
            verify_email(db.session, request)
            request.status = status
        db.session.commit()
        return request.reference


def load(reference: str) -> DataSubjectRequest:
    db.session.expire_all()
    return find_request(db.session, reference)


def references_in(page_text: str) -> list[str]:
    return re.findall(r'class="mono">(DSR-\w+)</a>', page_text)


def add_staff(app, email: str, role: Role) -> None:
    with app.app_context():
        db.session.add(StaffUser(email=email, role=role, password_hash=hash_password("pw " * 5)))
        db.session.commit()


# --- the queue ------------------------------------------------------------------------


def local_today(app) -> date:
    with app.app_context():
        return today()


def test_overdue_counts_every_open_state_and_never_a_closed_one(app, client):
    long_ago = local_today(app) - timedelta(days=60)
    late = {
        status: make_request(app, f"{status}@example.com", status=status, received=long_ago)
        for status in (Status.SUBMITTED, Status.VERIFIED, Status.FAILED, Status.APPROVED)
    }
    closed = make_request(app, "done@example.com", status=Status.COMPLETED, received=long_ago)
    fresh = make_request(app, "new@example.com", status=Status.VERIFIED)
    login(client)
    page = client.get("/admin/?overdue=1")
    assert sorted(references_in(page.text)) == sorted(late.values())
    assert closed not in page.text and fresh not in page.text
    assert "<strong>4</strong> overdue" in client.get("/admin/").text
    assert "days late" in page.text
    assert "<strong>1</strong> completed" in client.get("/admin/").text


def test_the_queue_filters_by_state_type_jurisdiction_and_due_date(app, client):
    erasure = make_request(app, "a@example.com", status=Status.VERIFIED)
    access = make_request(app, "b@example.com", RequestType.ACCESS, status=Status.VERIFIED)
    ccpa = make_request(app, "c@example.com", jurisdiction="ccpa")
    login(client)
    assert references_in(client.get("/admin/?type=access").text) == [access]
    assert sorted(references_in(client.get("/admin/?state=verified").text)) == sorted(
        [erasure, access]
    )
    assert references_in(client.get("/admin/?jurisdiction=ccpa").text) == [ccpa]
    # GDPR: about a month; nothing is due within a week, all three within 50 days.
    assert references_in(client.get("/admin/?due_within=7").text) == []
    assert len(references_in(client.get("/admin/?due_within=50").text)) == 3
    nothing = client.get("/admin/?type=portability")
    assert "No request matches these filters." in nothing.text
    junk = client.get("/admin/?state=nonsense&due_within=soon&type=%27")
    assert junk.status_code == 200 and len(references_in(junk.text)) == 3


def test_the_queue_finds_a_request_by_reference_or_by_email_address(app, client):
    alice = make_request(app, ALICE)
    bob = make_request(app, "bob@example.com")
    login(client)
    assert references_in(client.get(f"/admin/?q={alice.lower()}").text) == [alice]
    assert references_in(client.get(f"/admin/?q={bob.removeprefix('DSR-')}").text) == [bob]
    # Addresses are stored encrypted; the search goes through their keyed hash.
    assert references_in(client.get("/admin/?q=ALICE@Example.com").text) == [alice]
    assert references_in(client.get("/admin/?q=carol@example.com").text) == []


# --- the clock ------------------------------------------------------------------------


@pytest.mark.parametrize(("rule", "due"), [("gdpr-eu", "2026-04-09"), ("uk-gdpr", "2026-04-10")])
def test_the_worked_pause_example_of_the_legal_brief(app, rule, due):
    reference = make_request(app, received=date(2026, 3, 2), jurisdiction=rule)
    with app.app_context():
        app.config["HOLIDAY_COUNTRY"] = None
        request = load(reference)
        request.holiday_country = None
        request.holiday_subdivision = None
        db.session.add(
            RequestPause(
                request=request,
                started_on=date(2026, 3, 3),
                ended_on=date(2026, 3, 10),
                reason="identity-information",
            )
        )
        db.session.flush()
        recompute_due_dates(request)
        assert request.due_on.isoformat() == due


def test_the_dpo_pauses_and_resumes_the_clock_and_the_due_date_moves(app, client):
    received = local_today(app) - timedelta(days=10)
    reference = make_request(app, status=Status.VERIFIED, received=received)
    login(client)
    page = client.get(f"/admin/requests/{reference}")
    assert "Pause the clock" in page.text
    client.post(f"/admin/requests/{reference}/pause", data={"csrf_token": csrf_token(page.text)})
    with app.app_context():
        request = load(reference)
        first_due = request.due_on
        assert request.pauses[0].ended_on is None
        # Seven days pass while the person looks for their documents.
        request.pauses[0].started_on = today() - timedelta(days=7)
        db.session.commit()
        assert clock_of(load(reference)).paused_days == 7
        assert refresh_paused_clocks(db.session, today()) == 1
        db.session.commit()
        assert load(reference).due_on > first_due
    page = client.get(f"/admin/requests/{reference}")
    assert "Paused" in page.text and "Resume the clock" in page.text
    client.post(f"/admin/requests/{reference}/resume", data={"csrf_token": csrf_token(page.text)})
    with app.app_context():
        request = load(reference)
        assert request.pauses[0].ended_on == today()
        assert request.due_on >= first_due + timedelta(days=7)
        actions = db.session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.reference == reference)
        ).all()
        assert "request.paused" in actions and "request.resumed" in actions


def test_a_ccpa_clock_cannot_be_paused(app, client):
    reference = make_request(app, status=Status.VERIFIED, jurisdiction="ccpa")
    login(client)
    page = client.get(f"/admin/requests/{reference}")
    assert "Pause the clock" not in page.text
    response = client.post(
        f"/admin/requests/{reference}/pause",
        data={"csrf_token": csrf_token(page.text)},
        follow_redirects=True,
    )
    assert "Not paused" in response.text
    with app.app_context():
        assert load(reference).pauses == []


def test_operators_and_auditors_cannot_pause_the_clock(app, client):
    reference = make_request(app, status=Status.VERIFIED)
    add_staff(app, "op@example.com", Role.OPERATOR)
    login(client, "op@example.com", "pw " * 5)
    page = client.get(f"/admin/requests/{reference}")
    response = client.post(
        f"/admin/requests/{reference}/pause", data={"csrf_token": csrf_token(page.text)}
    )
    assert response.status_code == 403
    with app.app_context():
        assert load(reference).pauses == []


# --- legal holds and partial approval ---------------------------------------------------


def crm_customer(crm_url: str, email: str = ALICE) -> tuple | None:
    engine = sa.create_engine(crm_url)
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT email, full_name FROM customers WHERE email = :e"), {"e": email}
        ).first()
    engine.dispose()
    return row


def test_a_hold_on_the_person_keeps_their_data_and_says_why(app, client, crm_url):
    reference = make_request(app, status=Status.VERIFIED)
    login(client)
    page = client.get(f"/admin/requests/{reference}")
    client.post(
        f"/admin/requests/{reference}/hold",
        data={
            "hold-csrf_token": csrf_token(page.text),
            "hold-system": "",
            "hold-ground": "art17-3-e-legal-claims",
            "hold-reason": "Dispute over invoice 2026-114",
        },
    )
    page = client.get(f"/admin/requests/{reference}")
    assert "Kept by legal hold #1" in page.text
    assert "Dispute over invoice 2026-114" in page.text
    assert re.search(r"<td>retain</td>", page.text)
    assert approve(client, reference).status_code == 302
    with app.app_context():
        request = load(reference)
        assert request.status == Status.COMPLETED
        [run] = request.runs
        assert run.status == RunStatus.RETAINED
        assert run.retained_ground == "art17-3-e-legal-claims" and run.hold_id == 1
        hold = db.session.get(LegalHold, 1)
        assert b"invoice" not in hold.reason_sealed
        details = db.session.scalars(sa.select(AuditEvent.details)).all()
        assert not any("invoice" in str(d) or ALICE in str(d) for d in details)
    assert crm_customer(crm_url) == (ALICE, "Alice Example")  # nothing was erased


def test_a_hold_placed_during_the_cooling_off_still_stops_erasure(app, client, crm_url):
    app.config["COOLING_OFF_MINUTES"] = 60
    reference = make_request(app, status=Status.VERIFIED)
    login(client)
    approve(client, reference)
    page = client.get("/admin/holds")
    client.post(
        "/admin/holds",
        data={
            "csrf_token": csrf_token(page.text),
            "email": "ALICE@example.com",
            "system": "crm",
            "ground": "art17-3-b-legal-obligation",
            "reason": "Unpaid invoice",
        },
    )
    with app.app_context():
        request = load(reference)
        request.cooling_off_until = request.approved_at  # the hour is over
        db.session.commit()
        from core.jobs import start_due_erasures

        start_due_erasures()
        request = load(reference)
        assert [run.status for run in request.runs] == [RunStatus.RETAINED]
        assert request.runs[0].hold_id is not None
    assert crm_customer(crm_url) == (ALICE, "Alice Example")


def test_a_released_hold_lets_the_next_erasure_through(app, client, crm_url):
    login(client)
    page = client.get("/admin/holds")
    client.post(
        "/admin/holds",
        data={
            "csrf_token": csrf_token(page.text),
            "email": "",
            "system": "crm",
            "ground": "art17-3-e-legal-claims",
            "reason": "Litigation hold on the whole CRM",
        },
    )
    page = client.get("/admin/holds")
    assert "every person in" in page.text and "Litigation hold" in page.text
    client.post("/admin/holds/1/release", data={"csrf_token": csrf_token(page.text)})
    assert "released" in client.get("/admin/holds").text
    reference = make_request(app, status=Status.VERIFIED)
    approve(client, reference)
    with app.app_context():
        assert [run.status for run in load(reference).runs] == [RunStatus.COMPLETED]
    assert crm_customer(crm_url) is None


def test_a_hold_needs_a_ground_a_reason_and_something_to_hold(app, client):
    login(client)
    page = client.get("/admin/holds")
    token = csrf_token(page.text)
    empty = client.post(
        "/admin/holds",
        data={
            "csrf_token": token,
            "email": "",
            "system": "",
            "ground": "art17-3-b-legal-obligation",
            "reason": "x",
        },
    )
    assert empty.status_code == 400 and "needs a person" in empty.text
    no_reason = client.post(
        "/admin/holds",
        data={
            "csrf_token": token,
            "email": ALICE,
            "system": "",
            "ground": "art17-3-b-legal-obligation",
            "reason": "",
        },
    )
    assert no_reason.status_code == 400 and "Say why." in no_reason.text
    bad_ground = client.post(
        "/admin/holds",
        data={
            "csrf_token": token,
            "email": ALICE,
            "system": "",
            "ground": "because",
            "reason": "x",
        },
    )
    assert bad_ground.status_code == 400
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(LegalHold)) == 0


def test_auditors_see_holds_but_cannot_place_or_release_them(app, client):
    add_staff(app, "audit@example.com", Role.AUDITOR)
    login(client, "audit@example.com", "pw " * 5)
    page = client.get("/admin/holds")
    assert page.status_code == 200 and "Place a hold" not in page.text
    response = client.post(
        "/admin/holds",
        data={
            "csrf_token": csrf_token(page.text),
            "email": ALICE,
            "ground": "art17-3-b-legal-obligation",
            "reason": "x",
        },
    )
    assert response.status_code == 403
    assert (
        client.post(
            "/admin/holds/1/release", data={"csrf_token": csrf_token(page.text)}
        ).status_code
        == 403
    )


@pytest.fixture
def two_systems(app, tmp_path: Path, crm_url: str) -> str:
    """Add a second system, "archive", a copy of the demo CRM; return its URL."""
    archive_url = f"sqlite:///{tmp_path / 'archive.sqlite'}"
    create_demo_crm(archive_url)
    archive = (
        demo_systems_toml(archive_url)
        .replace("[systems.crm", "[systems.archive")
        .replace('label = "Customer accounts"', 'label = "Old archive"')
    )
    file = tmp_path / "two.toml"
    file.write_text(demo_systems_toml(crm_url) + "\n" + archive.split("\n", 2)[2], encoding="utf-8")
    app.extensions["lethe.systems"] = load_systems(file)
    return archive_url


def test_partial_approval_keeps_one_system_under_its_ground(app, client, crm_url, two_systems):
    reference = make_request(app, status=Status.VERIFIED)
    login(client)
    page = client.get(f"/admin/requests/{reference}")
    assert 'name="retain-archive"' in page.text and 'name="retain-crm"' in page.text
    assert approve(client, reference, archive="art17-3-d-archiving-research").status_code == 302
    with app.app_context():
        request = load(reference)
        runs = {run.system: run for run in request.runs}
        assert runs["crm"].status == RunStatus.COMPLETED
        assert runs["archive"].status == RunStatus.RETAINED
        assert runs["archive"].retained_ground == "art17-3-d-archiving-research"
        assert all(step["action"] == "retain" for step in runs["archive"].plan["steps"])
        assert request.status == Status.COMPLETED
    assert crm_customer(crm_url) is None
    assert crm_customer(two_systems) == (ALICE, "Alice Example")


def test_keeping_every_system_is_a_refusal_not_an_approval(app, client, two_systems):
    reference = make_request(app, status=Status.VERIFIED)
    login(client)
    response = approve(
        client,
        reference,
        crm="art17-3-b-legal-obligation",
        archive="art17-3-b-legal-obligation",
    )
    assert (
        "refuse the request on that ground instead" in client.get(response.headers["Location"]).text
    )
    with app.app_context():
        assert load(reference).status == Status.VERIFIED


def test_erasure_is_approved_only_with_the_reference_typed(app, client):
    reference = make_request(app, status=Status.VERIFIED)
    login(client)
    page = client.get(f"/admin/requests/{reference}")
    digest = re.search(r'name="plan_digest" type="hidden" value="([0-9a-f]+)"', page.text)[1]
    response = client.post(
        f"/admin/requests/{reference}/approve",
        data={
            "csrf_token": csrf_token(page.text),
            "plan_digest": digest,
            "confirm_reference": "DSR-WRONG",
        },
        follow_redirects=True,
    )
    assert f"type {reference} to confirm" in response.text
    with app.app_context():
        assert load(reference).status == Status.VERIFIED


# --- requests from other channels -----------------------------------------------------


def intake(client, **fields: str):
    page = client.get("/admin/requests/new")
    data = {
        "csrf_token": csrf_token(page.text),
        "email": ALICE,
        "request_type": "erasure",
        "channel": "phone",
        "received_on": (date.today() - timedelta(days=5)).isoformat(),
        "language": "en",
        "country": "",
        "customer_number": "",
        "reason": "",
        "identity_method": "",
        "identity_note": "",
        **fields,
    }
    return client.post("/admin/requests/new", data=data)


def test_staff_record_a_phoned_request_with_its_real_date_and_the_person_confirms(app, client):
    login(client)
    response = intake(client, customer_number="C-1001")
    assert response.status_code == 302
    with app.app_context():
        request = db.session.scalars(sa.select(DataSubjectRequest)).one()
        assert request.channel == Channel.PHONE and request.created_by.role == Role.DPO
        assert request.status == Status.SUBMITTED
        assert clock_of(request).received == date.today() - timedelta(days=5)
        assert unseal(request, request.customer_number_sealed) == "C-1001"
        reference = request.reference
    message = outbox_messages(app)[-1]
    assert reference in message["Subject"]
    page = client.get(f"/admin/requests/{reference}").text
    assert "phone, recorded by" in page and "email not confirmed yet" in page


def test_staff_may_record_how_they_checked_identity_instead(app, client):
    login(client)
    intake(
        client,
        channel="letter",
        identity_method="postal",
        identity_note="Signed letter from the address on file",
    )
    with app.app_context():
        request = db.session.scalars(sa.select(DataSubjectRequest)).one()
        assert request.status == Status.VERIFIED and request.identity_method == "postal"
        assert b"Signed letter" not in request.identity_note_sealed
    assert outbox_messages(app) == []  # nobody needs to click a link
    missing = intake(client, email="bob@example.com", identity_method="document")
    assert missing.status_code == 400 and "say what you checked" in missing.text


def test_the_country_of_the_person_picks_the_legal_clock(app, client):
    login(client)
    intake(client, country="us-ca", received_on=local_today(app).isoformat())
    with app.app_context():
        request = db.session.scalars(sa.select(DataSubjectRequest)).one()
        assert request.jurisdiction == "ccpa" and request.subject_country == "US-CA"
        # 45 calendar days, receipt being day 1, rolled to a business day.
        assert 44 <= (request.due_on - clock_of(request).received).days <= 47


def test_a_second_record_of_the_same_request_joins_the_open_one(app, client):
    login(client)
    intake(client)
    response = intake(client, channel="email")
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(DataSubjectRequest)) == 1
    assert "already has an open erasure request" in client.get(response.headers["Location"]).text


def test_a_request_cannot_be_dated_in_the_future_and_auditors_cannot_record(app, client):
    login(client)
    future = intake(client, received_on=(local_today(app) + timedelta(days=2)).isoformat())
    assert future.status_code == 400 and "cannot be in the future" in future.text
    add_staff(app, "audit@example.com", Role.AUDITOR)
    auditor = app.test_client()
    login(auditor, "audit@example.com", "pw " * 5)
    assert auditor.get("/admin/requests/new").status_code == 403
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(DataSubjectRequest)) == 0


def test_the_request_page_shows_its_timeline(app, client):
    reference = make_request(app, status=Status.VERIFIED)
    login(client)
    approve(client, reference)
    page = client.get(f"/admin/requests/{reference}").text
    timeline = page[page.index("<h2>Timeline</h2>") :]
    order = [
        timeline.index(a) for a in ("request.submitted", "status.approved", "status.completed")
    ]
    assert order == sorted(order)
    assert ALICE not in timeline


# --- systems and settings ---------------------------------------------------------------


def test_admins_see_each_system_reached_now_and_the_settings_without_secrets(app, client, tmp_path):
    add_staff(app, "admin@example.com", Role.ADMIN)
    login(client, "admin@example.com", "pw " * 5)
    page = client.get("/admin/systems").text
    assert "Customer accounts" in page and "ready" in page and "not ready" not in page
    assert "LETHE_JURISDICTION" in page and "US-CA" in page
    for secret in ("SECRET_KEY", "DATA_KEY", "HASH_KEY"):
        assert app.config[secret] not in page
    assert app.config["SQLALCHEMY_DATABASE_URI"] not in page
    broken = tmp_path / "broken.toml"
    broken.write_text(
        demo_systems_toml(f"sqlite:///{tmp_path / 'missing' / 'crm.sqlite'}"), encoding="utf-8"
    )
    app.extensions["lethe.systems"] = load_systems(broken)
    assert "not ready" in client.get("/admin/systems").text


def test_only_admins_see_the_systems_page(app, client):
    login(client)
    assert client.get("/admin/systems").status_code == 403
