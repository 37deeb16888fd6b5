"""Tell a system's recipients of each erasure there (GDPR Art. 19) and record their answer.

A system lists in ``systems.toml`` the processors and recipients it disclosed data to.
When a run of an erasure there finishes ``completed`` — something was erased — each of
them is told by email or by a signed webhook, with a signed link to acknowledge.  A run
that found nothing (``not_found``) or kept the data (``retained``) notifies no one: there
was nothing erased to pass on.

The person's address travels only inside the message, because the recipient needs it to
find them: the table, the audit chain and the logs hold the recipient's configured name,
the system and the request's reference, never the address.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import smtplib
import time

import requests
import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from core.audit import record_event
from core.links import external_url
from core.mail import send_mail
from core.models import RecipientNotification, RequestType, RunStatus, SystemRun, utcnow
from core.operations import DomainError, subject_email
from core.systems import Recipient, Systems
from core.tokens import TokenError, make_token, read_token

log = logging.getLogger(__name__)

PURPOSE = "recipient"
#: How long an acknowledgement link works.
LINK_DAYS = 90
#: Deliveries tried after the first one fails, waiting 1, 2, 4, 8 and 16 minutes.
RETRIES = 5
WEBHOOK_TIMEOUT_SECONDS = 10
#: What ``acknowledged_by`` says when the webhook's answer acknowledged the erasure.
BY_WEBHOOK = "webhook response"


class DeliveryError(RuntimeError):
    """A notification could not be delivered; the message says why, without personal data."""


def backoff_seconds(retries: int) -> int:
    """Return how long to wait before retry number ``retries + 1``."""
    return 60 * 2**retries


def recipients_to_notify(systems: Systems, run: SystemRun) -> tuple[Recipient, ...]:
    """Return the recipients owed a notification of ``run``: none unless it erased something."""
    config = systems.configs.get(run.system)
    if (
        config is None
        or run.request.request_type != RequestType.ERASURE
        or run.status != RunStatus.COMPLETED
    ):
        return ()
    return config.recipients


def prepare_notifications(
    session: Session, systems: Systems, run: SystemRun
) -> list[tuple[RecipientNotification, Recipient]]:
    """Return the run's notifications with their recipients, creating the missing ones."""
    existing = {
        n.recipient: n
        for n in session.scalars(
            sa.select(RecipientNotification).where(
                RecipientNotification.request_id == run.request_id,
                RecipientNotification.system == run.system,
            )
        )
    }
    pairs = []
    for recipient in recipients_to_notify(systems, run):
        notification = existing.get(recipient.name)
        if notification is None:
            notification = RecipientNotification(
                request_id=run.request_id,
                system=run.system,
                recipient=recipient.name,
                channel=recipient.channel,
            )
            session.add(notification)
            session.flush()
        pairs.append((notification, recipient))
    return pairs


def acknowledge_link(notification: RecipientNotification) -> str:
    """Return the signed link on which the recipient acknowledges ``notification``."""
    token = make_token(
        current_app.config["SECRET_KEY"],
        PURPOSE,
        notification.request.reference,
        str(notification.id),
    )
    return external_url("portal.recipient_ack", token=token)


