"""The DPO's daily digest: who gets it, what it lists, and that it goes out once a day."""

from __future__ import annotations

import socket
from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from celery.schedules import crontab

from core import create_app
from core.audit import verify_chain
from core.cli import cli
from core.clock import today as local_today
from core.config import ConfigurationError, load_config
from core.extensions import db
from core.jobs import remind_dpos
from core.mail_queue import send_due_mail
from core.models import AuditEvent, JobMark, Role, StaffUser, Status
from core.reminders import JOB, Outcome, send_dpo_reminders
from core.security import hash_password
from tests.conftest import DPO_EMAIL, outbox_messages
from tests.core.test_metrics import add_request, at

TODAY = date(2026, 3, 10)


def add_staff(email: str, role: Role, active: bool = True) -> None:
    db.session.add(
        StaffUser(email=email, password_hash=hash_password("x" * 16), role=role, active=active)
    )
    db.session.commit()


def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def html_of(message) -> str:
    return message.get_body(("html",)).get_content()


def _section(text: str, heading: str) -> str:
    """Return the digest's text from ``heading`` to the next group's heading."""
    start = text.index(heading)
    end = min(
        (text.index(h, start + 1) for h in ("Overdue:", "Due within") if h in text[start + 1 :]),
        default=len(text),
    )
    return text[start:end]


def test_the_digest_lists_overdue_and_due_requests_by_urgency_without_personal_data(app):
    with app.app_context():
        add_staff("admin@example.com", Role.ADMIN)
        add_staff("operator@example.com", Role.OPERATOR)
        add_staff("auditor@example.com", Role.AUDITOR)
        add_staff("former-dpo@example.com", Role.DPO, active=False)
        failed = add_request(
            Status.FAILED,
            received=at("2026-02-05"),
            due="2026-03-05",
            email="alice@example.com",
        )
        unconfirmed = add_request(Status.SUBMITTED, received=at("2026-02-09"), due="2026-03-09")
        today = add_request(Status.VERIFIED, received=at("2026-02-10"), due="2026-03-10")
        in_two = add_request(Status.APPROVED, received=at("2026-02-12"), due="2026-03-12")
        in_three = add_request(Status.VERIFIED, received=at("2026-02-13"), due="2026-03-13")
        in_seven = add_request(Status.RUNNING, received=at("2026-02-17"), due="2026-03-17")
        in_eight = add_request(Status.VERIFIED, received=at("2026-02-18"), due="2026-03-18")
        closed = add_request(
            Status.COMPLETED, received=at("2026-02-01"), due="2026-03-02", ended=at("2026-03-01")
        )
        run = send_dpo_reminders(db.session, today=TODAY)

    assert run.outcome == Outcome.SENT and run.sent == 2
    assert run.counts == {"overdue": 2, "due_2_days": 2, "due_7_days": 2}
    messages = outbox_messages(app)
    assert sorted(m["To"] for m in messages) == ["admin@example.com", DPO_EMAIL]
    message = messages[0]
    assert "2 overdue, 2 due within 2 days, 2 within 7 days" in message["Subject"]
    text = text_of(message)
    overdue = _section(text, "Overdue: 2")
    assert f"{failed} · erasure · failed · due 2026-03-05 · 5 days late" in overdue
    assert f"{unconfirmed} · erasure · submitted · due 2026-03-09 · 1 day late" in overdue
    soon = _section(text, "Due within 2 days: 2")
    assert f"{today} · erasure · verified · due 2026-03-10 · due today" in soon
    assert f"{in_two} · erasure · approved · due 2026-03-12 · 2 days left" in soon
    week = _section(text, "Due within 7 days: 2")
    assert f"{in_three} · erasure · verified · due 2026-03-13 · 3 days left" in week
    assert f"{in_seven} · erasure · running · due 2026-03-17 · 7 days left" in week
    assert in_eight not in text and closed not in text
    assert f"http://127.0.0.1:5000/admin/requests/{failed}" in text
    html = html_of(message)
    assert f'href="http://127.0.0.1:5000/admin/requests/{failed}"' in html
    assert "<table" in html and "5 days late" in html
    for sent in messages:
        assert b"alice@example.com" not in sent.as_bytes()


