"""Intake under faults: the SMTP server down (mail waits in the queue), the database down (503).

Both against the real thing: an SMTP server on loopback that is stopped and started, and a
PostgreSQL database that refuses connections while the form is sent.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from core.extensions import db
from core.mail import send_message
from core.mail_queue import QueuedMail, send_due_mail
from core.models import DataSubjectRequest, Role, StaffUser
from tests.conftest import Mailbox, csrf_token, outbox_messages
from tests.services import POSTGRES_URL, fresh_database

ALICE = "alice@example.com"


def _submit(client, email: str = ALICE):
    token = csrf_token(client.get("/").text)
    form = {"email": email, "request_type": "erasure", "confirmed": "yes", "csrf_token": token}
    return client.post("/", data=form)


def _count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def _queue(app) -> list[QueuedMail]:
    with app.app_context():
        rows = db.session.scalars(sa.select(QueuedMail).order_by(QueuedMail.id)).all()
        db.session.expunge_all()
        return rows


@pytest.fixture
def closed_port() -> int:
    """Return a loopback port where no SMTP server listens (yet)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_smtp_down_queues_the_email_and_sends_it_once_when_back(app, client, closed_port):
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=closed_port, MAIL_RETRY_BASE_SECONDS=0)

    answer = _submit(client)

    # The person sees the usual "check your inbox" page, with a note, never an error.
    assert answer.status_code == 302 and answer.location.endswith("/submitted")
    page = client.get("/submitted").text
    assert "Check your inbox" in page and "could not send the email just yet" in page
    assert _count(app, DataSubjectRequest) == 1
    (queued,) = _queue(app)
    assert queued.kind == "verify" and queued.sent_at is None and queued.attempts == 1
    assert queued.last_error.startswith("ConnectionRefusedError")
    assert b"alice" not in queued.body_sealed.lower()  # sealed at rest like other personal data

    mailbox = Mailbox()
    server = Controller(mailbox, hostname="127.0.0.1", port=closed_port)
    server.start()
    try:
        assert send_due_mail.delay().get() == 1
        assert send_due_mail.delay().get() == 0  # a second run finds nothing to send
        (message,) = mailbox.wait_for(1)
    finally:
        server.stop()
    assert message["To"] == ALICE and "/verify/" in message.get_body(("plain",)).get_content()
    (sent,) = _queue(app)
    assert sent.sent_at is not None and sent.body_sealed is None and sent.attempts == 2
    assert len(mailbox.messages) == 1


def test_a_message_not_yet_due_waits_for_its_backoff(app, client, closed_port):
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=closed_port, MAIL_RETRY_BASE_SECONDS=600)
    _submit(client)
    (queued,) = _queue(app)
    assert 590 <= (queued.next_attempt_at - queued.created_at).total_seconds() <= 610
    assert send_due_mail.delay().get() == 0  # not before its time, even with SMTP back


def test_the_outbox_folder_still_gets_every_email_and_the_queue_forgets_bodies(app, client):
    assert _submit(client).status_code == 302
    (message,) = outbox_messages(app)
    assert message["To"] == ALICE
    (sent,) = _queue(app)
    assert sent.sent_at is not None and sent.body_sealed is None


def _message(to: str = ALICE) -> EmailMessage:
    message = EmailMessage()
    message["To"], message["From"], message["Subject"] = to, "privacy@localhost", "Hello"
    message.set_content("Hello")
    return message


def test_an_email_goes_with_its_transaction_or_not_at_all(app):
    with app.app_context():
        db.session.add(StaffUser(email="new@example.com", password_hash="x", role=Role.AUDITOR))
        db.session.flush()
        send_message(_message())
        db.session.rollback()  # the change is undone: so is its email
        assert outbox_messages(app) == [] and _count(app, QueuedMail) == 0
        db.session.add(StaffUser(email="new@example.com", password_hash="x", role=Role.AUDITOR))
        send_message(_message())
        assert outbox_messages(app) == []  # not before the commit
        db.session.commit()
    assert len(outbox_messages(app)) == 1


def test_an_email_decided_after_the_commit_is_committed_on_its_own(app):
    with app.app_context():
        db.session.scalar(sa.select(sa.func.count()).select_from(StaffUser))  # reads only
        send_message(_message())  # nothing to wait for: queued, committed and sent
    assert len(outbox_messages(app)) == 1 and _count(app, QueuedMail) == 1


def test_a_message_is_given_up_after_the_configured_tries(app, closed_port):
    app.config.update(
        SMTP_HOST="127.0.0.1", SMTP_PORT=closed_port, MAIL_RETRY_BASE_SECONDS=0, MAIL_MAX_ATTEMPTS=2
    )
    with app.app_context():
        send_message(_message())
        assert send_due_mail.delay().get() == 0
        assert send_due_mail.delay().get() == 0  # given up: no more tries
    (row,) = _queue(app)
    assert row.attempts == 2 and row.gave_up_at is not None and row.body_sealed is None


@pytest.fixture
def database_url() -> Iterator[str]:
    """Run these tests on a PostgreSQL database of their own, which they switch off."""
    with fresh_database("postgresql") as url:
        yield url


def _switch(name: str, *, on: bool) -> None:
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {str(on).lower()}")
        if not on:  # and drop the connections the app's pool holds
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
    admin.dispose()


def test_database_down_at_intake_shows_try_again_and_writes_nothing(
    app, client, database_url, caplog
):
    name = sa.engine.make_url(database_url).database
    token = csrf_token(client.get("/").text)
    form = {"email": ALICE, "request_type": "erasure", "confirmed": "yes", "csrf_token": token}
    staff_token = csrf_token(client.get("/admin/login").text)
    staff_form = {"email": "dpo@example.com", "password": "not it", "csrf_token": staff_token}
    _switch(name, on=False)
    try:
        down = client.post("/", data=form)
        staff = client.post("/admin/login", data=staff_form)
    finally:
        _switch(name, on=True)

    assert down.status_code == 503 and int(down.headers["Retry-After"]) > 0
    assert "Please try again in a few minutes" in down.text
    assert "Nothing was recorded" in down.text
    assert staff.status_code == 503  # the staff side says the same, not a traceback
    assert ALICE not in caplog.text and "alice" not in caplog.text.lower()

    back = client.post("/", data=form)
    assert back.status_code == 302
    assert _count(app, DataSubjectRequest) == 1
    assert len(_queue(app)) == 1 and len(outbox_messages(app)) == 1
