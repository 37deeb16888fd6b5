"""The mail queue: every email is a row written with the change that causes it.

:func:`queue_message` seals the message (AES-256-GCM, like all personal data) into a row
of the caller's transaction, so a rollback sends nothing and a crash loses nothing.  Once
that transaction commits, the message is tried at once; one that cannot go out (the SMTP
server is down) stays queued with its attempts, last error and next attempt time, and the
scheduler's :func:`send_due_mail` tries it again after an exponential backoff.  A sent
message keeps only its dates: the body, which names the person, is deleted.

A new row is leased to the process that wrote it (``next_attempt_at`` lies
:data:`LEASE_SECONDS` ahead), and the scheduler claims a due row with one conditional
UPDATE, so a message is handed to the SMTP server once even when they race for it.
"""

from __future__ import annotations

import base64
import logging
import smtplib
import uuid
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import sqlalchemy as sa
from celery import shared_task
from flask import current_app
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.crypto import decrypt, encrypt
from core.extensions import db
from core.models import UTCDateTime, utcnow

log = logging.getLogger(__name__)

#: How long a claimed message is left to its sender before another may try it.
LEASE_SECONDS = 120
_PENDING = "lethe.mail_pending"
_HELD = "lethe.mail_held"
_WROTE = "lethe.wrote_since_commit"


class QueuedMail(db.Model):
    """One outgoing email, from the moment it is decided until it is sent or given up."""

    __tablename__ = "mail_queue"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Binds the sealed body to this row; random, so it says nothing about the person.
    uid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    #: The template, e.g. ``verify``: what kind of email, never who to.
    kind: Mapped[str] = mapped_column(sa.String(64))
    #: The whole message, sealed; deleted once sent or given up.
    body_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_error: Mapped[str | None] = mapped_column(sa.String(200))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    gave_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def _key() -> bytes:
    return bytes.fromhex(current_app.config["DATA_KEY"])


def queue_message(session: Session, message: EmailMessage, kind: str) -> QueuedMail:
    """Add ``message`` to the queue in the caller's transaction; it goes out after commit."""
    # An email decided after its change was committed (``commit(); notify(...)``) would
    # otherwise wait for a commit that never comes: with nothing else written since the
    # last commit, it is committed (and sent) at once, on its own.
    alone = not (session.info.get(_WROTE) or session.new or session.dirty or session.deleted)
    uid = str(uuid.uuid4())
    raw = base64.b64encode(bytes(message)).decode("ascii")
    row = QueuedMail(
        uid=uid,
        kind=kind[:64],
        body_sealed=encrypt(_key(), raw, uid.encode()),
        # Leased to this process, which tries it right after the commit; should it die
        # first, the scheduler finds the row due once the lease has run out.
        next_attempt_at=utcnow() + timedelta(seconds=LEASE_SECONDS),
    )
    session.add(row)
    session.flush()
    # The message itself is kept in memory for the try after the commit, which need not
    # decrypt and parse what it has just built; the scheduler's retries read the row.
    session.info.setdefault(_PENDING, []).append((row.id, row.kind, message))
    if alone:
        session.commit()
    return row


def mail_held_back(session: Session) -> bool:
    """Return whether an email of the last commit could not go out and waits in the queue."""
    return bool(session.info.pop(_HELD, 0))


@sa.event.listens_for(Session, "after_commit")
def _send_committed(session: Session) -> None:
    # The rows now exist.  The session cannot run SQL inside this hook: what a try needs
    # was kept in memory, and its outcome is written on a connection of its own.
    pending = session.info.pop(_PENDING, [])
    session.info.pop(_WROTE, None)
    if not pending:
        return
    held = sum(not _try(mail_id, kind, message) for mail_id, kind, message in pending)
    if held:
        session.info[_HELD] = session.info.get(_HELD, 0) + held


@sa.event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)
    session.info.pop(_WROTE, None)


@sa.event.listens_for(Session, "after_flush")
def _note_flush(session: Session, flush_context: object) -> None:
    session.info[_WROTE] = True


