"""The staff side: sign in, the queue by deadline, the plan, approval and the run."""

import io
import re

import sqlalchemy as sa
from pypdf import PdfReader

from core.audit import verify_chain
from core.extensions import db
from core.jobs import start_due_erasures
from core.models import DataSubjectRequest, Proof, RunStatus, Status
from tests.conftest import csrf_token, outbox_messages
from tests.flows import login, plan_digest_in, submit, verify_latest


def crm_count(crm_url: str, sql: str, **params) -> int:
    engine = sa.create_engine(crm_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar_one()
    finally:
        engine.dispose()


def test_staff_pages_need_a_sign_in_and_a_wrong_password_is_refused(client):
    assert client.get("/admin/").status_code == 302
    page = client.get("/admin/login")
    response = client.post(
        "/admin/login",
        data={"email": "dpo@example.com", "password": "nope", "csrf_token": csrf_token(page.text)},
    )
    assert response.status_code == 200 and "Wrong email or password" in response.text
    assert client.get("/admin/").status_code == 302


def test_queue_lists_requests_by_due_date(app, client):
    submit(client, "alice@example.com")
    submit(client, "li.wei@example.cn")
    with app.app_context():
        first, second = db.session.scalars(
            sa.select(DataSubjectRequest).order_by(DataSubjectRequest.id)
        ).all()
        first.due_on = second.due_on.replace(year=second.due_on.year + 1)
        db.session.commit()
        refs = [second.reference, first.reference]
    login(client)
    text = client.get("/admin/").text
    assert text.index(refs[0]) < text.index(refs[1])


def test_dpo_reviews_the_plan_approves_and_the_erasure_runs_with_proof(app, client, crm_url):
    submit(client, "alice@example.com")
    verify_latest(app, client)
    with app.app_context():
        reference = db.session.scalars(sa.select(DataSubjectRequest.reference)).one()
    login(client)
    page = client.get(f"/admin/requests/{reference}")
    assert page.status_code == 200
    for table in ("customers", "orders", "support_tickets"):
        assert table in page.text
    tickets = crm_count(
        crm_url,
        "SELECT count(*) FROM support_tickets t JOIN customers c "
        "ON c.id = t.customer_id WHERE c.email = 'alice@example.com'",
    )
    assert re.search(rf"support_tickets</td><td>{tickets}</td><td>delete", page.text)

    approve = client.post(
        f"/admin/requests/{reference}/approve",
        data={
            "csrf_token": csrf_token(page.text),
            "plan_digest": re.search(
                r'name="plan_digest" type="hidden" '
                r'value="([0-9a-f]+)"',
                page.text,
            )[1],
            "confirm_reference": reference,
        },
    )
    assert approve.status_code == 302
    with app.app_context():
        # With no cooling-off period the erasure starts at once; nothing is left to start.
        assert start_due_erasures.delay().get() == 0
        request = db.session.scalars(sa.select(DataSubjectRequest)).one()
        assert request.status == Status.COMPLETED
        assert [run.status for run in request.runs] == [RunStatus.COMPLETED]
        assert request.runs[0].rows_affected["support_tickets"] == tickets
        assert verify_chain(db.session).ok
        proof_id = db.session.scalars(sa.select(Proof.id)).one()
    assert (
        crm_count(crm_url, "SELECT count(*) FROM customers WHERE email = 'alice@example.com'") == 0
    )
    # Orders stay for the tax authority; the other customers are untouched.
    assert crm_count(crm_url, "SELECT count(*) FROM customers") > 10
    assert "complete" in outbox_messages(app)[-1]["Subject"]
    pdf = client.get(f"/admin/proofs/{proof_id}.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    reader = PdfReader(io.BytesIO(pdf.data))
    everything = " ".join(page.extract_text() for page in reader.pages) + " ".join(
        data[0].decode() for data in reader.attachments.values()
    )
    assert reference in everything
    for personal in ("alice", "Alice Example", "London"):
        assert personal.lower() not in everything.lower()


def test_approval_is_refused_when_the_data_changed_since_the_review(app, client, crm_url):
    submit(client, "alice@example.com")
    verify_latest(app, client)
    with app.app_context():
        reference = db.session.scalars(sa.select(DataSubjectRequest.reference)).one()
    login(client)
    page = client.get(f"/admin/requests/{reference}")
    digest = plan_digest_in(page.text)
    engine = sa.create_engine(crm_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO support_tickets (customer_id, opened_at, subject, body) "
                "SELECT id, '2026-01-01', 'new', 'new' FROM customers "
                "WHERE email = 'alice@example.com'"
            )
        )
    engine.dispose()
    response = client.post(
        f"/admin/requests/{reference}/approve",
        follow_redirects=True,
        data={
            "csrf_token": csrf_token(page.text),
            "plan_digest": digest,
            "confirm_reference": reference,
        },
    )
    assert "Review the new plan" in response.text
    with app.app_context():
        assert db.session.scalars(sa.select(DataSubjectRequest.status)).one() == Status.VERIFIED


def test_only_a_dpo_may_approve(app, client):
    from core.models import Role, StaffUser
    from core.security import hash_password

    submit(client, "alice@example.com")
    verify_latest(app, client)
    with app.app_context():
        db.session.add(
            StaffUser(
                email="auditor@example.com",
                role=Role.AUDITOR,
                password_hash=hash_password("auditor password"),
            )
        )
        db.session.commit()
        reference = db.session.scalars(sa.select(DataSubjectRequest.reference)).one()
    login(client, "auditor@example.com", "auditor password")
    page = client.get(f"/admin/requests/{reference}")
    assert page.status_code == 200 and "Approve erasure" not in page.text
    digest = re.search(r'name="plan_digest" type="hidden" value="([0-9a-f]+)"', page.text)
    response = client.post(
        f"/admin/requests/{reference}/approve",
        data={"csrf_token": csrf_token(page.text), "plan_digest": digest[1] if digest else "x"},
    )
    assert response.status_code == 403
    with app.app_context():
        assert db.session.scalars(sa.select(DataSubjectRequest.status)).one() == Status.VERIFIED