def test_the_digest_goes_out_once_a_day_unless_forced(app):
    with app.app_context():
        add_request(Status.VERIFIED, received=at("2026-02-05"), due="2026-03-05")
        first = send_dpo_reminders(db.session, today=TODAY)
        again = send_dpo_reminders(db.session, today=TODAY)
        assert (first.outcome, again.outcome) == (Outcome.SENT, Outcome.ALREADY_SENT)
        assert len(outbox_messages(app)) == 1
        assert db.session.scalars(sa.select(JobMark.run_on).where(JobMark.name == JOB)).all() == [
            TODAY
        ]
        forced = send_dpo_reminders(db.session, today=TODAY, force=True)
        tomorrow = send_dpo_reminders(db.session, today=TODAY + timedelta(days=1))
        assert (forced.outcome, tomorrow.outcome) == (Outcome.SENT, Outcome.SENT)
        assert len(outbox_messages(app)) == 3
        events = db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "dpo_reminder.sent")
        ).all()
        assert [e.details for e in events][0] == {
            "recipients": 1,
            "overdue": 1,
            "due_2_days": 0,
            "due_7_days": 0,
        }
        assert len(events) == 3 and verify_chain(db.session).ok


def test_nothing_due_sends_nothing(app):
    with app.app_context():
        add_request(Status.VERIFIED, received=at("2026-02-20"), due="2026-03-20")  # 10 days
        add_request(
            Status.DENIED, received=at("2026-01-05"), due="2026-02-05", ended=at("2026-02-01")
        )
        add_request(
            Status.CANCELLED, received=at("2026-02-05"), due="2026-03-05", ended=at("2026-02-06")
        )
        run = send_dpo_reminders(db.session, today=TODAY)
    assert run.outcome == Outcome.NOTHING_DUE
    assert outbox_messages(app) == []


def test_a_digest_whose_mail_failed_waits_in_the_mail_queue_and_goes_out_once(app):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with app.app_context():
        add_request(Status.FAILED, received=at("2026-02-05"), due="2026-03-05")
        app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=closed_port, MAIL_RETRY_BASE_SECONDS=0)
        queued = send_dpo_reminders(db.session, today=TODAY)
        # The SMTP server is down: the digest is kept in the mail queue, not lost.
        assert queued.outcome == Outcome.SENT and queued.sent == 1
        assert outbox_messages(app) == []
        again = send_dpo_reminders(db.session, today=TODAY)
        assert again.outcome == Outcome.ALREADY_SENT  # the queue retries, not the digest
        app.config.update(SMTP_HOST=None)
        assert send_due_mail() == 1
        assert send_due_mail() == 0
    assert len(outbox_messages(app)) == 1


def test_the_scheduled_task_uses_todays_date_and_the_cli_reports_what_it_did(app):
    with app.app_context():
        today = local_today()
        reference = add_request(
            Status.VERIFIED, received=at((today - timedelta(days=40)).isoformat()), due=today
        )
    remind_dpos.delay()
    messages = outbox_messages(app)
    assert len(messages) == 1 and reference in text_of(messages[0])
    runner = app.test_cli_runner()
    again = runner.invoke(cli, ["remind-dpos"])
    assert again.exit_code == 0 and "already gone out" in again.output
    forced = runner.invoke(cli, ["remind-dpos", "--force"])
    assert forced.exit_code == 0 and "to 1 recipient" in forced.output
    assert len(outbox_messages(app)) == 2


def test_the_cli_says_when_nothing_is_due(app):
    result = app.test_cli_runner().invoke(cli, ["remind-dpos"])
    assert result.exit_code == 0 and "no email" in result.output
    assert outbox_messages(app) == []


def test_the_beat_runs_the_digest_from_the_configured_hour_in_the_controllers_time_zone(
    tmp_path, monkeypatch
):
    for name in ("DATABASE_URL", "BROKER_URL", "SYSTEMS_FILE", "ENV", "TIMEZONE"):
        monkeypatch.delenv(f"LETHE_{name}", raising=False)
    monkeypatch.setenv("LETHE_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("LETHE_REMINDER_HOUR", "6")
    monkeypatch.setenv("LETHE_TIMEZONE", "America/Los_Angeles")
    celery = create_app({"TESTING": True}).extensions["celery"]
    entry = celery.conf.beat_schedule["remind-dpos"]
    assert entry["task"] == "core.jobs.remind_dpos"
    assert entry["schedule"] == crontab(minute=0, hour="6-23")
    assert str(celery.timezone) == "America/Los_Angeles"


def test_a_reminder_hour_that_is_not_an_hour_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LETHE_REMINDER_HOUR", "24")
    with pytest.raises(ConfigurationError, match="LETHE_REMINDER_HOUR"):
        load_config(tmp_path)
