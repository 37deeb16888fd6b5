"""Tasks for people who erase by hand (the ``manual`` connector): email, confirm, chase.

When a run of a manual system waits (``action_required``), its owner gets an email with a
signed link bound to that run; on the page behind it they confirm what they did, which
closes the run (``core.execution.confirm_run``) and goes into the proof.  A job reminds
them every ``remind_every_days`` and tells the DPOs once after ``escalate_after_days``.

What was sent is kept in the audit chain (``manual.sent``, ``manual.reminded``,
``manual.escalated``, each with the run's system), so the job needs no table of its own
and sends nothing twice.  The task email is the one place Lethe sends a subject's address
to anyone but the subject: to the controller's own staff, who need it to find them.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from connectors.manual import ManualSettings, parse_settings
from core.audit import record_event
from core.links import external_url
from core.mail import send_mail
from core.models import AuditEvent, Role, RunStatus, StaffUser, SystemRun, utcnow
from core.operations import DomainError, subject_email
from core.systems import Systems
from core.tokens import TokenError, make_token, nonce_matches, read_token

log = logging.getLogger(__name__)

PURPOSE = "manual"
#: A task link outlives escalation by this many days: the owner may still answer late.
LINK_GRACE_DAYS = 30
MAIL_ERRORS = (OSError, smtplib.SMTPException)
#: What the owner may report, and the run outcome each one records.
REPORTS = {
    "done": RunStatus.COMPLETED,
    "nothing": RunStatus.NOT_FOUND,
    "kept": RunStatus.RETAINED,
}


def manual_settings(systems: Systems, run: SystemRun) -> ManualSettings | None:
    """Return the settings of the run's system if it is a manual one still configured."""
    config = systems.configs.get(run.system)
    if config is None or config.connector != "manual":
        return None
    return parse_settings(config.name, config.settings)


def link_days(settings: ManualSettings) -> int:
    """Return how many days a task link of this system stays valid."""
    return settings.escalate_after_days + LINK_GRACE_DAYS


def _nonce(run: SystemRun) -> str:
    # Bound to the run and its attempt: a run retried later gets links of its own.
    return f"{run.id}.{run.attempts}"


def task_link(run: SystemRun) -> str:
    """Return a signed link to the task page of ``run``."""
    token = make_token(
        current_app.config["SECRET_KEY"], PURPOSE, run.request.reference, _nonce(run)
    )
    return external_url("portal.manual_task", token=token)


@dataclass(frozen=True)
class Task:
    """A waiting run of a manual system, as its owner sees it."""

    run: SystemRun
    settings: ManualSettings
    label: str


def open_task(session: Session, systems: Systems, token: str) -> Task:
    """Return the task a link names; raise TokenError if tampered, expired or used."""
    secret = current_app.config["SECRET_KEY"]
    longest = max(
        (link_days(parse_settings(c.name, c.settings)) for c in systems if c.connector == "manual"),
        default=0,
    )
    if not longest:
        raise TokenError("invalid")
    reference, nonce = read_token(secret, PURPOSE, token, longest * 86400)
    run_id = (nonce or "").split(".")[0]
    run = session.get(SystemRun, int(run_id)) if run_id.isdigit() else None
    if run is None or run.request.reference != reference:
        raise TokenError("invalid")
    settings = manual_settings(systems, run)
    if settings is None:
        raise TokenError("invalid")
    read_token(secret, PURPOSE, token, link_days(settings) * 86400)  # this system's life
    if run.status != RunStatus.ACTION_REQUIRED or not nonce_matches(_nonce(run), nonce):
        raise TokenError("used", reference)
    return Task(run, settings, systems.configs[run.system].label)


def confirmation_message(
    settings: ManualSettings, report: str, name: str, text: str, count: int | None, ground: str
) -> str:
    """Return what the owner confirmed, as the run's message shown in the proof."""
    when = utcnow().strftime("%Y-%m-%d %H:%M UTC")
    who = f"Confirmed by {name} ({settings.owner}) on {when}"
    if report == "done":
        counted = f" ({count} record{'s' if count != 1 else ''})" if count is not None else ""
        return f"{who}: done by hand{counted} — {text}"
    if report == "nothing":
        return f"{who}: nothing held" + (f" — {text}" if text else "")
    return f"{who}: kept under {ground} — {text}"


def _events(session: Session, run: SystemRun, action: str) -> list[AuditEvent]:
    # The run's system is in the details; the reference narrows the search to a handful.
    events = session.scalars(
        sa.select(AuditEvent).where(
            AuditEvent.reference == run.request.reference,
            AuditEvent.action == action,
            AuditEvent.occurred_at >= run.finished_at.replace(microsecond=0),
        )
    )
    return [event for event in events if event.details.get("system") == run.system]