@sa.event.listens_for(Session, "do_orm_execute")
def _note_statement(state: sa.orm.ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info[_WROTE] = True


def backoff_seconds(attempts: int) -> int:
    """Return how long to wait after the ``attempts``-th failed try."""
    config = current_app.config
    ceiling = config["MAIL_RETRY_MAX_SECONDS"]
    return min(config["MAIL_RETRY_BASE_SECONDS"] * 2 ** min(attempts - 1, 30), ceiling)


def deliver(message: EmailMessage) -> None:
    """Hand ``message`` to the SMTP server, or write it to the outbox folder in development."""
    config = current_app.config
    if config["SMTP_HOST"]:
        with smtplib.SMTP(config["SMTP_HOST"], config["SMTP_PORT"], timeout=30) as smtp:
            if config["SMTP_STARTTLS"]:
                smtp.starttls()
            if config["SMTP_USER"]:
                smtp.login(config["SMTP_USER"], config["SMTP_PASSWORD"] or "")
            smtp.send_message(message)
    else:
        outbox = config["OUTBOX"]
        outbox.mkdir(parents=True, exist_ok=True)
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
        (outbox / f"{stamp}-{uuid.uuid4().hex[:8]}.eml").write_bytes(bytes(message))


def _describe(error: Exception) -> str:
    # SMTP replies may quote the recipient: keep the kind of failure and its code only.
    code = getattr(error, "smtp_code", None) or getattr(error, "errno", None)
    return f"{type(error).__name__}" + (f" ({code})" if code else "")


def _unseal(uid: str, sealed: bytes) -> EmailMessage:
    raw = decrypt(_key(), sealed, uid.encode())
    return message_from_bytes(base64.b64decode(raw), policy=policy.default)


def _try(mail_id: int, kind: str, message: EmailMessage) -> bool:
    """Send one message this process holds the lease of; record what happened."""
    table = QueuedMail.__table__
    try:
        deliver(message)
    except Exception as exc:  # whatever went wrong, the message stays queued
        return _note_failure(mail_id, kind, _describe(exc))
    try:
        with db.engine.begin() as conn:
            conn.execute(
                sa.update(table)
                .where(table.c.id == mail_id)
                .values(
                    sent_at=utcnow(),
                    body_sealed=None,
                    last_error=None,
                    attempts=table.c.attempts + 1,
                )
            )
    except sa.exc.SQLAlchemyError:
        # Sent but not marked: once the lease runs out it may be sent a second time.
        log.exception("queued email %s was sent but could not be marked", mail_id)
    log.info("sent the %s email", kind)
    return True


def _note_failure(mail_id: int, kind: str, error: str) -> bool:
    table = QueuedMail.__table__
    try:
        with db.engine.begin() as conn:
            attempts = 1 + conn.scalar(sa.select(table.c.attempts).where(table.c.id == mail_id))
            values: dict[str, object] = {"last_error": error, "attempts": attempts}
            if attempts >= current_app.config["MAIL_MAX_ATTEMPTS"]:
                values.update(gave_up_at=utcnow(), body_sealed=None)
                log.error(
                    "the %s email %s is given up after %d tries: %s", kind, mail_id, attempts, error
                )
            else:
                values["next_attempt_at"] = utcnow() + timedelta(seconds=backoff_seconds(attempts))
                log.warning(
                    "the %s email %s could not be sent (%s); it stays queued", kind, mail_id, error
                )
            conn.execute(sa.update(table).where(table.c.id == mail_id).values(**values))
    except sa.exc.SQLAlchemyError:
        log.exception("queued email %s: the failure could not be recorded", mail_id)
    return False


def send_queued(mail_id: int) -> bool:
    """Claim one due message and try it now; return whether it went out."""
    table = QueuedMail.__table__
    now = utcnow()
    try:
        with db.engine.begin() as conn:
            claimed = conn.execute(
                sa.update(table)
                .where(
                    table.c.id == mail_id,
                    table.c.sent_at.is_(None),
                    table.c.gave_up_at.is_(None),
                    table.c.next_attempt_at <= now,
                )
                .values(next_attempt_at=now + timedelta(seconds=LEASE_SECONDS))
            )
            if claimed.rowcount != 1:
                return False
            row = conn.execute(
                sa.select(table.c.uid, table.c.kind, table.c.body_sealed).where(
                    table.c.id == mail_id
                )
            ).one()
    except sa.exc.SQLAlchemyError:
        log.exception("queued email %s could not be claimed; the next run tries again", mail_id)
        return False
    try:
        message = _unseal(row.uid, row.body_sealed)
    except Exception as exc:  # an altered row: counted as a failed try, like SMTP down
        return _note_failure(mail_id, row.kind, _describe(exc))
    return _try(mail_id, row.kind, message)


@shared_task(name="core.mail_queue.send_due_mail")
def send_due_mail(limit: int = 500) -> int:
    """Send the queued messages that are due (SMTP is back, or a try was lost); return how many."""
    due = db.session.scalars(
        sa.select(QueuedMail.id)
        .where(
            QueuedMail.sent_at.is_(None),
            QueuedMail.gave_up_at.is_(None),
            QueuedMail.next_attempt_at <= utcnow(),
        )
        .order_by(QueuedMail.next_attempt_at)
        .limit(limit)
    ).all()
    db.session.commit()  # nothing held open while talking to the SMTP server
    return sum(send_queued(mail_id) for mail_id in due)
