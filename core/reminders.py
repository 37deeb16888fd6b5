"""The DPO's daily digest: open requests overdue or due within a week, emailed once a day.

Every active DPO and admin gets one email listing, by reference only, the open requests
(any state but closed) that are overdue, due within 2 days and due within 7 days.  Nothing
to report sends nothing.  The day's run is claimed by inserting a ``JobMark`` row, whose
primary key (job, day) lets only one scheduler through, however many run or restart.
"""

from __future__ import annotations

import enum
import logging
import smtplib
from dataclasses import dataclass
from datetime import date, timedelta

import sqlalchemy as sa
from flask import current_app, render_template
from flask_babel import force_locale
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.audit import record_event
from core.clock import today as local_today
from core.links import external_url
from core.mail import build_message, send_message
from core.metrics import DueRequest, due_between
from core.models import JobMark, Role, StaffUser

log = logging.getLogger(__name__)

#: The ``JobMark`` name of the digest.
JOB = "dpo-reminder"
#: The longest list of one group in one email; the rest is counted and left to the queue.
GROUP_LIMIT = 100


@dataclass(frozen=True)
class DueItem:
    """One line of the digest: a request by reference, never by person."""

    request: DueRequest
    days_left: int
    link: str

    @property
    def when(self) -> str:
        """Return the days left or late in words."""
        if self.days_left < 0:
            late = -self.days_left
            return f"{late} day{'s' if late != 1 else ''} late"
        if self.days_left == 0:
            return "due today"
        return f"{self.days_left} day{'s' if self.days_left != 1 else ''} left"


@dataclass(frozen=True)
class Group:
    """The requests of one urgency: ``total`` of them, the first ``GROUP_LIMIT`` listed."""

    key: str
    title: str
    total: int
    items: list[DueItem]


@dataclass(frozen=True)
class Digest:
    """The day's digest."""

    today: date
    groups: list[Group]

    @property
    def empty(self) -> bool:
        """Return whether there is nothing to tell."""
        return not any(group.total for group in self.groups)

    def counts(self) -> dict[str, int]:
        """Return how many requests each group holds."""
        return {group.key: group.total for group in self.groups}


def build_digest(session: Session, today: date) -> Digest:
    """Return the open requests overdue, due within 2 days and due in 3 to 7 days."""
    spans = (
        ("overdue", "Overdue", None, today - timedelta(days=1)),
        ("due_2_days", "Due within 2 days", today, today + timedelta(days=2)),
        ("due_7_days", "Due within 7 days", today + timedelta(days=3), today + timedelta(days=7)),
    )
    groups = []
    for key, title, first, last in spans:
        total, requests = due_between(session, first, last, GROUP_LIMIT)
        items = [
            DueItem(
                request,
                (request.due - today).days,
                external_url("admin.request_page", reference=request.reference),
            )
            for request in requests
        ]
        groups.append(Group(key, title, total, items))
    return Digest(today, groups)


def recipients(session: Session) -> list[str]:
    """Return the addresses of the active DPOs and admins."""
    return list(
        session.scalars(
            sa.select(StaffUser.email)
            .where(StaffUser.active.is_(True), StaffUser.role.in_((Role.DPO, Role.ADMIN)))
            .order_by(StaffUser.email)
        )
    )


def claim_day(session: Session, day: date) -> bool:
    """Record that the digest of ``day`` is being sent, and commit; False if it already was.

    The commit is the lock: a second scheduler's insert fails on the primary key (on
    PostgreSQL it waits for the first to commit, then fails).
    """
    session.add(JobMark(name=JOB, run_on=day))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return False
    return True


def release_day(session: Session, day: date) -> None:
    """Forget the claim on ``day``, so that a later run may try again; commit."""
    session.execute(sa.delete(JobMark).where(JobMark.name == JOB, JobMark.run_on == day))
    session.commit()


def render_digest(to: str, digest: Digest):
    """Return the digest as a multipart text+HTML email to ``to``, in English."""
    context = {
        "digest": digest,
        "queue_link": external_url("admin.queue", overdue=1),
        "dashboard_link": external_url("admin.dashboard"),
        "timezone": current_app.config["TIMEZONE"],
    }
    with force_locale("en"):
        message = build_message(to, "dpo_reminder", **context)
        html = render_template(
            "email/dpo_reminder.html", subject=str(message["Subject"]), **context
        )
    # The shared layout shows paragraphs; a digest reads better as tables.
    message.get_body(("html",)).set_content(html, subtype="html")
    return message


class Outcome(enum.StrEnum):
    """What a run of the digest did."""

    SENT = "sent"
    ALREADY_SENT = "already-sent"
    NOTHING_DUE = "nothing-due"
    NO_RECIPIENTS = "no-recipients"
    FAILED = "failed"


@dataclass(frozen=True)
class ReminderRun:
    """The result of :func:`send_dpo_reminders`."""

    outcome: Outcome
    day: date
    sent: int = 0
    failed: int = 0
    counts: dict[str, int] | None = None


def send_dpo_reminders(
    session: Session, *, today: date | None = None, force: bool = False, actor: str = "scheduler"
) -> ReminderRun:
    """Email the day's digest to every active DPO and admin, once a day; commit.

    ``force`` sends even if the day's digest has gone out.  If no email at all could be
    sent the day's claim is released, so the next scheduled run tries again.
    """
    day = today or local_today()
    claimed = claim_day(session, day)
    if not claimed and not force:
        return ReminderRun(Outcome.ALREADY_SENT, day)
    digest = build_digest(session, day)
    if digest.empty:
        return ReminderRun(Outcome.NOTHING_DUE, day, counts=digest.counts())
    addresses = recipients(session)
    if not addresses:
        log.warning("requests are overdue or due soon, but no active DPO or admin can be told")
        return ReminderRun(Outcome.NO_RECIPIENTS, day, counts=digest.counts())
    sent = failed = 0
    for address in addresses:
        try:
            send_message(render_digest(address, digest))
        except (OSError, smtplib.SMTPException):
            log.exception("the DPO digest could not be sent to one recipient")
            failed += 1
        else:
            sent += 1
    if not sent:
        if claimed:
            release_day(session, day)
        return ReminderRun(Outcome.FAILED, day, failed=failed, counts=digest.counts())
    record_event(session, actor, "dpo_reminder.sent", recipients=sent, **digest.counts())
    session.commit()
    return ReminderRun(Outcome.SENT, day, sent=sent, failed=failed, counts=digest.counts())