def send_task(session: Session, systems: Systems, run: SystemRun, *, reminder: int = 0) -> bool:
    """Email the owner the task of ``run``, or its reminder number ``reminder``.

    Records ``manual.sent`` or ``manual.reminded`` in the caller's transaction and return
    whether it went out.  The first email goes once per wait: a second call finds it in the
    audit chain and sends nothing.
    """
    settings = manual_settings(systems, run)
    if settings is None or run.status != RunStatus.ACTION_REQUIRED:
        return False
    if not reminder and _events(session, run, "manual.sent"):
        return False
    request = run.request
    link = task_link(run)
    send_mail(
        settings.owner,
        "manual_task",
        "en",
        run=run,
        dsr=request,
        label=systems.configs[run.system].label,
        settings=settings,
        subject_address=subject_email(request),
        due_on=request.effective_due_on,
        link=link,
        link_days=link_days(settings),
        reminder=reminder,
        link_labels={link: "Confirm what you did"},
    )
    if reminder:
        record_event(
            session,
            "worker",
            "manual.reminded",
            request.reference,
            system=run.system,
            number=reminder,
        )
    else:
        record_event(session, "worker", "manual.sent", request.reference, system=run.system)
    return True


def waiting_runs(session: Session) -> list[SystemRun]:
    """Return the runs of manual systems that wait for their owner."""
    return list(
        session.scalars(
            sa.select(SystemRun)
            .where(
                SystemRun.status == RunStatus.ACTION_REQUIRED,
                SystemRun.connector == "manual",
                SystemRun.finished_at.is_not(None),
            )
            .order_by(SystemRun.finished_at)
        )
    )


def dpo_addresses(session: Session) -> list[str]:
    """Return the active DPOs' addresses, or the active admins' when there is no DPO."""
    for role in (Role.DPO, Role.ADMIN):
        found = list(
            session.scalars(
                sa.select(StaffUser.email)
                .where(StaffUser.active.is_(True), StaffUser.role == role)
                .order_by(StaffUser.email)
            )
        )
        if found:
            return found
    return []


def escalate(session: Session, systems: Systems, run: SystemRun, days: int) -> bool:
    """Tell the DPOs that ``run`` has waited ``days`` days; return whether anyone was told."""
    settings = manual_settings(systems, run)
    addresses = dpo_addresses(session)
    if settings is None or not addresses:
        return False
    for address in addresses:
        send_mail(
            address,
            "manual_escalation",
            "en",
            dsr=run.request,
            run=run,
            label=systems.configs[run.system].label,
            settings=settings,
            days=days,
            request_link=external_url("admin.request_page", reference=run.request.reference),
        )
    record_event(
        session, "worker", "manual.escalated", run.request.reference, system=run.system, days=days
    )
    return True


def chase_waiting(session: Session, systems: Systems, now: datetime | None = None) -> dict:
    """Send tasks not yet sent, remind owners and tell the DPOs, as each system says; commit.

    Idempotent: what was sent is counted from the audit chain, so running it twice sends
    nothing more.  Return how many of each went out.
    """
    now = now or utcnow()
    sent = {"sent": 0, "reminded": 0, "escalated": 0}
    for run in waiting_runs(session):
        settings = manual_settings(systems, run)
        if settings is None:
            continue
        days = (now - run.finished_at).days
        first = not _events(session, run, "manual.sent")
        # Reminder k is due k * remind_every_days after the run began to wait; one that the
        # job missed (it was down) is not made up for, only the latest is sent.
        number = days // settings.remind_every_days
        reminded = [e.details.get("number", 0) for e in _events(session, run, "manual.reminded")]
        due = {
            # The first email failed when the run finished: send it now, reminders later.
            "sent": first,
            "reminded": not first and number > max(reminded, default=0),
            "escalated": days >= settings.escalate_after_days
            and not _events(session, run, "manual.escalated"),
        }
        for kind in (k for k, wanted in due.items() if wanted):
            try:
                if kind == "escalated":
                    done = escalate(session, systems, run, days)
                else:
                    done = send_task(
                        session, systems, run, reminder=number if kind == "reminded" else 0
                    )
            except MAIL_ERRORS:
                log.exception("a manual task email could not be sent; the next run tries again")
                session.rollback()
                break
            except DomainError:  # the person's data was purged: the DPOs may still be told
                log.exception("a manual task cannot be sent")
                session.rollback()
                continue
            session.commit()  # one by one: a later mail failure must not resend this one
            sent[kind] += done
    return sent
