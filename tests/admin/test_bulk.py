"""Bulk erasure: a list or a segment becomes a batch, approved once, one proof per person."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from connectors.base import (
    CheckResult,
    Connector,
    ConnectorError,
    EraseResult,
    Outcome,
    Plan,
    Subject,
    VerifyResult,
)
from core.audit import verify_chain
from core.bulk_summary import check_summary
from core.cli import cli
from core.demo import DOCUMENTED
from core.extensions import db
from core.models import (
    AuditEvent,
    Channel,
    DataSubjectRequest,
    ErasureBatch,
    Proof,
    Role,
    StaffUser,
    Status,
    SubjectIdentity,
)
from core.security import hash_password
from core.systems import SystemConfig, Systems
from tests.conftest import csrf_token, outbox_messages
from tests.flows import login, submit

OPERATOR_EMAIL, OPERATOR_PASSWORD = "operator@example.com", "operator password 1234"
KNOWN = [email for email, _, _ in DOCUMENTED]
#: Demo customers, one of them twice in another case, a stranger, and two bad lines.
LIST = (
    "customer_id,email,name\n"  # line 1
    "1,alice@example.com,Alice\n"  # 2
    "2,ivan.petrov@example.ru,Иван\n"  # 3
    "9,ALICE@Example.com,Alice again\n"  # 4: the same person
    "3,li.wei@example.cn,李伟\n"  # 5
    "4,not-an-address,Nobody\n"  # 6: invalid
    "\n"  # 7: blank, skipped
    "5,,No address\n"  # 8: invalid
    "6,stranger@example.net,Not a customer\n"  # 9
)
PEOPLE = [*KNOWN, "stranger@example.net"]


def token_of(page: str, prefix: str = "") -> str:
    name = f"{prefix}-csrf_token" if prefix else "csrf_token"
    return re.search(rf'name="{name}" type="hidden" value="([^"]+)"', page)[1]


def upload(client, data: bytes, *, skip_invalid: bool = False, name: str = "Closed accounts"):
    page = client.get("/admin/bulk/new")
    assert page.status_code == 200
    form = {
        "csv-csrf_token": token_of(page.text, "csv"),
        "csv-name": name,
        "csv-file": (io.BytesIO(data), "list.csv"),
    }
    if skip_invalid:
        form["csv-skip_invalid"] = "y"
    return client.post("/admin/bulk/new/csv", data=form, content_type="multipart/form-data")


def pick_segment(client, before: str = "2025-01-01"):
    page = client.get("/admin/bulk/new")
    return client.post(
        "/admin/bulk/new/segment",
        data={
            "segment-csrf_token": token_of(page.text, "segment"),
            "segment-name": "Inactive customers",
            "segment-segment": "crm/inactive",
            "segment-before": before,
        },
    )


def approve(client, reference: str, typed: str | None = None, digest: str | None = None):
    page = client.get(f"/admin/bulk/{reference}")
    found = re.search(r'name="digest" type="hidden" value="([0-9a-f]*)"', page.text)
    return client.post(
        f"/admin/bulk/{reference}/approve",
        data={
            "csrf_token": csrf_token(page.text),
            "digest": digest if digest is not None else (found[1] if found else ""),
            "confirm_reference": reference if typed is None else typed,
        },
    )


def batch_reference(response) -> str:
    assert response.status_code == 302, response.text
    return response.headers["Location"].rsplit("/", 1)[1]


def stored(app) -> tuple[int, int]:
    """Return how many batches and identities the database holds."""
    with app.app_context():
        return (
            db.session.scalar(sa.select(sa.func.count()).select_from(ErasureBatch)),
            db.session.scalar(sa.select(sa.func.count()).select_from(SubjectIdentity)),
        )


def crm_emails(crm_url: str, sql: str = "SELECT email FROM customers", **params) -> set[str]:
    engine = sa.create_engine(crm_url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(sa.text(sql), params).scalars())
    finally:
        engine.dispose()


def add_operator(app) -> None:
    with app.app_context():
        db.session.add(
            StaffUser(
                email=OPERATOR_EMAIL,
                password_hash=hash_password(OPERATOR_PASSWORD),
                role=Role.OPERATOR,
            )
        )
        db.session.commit()


def test_a_list_is_counted_and_its_bad_lines_shown_before_anything_is_stored(app, client):
    login(client)
    report = upload(client, LIST.encode("utf-8"))
    assert report.status_code == 200
    text = report.text
    assert "Nothing has been stored" in text
    assert re.search(r"<td>6</td><td>not a valid email address</td>", text)
    assert re.search(r"<td>8</td><td>no address</td>", text)
    assert "customer_id, name" in text  # the ignored columns are named
    assert stored(app) == (0, 0)

    response = upload(client, LIST.encode("utf-8"), skip_invalid=True)
    reference = batch_reference(response)
    assert reference.startswith("BAT-")
    page = client.get(f"/admin/bulk/{reference}").text
    facts = dict(re.findall(r"<dt>([^<]+)</dt><dd>(\d+)", page))
    assert facts["People"] == "4" and facts["Lines of addresses"] == "7"
    assert facts["Repeated lines"] == "1" and facts["Lines left out"] == "2"
    assert page.count("<h3>Person ") == 4  # the sample: every person of a small batch
    assert "a…@example.com" in page and "alice@example.com" not in page
    with app.app_context():
        batch = db.session.scalars(sa.select(ErasureBatch)).one()
        assert (batch.status, batch.source, batch.total) == ("draft", "csv", 4)
        identities = db.session.scalars(sa.select(SubjectIdentity)).all()
        assert len(identities) == 4
        for identity in identities:  # the addresses are kept sealed, never in clear
            assert not any(email.encode() in identity.email_sealed for email in PEOPLE)
        created = db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "batch.created")
        ).one()
        assert created.details == {
            "source": "csv",
            "people": 4,
            "rows": 7,
            "duplicates": 1,
            "invalid": 2,
        }


def test_a_list_saved_by_a_spreadsheet_with_bom_and_semicolons_is_read(app, client):
    login(client)
    data = "\ufeffName;Email\nAlice;alice@example.com\nЛи;li.wei@example.cn\n".encode()
    reference = batch_reference(upload(client, data))
    with app.app_context():
        batch = db.session.scalars(sa.select(ErasureBatch)).one()
        assert (batch.reference, batch.total) == (reference, 2)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not a text file"),
        ("email\nzoë@example.com\n".encode("latin-1"), "not UTF-8 text (line 2"),
        ("email\nalice@example.com\n".encode("utf-16"), "UTF-16"),
        (b"PK\x03\x04\x14\x00\x06\x00", "spreadsheet workbook"),
        (b"name,customer_id\nAlice,1\n", "No column is called email"),
        (b"alice@example.com\nli.wei@example.cn\n", "holds an address, not column names"),
        (b"", "The file is empty"),
    ],
)
def test_a_wrong_file_gets_a_clear_message_and_nothing_is_stored(app, client, data, message):
    login(client)
    response = upload(client, data)
    assert response.status_code == 400
    assert message in response.text
    assert "alice@example.com" not in response.text  # no cell is quoted back
    assert stored(app) == (0, 0)


def test_a_file_over_the_limits_is_refused_and_nothing_is_stored(app, client):
    app.config.update(BULK_MAX_BYTES=300, BULK_MAX_ROWS=3)
    login(client)
    rows = "".join(f"customer{n:03d}@example.org\n" for n in range(1, 5))
    too_many = upload(client, f"email\n{rows}".encode())
    assert too_many.status_code == 400 and "more than 3 lines" in too_many.text
    too_big = upload(client, ("email\n" + "a@example.org\n" * 30).encode())
    assert too_big.status_code == 400 and "the limit is 300 bytes" in too_big.text
    huge = upload(client, b"email\n" + b"x" * (300 + 70 * 1024))  # beyond what is even read
    assert huge.status_code == 413 and "larger than the limit of 300 bytes" in huge.text
    assert stored(app) == (0, 0)


def test_approving_a_list_erases_everyone_with_a_proof_each_and_a_signed_summary(
    app, client, crm_url
):
    login(client)
    reference = batch_reference(upload(client, LIST.encode(), skip_invalid=True))
    response = approve(client, reference)
    assert response.status_code == 302, response.text
    assert not outbox_messages(app)  # nobody asked, so nobody is emailed
    assert not crm_emails(crm_url) & set(KNOWN)  # the demo customers are gone from the CRM

    with app.app_context():
        batch = db.session.scalars(sa.select(ErasureBatch)).one()
        assert batch.status == "completed" and batch.approved_by.email == "dpo@example.com"
        requests = db.session.scalars(
            sa.select(DataSubjectRequest).where(DataSubjectRequest.batch_id == batch.id)
        ).all()
        assert len(requests) == 4
        for dsr in requests:
            assert dsr.channel == Channel.BULK and dsr.status == Status.COMPLETED
            assert dsr.identity_method == "controller-decision" and dsr.language == "en"
            assert dsr.cooling_off_until == dsr.approved_at  # the controller's own decision
            assert len(dsr.proofs) == 1
        fingerprints = {dsr.reference: dsr.proofs[0].fingerprint for dsr in requests}
        check = check_summary(db.session, batch.summary_pdf)
        assert check.authentic, check.reasons
        assert verify_chain(db.session).ok
        actions = db.session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.reference == reference)
        ).all()
        assert actions == ["batch.created", "batch.approved", "batch.started", "batch.completed"]
        details = json.dumps(
            [e.details for e in db.session.scalars(sa.select(AuditEvent))], ensure_ascii=False
        )
    content = check.content
    assert content["format"] == "lethe-batch/1" and content["people"] == 4
    assert content["outcomes"] == {"completed": 4}
    assert content["skipped"]["invalid_lines"] == 2
    assert content["skipped"]["duplicates_in_file"] == 1
    assert {r["reference"]: r["proof"] for r in content["requests"]} == fingerprints
    assert content["systems"]["crm"]["outcomes"] == {"completed": 3, "not_found": 1}

    page = client.get(f"/admin/bulk/{reference}").text
    assert "summary-" in page and all(ref in page for ref in fingerprints)
    download = client.get(f"/admin/bulk/{reference}/summary.pdf")
    assert download.status_code == 200 and download.mimetype == "application/pdf"
    reader = PdfReader(io.BytesIO(download.data))
    text = " ".join(page.extract_text() for page in reader.pages)
    attachments = b"".join(data[0] for data in reader.attachments.values())
    for ref in fingerprints:
        assert ref in text
    for email in [*PEOPLE, "ALICE@Example.com"]:
        for where in (text, attachments.decode("utf-8"), details):
            assert email not in where and email.lower() not in where.lower()

    (tmp := app.config["INSTANCE"] / "summary.pdf").write_bytes(download.data)
    result = app.test_cli_runner().invoke(cli, ["bulk", "verify", str(tmp)])
    assert result.exit_code == 0 and f"authentic: {reference}" in result.output
    tmp.write_bytes(download.data + b"\n% re-saved\n")  # still signed, but not our bytes
    resaved = app.test_cli_runner().invoke(cli, ["bulk", "verify", str(tmp)])
    assert resaved.exit_code == 1 and "NOT AUTHENTIC" in resaved.output


def test_a_segment_batch_erases_exactly_the_inactive_customers(app, client, crm_url):
    inactive = crm_emails(crm_url, "SELECT email FROM customers WHERE last_login_at < '2025-01-01'")
    assert 5 < len(inactive) < 40
    login(client)
    reference = batch_reference(pick_segment(client))
    page = client.get(f"/admin/bulk/{reference}").text
    assert re.search(rf"<dt>People</dt><dd>{len(inactive)}</dd>", page)
    assert page.count("<h3>Person ") == 5
    assert "Rows across the sample" in page and "support_tickets" in page
    assert approve(client, reference).status_code == 302

    remaining = crm_emails(crm_url)
    assert not remaining & inactive
    assert set(KNOWN) <= remaining  # active customers are untouched
    with app.app_context():
        batch = db.session.scalars(sa.select(ErasureBatch)).one()
        assert (batch.status, batch.total, batch.segment) == (
            "completed",
            len(inactive),
            "crm.inactive",
        )
        proofs = db.session.scalar(sa.select(sa.func.count()).select_from(Proof))
        assert proofs == len(inactive)
    assert not outbox_messages(app)
    again = pick_segment(client)  # the erased are not listed again
    assert again.status_code == 400 and "nobody is in this group" in again.text


def test_an_operator_prepares_a_batch_but_cannot_approve_it(app, client):
    add_operator(app)
    login(client, OPERATOR_EMAIL, OPERATOR_PASSWORD)
    reference = batch_reference(upload(client, b"email\nalice@example.com\n"))
    page = client.get(f"/admin/bulk/{reference}").text
    assert "Approve erasure" not in page and "A DPO approves the batch" in page
    assert approve(client, reference, digest="0" * 64).status_code == 403
    with app.app_context():
        assert db.session.scalars(sa.select(ErasureBatch.status)).one() == "draft"


def test_a_wrong_typed_reference_or_a_changed_plan_does_not_approve(app, client, crm_url):
    login(client)
    reference = batch_reference(upload(client, b"email\nalice@example.com\n"))
    wrong = approve(client, reference, typed="BAT-00000000")
    assert wrong.status_code == 400 and f"does not match {reference}" in wrong.text
    page = client.get(f"/admin/bulk/{reference}")
    digest = re.search(r'name="digest" type="hidden" value="([0-9a-f]+)"', page.text)[1]
    engine = sa.create_engine(crm_url)  # Alice writes to support after the review
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO support_tickets (customer_id, opened_at, subject, body) "
                "SELECT id, '2026-01-01', 'new', 'new' FROM customers WHERE email = :e"
            ),
            {"e": "alice@example.com"},
        )
    engine.dispose()
    changed = approve(client, reference, digest=digest)
    assert changed.status_code == 400 and "changed since you reviewed it" in changed.text
    with app.app_context():
        assert db.session.scalars(sa.select(ErasureBatch.status)).one() == "draft"
        assert not db.session.scalars(sa.select(DataSubjectRequest)).all()
    assert "alice@example.com" in crm_emails(crm_url)


def test_a_person_with_an_open_request_keeps_it_and_is_left_out_of_the_batch(app, client):
    submit(client, "alice@example.com")  # waiting for the link: an open erasure request
    login(client)
    reference = batch_reference(upload(client, b"email\nalice@example.com\nli.wei@example.cn\n"))
    assert approve(client, reference).status_code == 302
    with app.app_context():
        batch = db.session.scalars(sa.select(ErasureBatch)).one()
        assert batch.status == "completed" and batch.summary["skipped_open"] == 1
        own = db.session.scalars(
            sa.select(DataSubjectRequest).where(DataSubjectRequest.batch_id.is_(None))
        ).one()
        assert own.status == Status.SUBMITTED
        assert check_summary(db.session, batch.summary_pdf).content["people"] == 1


def test_discarding_a_draft_forgets_the_addresses_it_alone_brought(app, client):
    login(client)
    reference = batch_reference(upload(client, b"email\nalice@example.com\nli.wei@example.cn\n"))
    page = client.get(f"/admin/bulk/{reference}")
    response = client.post(
        f"/admin/bulk/{reference}/discard", data={"csrf_token": csrf_token(page.text)}
    )
    assert response.status_code == 302
    assert stored(app) == (1, 0)
    with app.app_context():
        assert db.session.scalars(sa.select(ErasureBatch.status)).one() == "discarded"
    assert "discarded" in client.get("/admin/bulk").text


class Ledger(Connector):
    """A second system that holds nobody, and cannot plan one person while it is locked."""

    name = "ledger"

    def check(self) -> CheckResult:
        return CheckResult(True, "ok")

    def plan(self, subject: Subject) -> Plan:
        if subject.email == self.settings["locked_for"] and Path(self.settings["lock"]).exists():
            raise ConnectorError("ledger: locked for maintenance; try again later")
        return Plan(self.system, self.name)

    def export(self, subject: Subject):
        return iter(())

    def erase(self, subject: Subject, plan: Plan) -> EraseResult:
        return EraseResult(Outcome.NOT_FOUND)

    def verify(self, subject: Subject) -> VerifyResult:
        return VerifyResult()


def test_a_start_that_stops_on_a_system_problem_resumes_once_it_is_fixed(app, client, tmp_path):
    lock = tmp_path / "ledger.lock"
    systems = app.extensions["lethe.systems"]
    settings = {"locked_for": "customer006@example.org", "lock": str(lock)}
    app.extensions["lethe.systems"] = Systems(
        systems.file,
        {**systems.configs, "ledger": SystemConfig("ledger", "ledger", "Ledger", settings)},
        {**systems.classes, "ledger": Ledger},
    )
    people = [f"customer{n:03d}@example.org" for n in range(1, 7)]  # the 6th is not sampled
    login(client)
    reference = batch_reference(upload(client, ("email\n" + "\n".join(people)).encode()))
    lock.touch()
    assert approve(client, reference).status_code == 302
    page = client.get(f"/admin/bulk/{reference}").text
    assert "Starting the batch stopped: ledger: locked for maintenance" in page
    with app.app_context():
        assert not db.session.scalars(sa.select(DataSubjectRequest)).all()  # nothing half-done
    lock.unlink()
    response = client.post(f"/admin/bulk/{reference}/resume", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 302
    with app.app_context():
        batch = db.session.scalars(sa.select(ErasureBatch)).one()
        assert (batch.status, batch.total) == ("completed", 6)
        assert batch.summary["skipped_again"] == 0
        actions = db.session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.reference == reference)
        ).all()
        assert "batch.start_failed" in actions and "batch.resumed" in actions