def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    """Return the ``X-Lethe-Signature`` of a webhook body sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def _send_webhook(recipient: Recipient, payload: dict) -> bool:
    """POST ``payload`` signed; return whether the answer acknowledged the erasure."""
    body = json.dumps(payload, sort_keys=True).encode()
    timestamp = str(int(time.time()))
    secret = os.environ.get(recipient.secret_env or "", "")
    if not secret:
        raise DeliveryError(f"the environment variable {recipient.secret_env} is not set")
    try:
        response = requests.post(
            recipient.webhook,
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-Lethe-Timestamp": timestamp,
                "X-Lethe-Signature": sign_webhook(secret, timestamp, body),
                "X-Lethe-Delivery": str(payload["notification"]),
            },
            timeout=WEBHOOK_TIMEOUT_SECONDS,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise DeliveryError(f"the webhook could not be reached: {type(exc).__name__}") from None
    with response:
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"the webhook answered HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            return False
    return isinstance(answer, dict) and answer.get("acknowledged") is True


def deliver(
    session: Session, systems: Systems, notification: RecipientNotification, recipient: Recipient
) -> bool:
    """Send one notification; return whether the answer already acknowledged it.

    Raise :class:`DeliveryError` when it could not be delivered.
    """
    request = notification.request
    run = next(r for r in request.runs if r.system == notification.system)
    try:
        address = subject_email(request)
    except DomainError:
        raise DeliveryError("the person's address is no longer held (purged)") from None
    link = acknowledge_link(notification)
    label = systems.configs[run.system].label
    if recipient.email:
        try:
            send_mail(
                recipient.email,
                "recipient_erasure",
                "en",
                dsr=request,
                run=run,
                label=label,
                recipient=recipient,
                subject_address=address,
                erased_at=run.finished_at,
                link=link,
                link_days=LINK_DAYS,
                link_labels={link: "We have erased it"},
            )
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"the email could not be sent: {type(exc).__name__}") from None
        return False
    return _send_webhook(
        recipient,
        {
            "event": "erasure",
            "notification": notification.id,
            "controller": current_app.config["CONTROLLER_NAME"],
            "reference": request.reference,
            "system": run.system,
            "system_label": label,
            "erased_at": run.finished_at.isoformat(timespec="seconds"),
            "subject": {"email": address},
            "acknowledge_url": link,
        },
    )


def notify_run(session: Session, systems: Systems, run: SystemRun, *, last_try: bool) -> int:
    """Deliver the run's notifications not yet delivered; commit each; return how many failed.

    A failure keeps its error for the next try; on the last try it is recorded for good.
    """
    failed = 0
    for notification, recipient in prepare_notifications(session, systems, run):
        if notification.sent_at is not None:
            continue
        notification.attempts += 1
        details = {"system": run.system, "recipient": recipient.name, "channel": recipient.channel}
        try:
            acknowledged = deliver(session, systems, notification, recipient)
        except DeliveryError as exc:
            notification.last_error = str(exc)
            log.warning("notifying a recipient of %s failed: %s", run.system, exc)
            if last_try:
                record_event(
                    session,
                    "worker",
                    "recipient.failed",
                    run.request.reference,
                    attempts=notification.attempts,
                    error=str(exc),
                    **details,
                )
            session.commit()
            failed += 1
            continue
        notification.sent_at = utcnow()
        notification.last_error = None
        record_event(session, "worker", "recipient.notified", run.request.reference, **details)
        if acknowledged:
            acknowledge(session, notification, BY_WEBHOOK)
        session.commit()  # one by one: a later failure must not send this one again
    return failed


def open_acknowledgement(session: Session, token: str) -> RecipientNotification:
    """Return the notification a link names; raise TokenError if tampered, expired or used."""
    reference, notification_id = read_token(
        current_app.config["SECRET_KEY"], PURPOSE, token, LINK_DAYS * 86400
    )
    notification = (
        session.get(RecipientNotification, int(notification_id))
        if (notification_id or "").isdigit()
        else None
    )
    if notification is None or notification.request.reference != reference:
        raise TokenError("invalid")
    if notification.acknowledged_at is not None:
        raise TokenError("used", reference)
    return notification


def acknowledge(session: Session, notification: RecipientNotification, by: str) -> None:
    """Record that the recipient erased the data too, in the caller's transaction."""
    notification.acknowledged_at = utcnow()
    notification.acknowledged_by = by
    record_event(
        session,
        f"recipient:{notification.recipient}",
        "recipient.acknowledged",
        notification.request.reference,
        system=notification.system,
        recipient=notification.recipient,
        channel=notification.channel,
        via="webhook" if by == BY_WEBHOOK else "link",
    )


def _moment(value) -> str | None:
    return value and value.replace(microsecond=0).isoformat()


def proof_recipients(session: Session, run: SystemRun) -> list[dict]:
    """Return what the proof says of the run's recipients: who, how, when told, answered."""
    systems = current_app.extensions["lethe.systems"]
    found = {
        n.recipient: n
        for n in session.scalars(
            sa.select(RecipientNotification).where(
                RecipientNotification.request_id == run.request_id,
                RecipientNotification.system == run.system,
            )
        )
    }
    configured = {r.name: r.channel for r in recipients_to_notify(systems, run)}
    result = []
    for name in [*found, *(n for n in configured if n not in found)]:
        notification = found.get(name)
        if notification is None:  # the job has not run yet: say so rather than omit it
            result.append({"name": name, "channel": configured[name], "state": "pending"})
            continue
        if notification.acknowledged_at:
            state = "acknowledged"
        elif notification.sent_at:
            state = "notified"
        elif notification.attempts > RETRIES:
            state = "failed"
        else:
            state = "pending"
        result.append(
            {
                "name": name,
                "channel": notification.channel,
                "state": state,
                "notified_at": _moment(notification.sent_at),
                "acknowledged_at": _moment(notification.acknowledged_at),
                "acknowledged_by": notification.acknowledged_by,
            }
        )
    return result
