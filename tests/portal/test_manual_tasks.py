"""A system kept by hand: its owner is emailed a task, confirms it once, and is chased."""

from __future__ import annotations

import io
import time
from datetime import timedelta
from email.message import EmailMessage

import pytest
import sqlalchemy as sa
from itsdangerous import TimestampSigner
from markupsafe import escape
from pypdf import PdfReader

from core.demo import demo_systems_toml
from core.extensions import db
from core.jobs import chase_manual_tasks
from core.manual_tasks import task_link
from core.models import AuditEvent, DataSubjectRequest, RunStatus, Status, SystemRun, utcnow
from core.systems import load_systems
from tests.conftest import DPO_EMAIL, csrf_token, link_in, outbox_messages
from tests.flows import approve, login, path_of, submit, verify_latest

OWNER = "archive-team@example.com"
ALICE = "alice@example.com"
INSTRUCTIONS = "Shred the customer's file in cabinet B; keep invoices (tax law)."
ARCHIVE = f"""
[systems.archive]
connector = "manual"
label = "Paper archive"
owner = "{OWNER}"
instructions = "{INSTRUCTIONS}"
remind_every_days = 3
escalate_after_days = 10
grounds = ["art17-3-b"]
"""


@pytest.fixture
def archive(app, tmp_path, crm_url):
    """Add a paper archive kept by hand beside the demo CRM."""
    file = tmp_path / "with-archive.toml"
    file.write_text(demo_systems_toml(crm_url) + ARCHIVE, encoding="utf-8")
    app.extensions["lethe.systems"] = load_systems(file)


def only_request() -> DataSubjectRequest:
    db.session.expire_all()
    return db.session.scalars(sa.select(DataSubjectRequest)).one()


def archive_run() -> SystemRun:
    return next(run for run in only_request().runs if run.system == "archive")


def to(address: str, app) -> list[EmailMessage]:
    return [m for m in outbox_messages(app) if m["To"] == address]


@pytest.fixture
def waiting(app, client, archive) -> str:
    """Approve Alice's erasure; return its reference once the archive waits for its owner."""
    submit(client, ALICE)
    verify_latest(app, client)
    staff = app.test_client()
    login(staff)
    with app.app_context():
        reference = only_request().reference
    assert approve(staff, reference).status_code == 302
    return reference


def task_path(app) -> str:
    return path_of(link_in(to(OWNER, app)[-1], "/tasks/"))


def confirm(client, path: str, **fields: str):
    page = client.get(path)
    assert page.status_code == 200
    data = {"csrf_token": csrf_token(page.text), "name": "Ann Archivist", **fields}
    return client.post(path, data=data)


def test_the_owner_is_emailed_confirms_once_and_the_proof_names_their_confirmation(
    app, client, waiting
):
    reference = waiting
    with app.app_context():
        request = only_request()
        runs = {run.system: run.status for run in request.runs}
        assert runs == {"crm": RunStatus.COMPLETED, "archive": RunStatus.ACTION_REQUIRED}
        assert request.status == Status.PARTIALLY_COMPLETED
        proofs = len(request.proofs)
    [task] = to(OWNER, app)
    assert reference in task["Subject"] and "Paper archive" in task["Subject"]
    text = task.get_body(("plain",)).get_content()
    assert INSTRUCTIONS in text and ALICE in text and "deadline is 20" in text
    assert "/tasks/" in task.get_body(("html",)).get_content()

    path = task_path(app)
    page = client.get(path)
    assert escape(INSTRUCTIONS) in page.text and reference in page.text
    assert ALICE not in page.text  # the address stays in the email, never on a page
    assert "never the person" in page.text  # the owner is told to leave personal data out
    response = confirm(
        client, path, report="done", details="shredded the file in cabinet B", count="3"
    )
    assert response.status_code == 302 and response.headers["Location"].endswith("/tasks/done")

    with app.app_context():
        request = only_request()
        assert request.status == Status.COMPLETED
        run = archive_run()
        assert run.status == RunStatus.COMPLETED and run.rows_affected == {"done by hand": 3}
        assert "Ann Archivist (archive-team@example.com)" in run.message
        assert "shredded the file in cabinet B" in run.message
        assert len(request.proofs) == proofs + 1
        pdf = request.proofs[-1].pdf
        events = db.session.scalars(sa.select(AuditEvent)).all()
        confirmed = [
            e for e in events if e.action == "run.completed" and e.actor == f"owner:{OWNER}"
        ]
        assert len(confirmed) == 1
        # The owner's free text is in the proof, not in the audit chain.
        assert not any("cabinet B" in str(e.details) for e in events)
    proof_text = " ".join(
        " ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(pdf)).pages
    )
    assert "Confirmed by Ann Archivist (archive-team@example.com)" in proof_text
    assert "shredded the file in cabinet B" in proof_text

    # The link works once; a changed one never.
    again = client.get(path)
    assert again.status_code == 410 and "already been confirmed" in again.text
    form = {"csrf_token": csrf_token(page.text), "report": "nothing", "name": "X"}
    assert client.post(path, data=form).status_code == 410
    tampered = client.get(path[:-3] + ("xyz" if not path.endswith("xyz") else "abc"))
    assert tampered.status_code == 400 and "has been changed" in tampered.text
    with app.app_context():
        assert archive_run().status == RunStatus.COMPLETED and only_request().proofs[-1].pdf == pdf


def test_data_kept_under_a_ground_is_recorded_as_retained(app, client, waiting):
    path = task_path(app)
    # Kept needs the ground and what is kept; nothing changes until the form is complete.
    incomplete = confirm(client, path, report="kept", details="", ground="art17-3-b")
    assert (
        incomplete.status_code == 400 and "Please say what you erased or kept." in incomplete.text
    )
    with app.app_context():
        assert archive_run().status == RunStatus.ACTION_REQUIRED
    response = confirm(client, path, report="kept", details="invoices, tax law", ground="art17-3-b")
    assert response.status_code == 302
    with app.app_context():
        run = archive_run()
        assert run.status == RunStatus.RETAINED
        assert "kept under art17-3-b — invoices, tax law" in run.message
        assert only_request().status == Status.COMPLETED


def test_a_link_signed_for_another_purpose_is_refused(app, client, waiting):
    status_path = path_of(link_in(outbox_messages(app)[0], "/status/"))
    page = client.get("/tasks/" + status_path.rsplit("/", 1)[1])
    assert page.status_code == 400 and "Nothing was changed" in page.text


def set_waiting_since(days: float) -> None:
    run = archive_run()
    run.finished_at = utcnow() - timedelta(days=days)
    db.session.commit()


def subjects(app, address: str) -> list[str]:
    return [str(m["Subject"]).strip() for m in to(address, app)]  # a long one is folded


def test_the_owner_is_reminded_every_n_days_and_the_dpo_told_after_m_days_once_each(app, waiting):
    reference = waiting
    with app.app_context():
        chase_manual_tasks()  # the first email went out already; nothing is due yet
        assert len(subjects(app, OWNER)) == 1 and subjects(app, DPO_EMAIL) == []

        set_waiting_since(3.01)
        chase_manual_tasks()
        chase_manual_tasks()
        reminders = [s for s in subjects(app, OWNER) if s.startswith("Reminder:")]
        assert len(reminders) == 1 and reference in reminders[0]
        assert subjects(app, DPO_EMAIL) == []

        set_waiting_since(10.01)
        chase_manual_tasks()
        chase_manual_tasks()
        [escalation] = subjects(app, DPO_EMAIL)
        assert escalation.startswith("Waiting 10 days") and reference in escalation
        assert len([s for s in subjects(app, OWNER) if s.startswith("Reminder:")]) == 2
        body = to(DPO_EMAIL, app)[0].get_body(("plain",)).get_content()
        assert OWNER in body and ALICE not in body  # the DPO needs the owner, not the person

    # A reminder's link works like the first one.
    path = task_path(app)
    client = app.test_client()
    assert confirm(client, path, report="nothing").status_code == 302
    with app.app_context():
        assert archive_run().status == RunStatus.NOT_FOUND
        set_waiting_since(30)
        chase_manual_tasks()  # nobody is chased about a confirmed task
    assert len(subjects(app, OWNER)) == 3 and len(subjects(app, DPO_EMAIL)) == 1


def test_an_expired_link_changes_nothing(app, client, waiting, monkeypatch):
    signed_at = int(time.time()) - 41 * 86400
    with app.app_context():
        # A link signed 41 days ago: past escalation (10 days) plus the grace of 30 days.
        with monkeypatch.context() as patched:
            patched.setattr(TimestampSigner, "get_timestamp", lambda signer: signed_at)
            old = path_of(task_link(archive_run()))
        fresh = path_of(task_link(archive_run()))
    page = client.get(old)
    assert page.status_code == 410 and "expired" in page.text
    with app.app_context():
        assert archive_run().status == RunStatus.ACTION_REQUIRED
    assert client.get(fresh).status_code == 200
