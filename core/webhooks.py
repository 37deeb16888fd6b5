"""Webhooks out: every change of a request's state is POSTed, signed, to the configured URLs.

A delivery is a row written in the transaction that changes the state, so a rollback sends
nothing and a restart loses nothing; it is put on the job queue only once that transaction
has committed.  A receiver that fails is tried again after an exponential backoff, up to
``WEBHOOK_MAX_ATTEMPTS`` times; the scheduler picks up any delivery whose task was lost.
Delivery is at least once: receivers drop an event id they have already seen.

The body names the request by reference and holds no personal data.  It is signed with
HMAC-SHA256 under ``WEBHOOK_SECRET`` over ``"<timestamp>.<body>"``; the timestamp (Unix
seconds, in ``Lethe-Timestamp``) is that of the attempt, so receivers refuse one older
than :data:`REPLAY_WINDOW_SECONDS`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from datetime import datetime, timedelta

import requests
import sqlalchemy as sa
from celery import shared_task
from flask import current_app
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.extensions import db
from core.models import DataSubjectRequest, Status, UTCDateTime, utcnow

log = logging.getLogger(__name__)

#: How old a signed timestamp a receiver should still accept.
REPLAY_WINDOW_SECONDS = 300
#: How long a claimed delivery is left to its worker before the scheduler may try it again.
LEASE_SECONDS = 120
_PENDING = "lethe.webhooks"


class WebhookDelivery(db.Model):
    """One event for one receiving URL, until it is delivered or given up."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (sa.UniqueConstraint("event_id", "url"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    url: Mapped[str] = mapped_column(sa.String(2048))
    #: The exact JSON body sent (and signed), free of personal data.
    body: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_error: Mapped[str | None] = mapped_column(sa.String(500))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    gave_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def sign(secret: str, timestamp: str, body: str) -> str:
    """Return the hex HMAC-SHA256 under ``secret`` of ``"<timestamp>.<body>"``."""
    message = f"{timestamp}.{body}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def queue_state_change(
    session: Session, request: DataSubjectRequest, old: Status, new: Status
) -> None:
    """Write a delivery per configured URL for the move of ``request`` from ``old`` to ``new``."""
    urls = current_app.config.get("WEBHOOK_URLS") or []
    if not urls:
        return
    now = utcnow()
    body = json.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": "request.state_changed",
            "reference": request.reference,
            "request_type": str(request.request_type),
            "old_state": str(old),
            "new_state": str(new),
            "occurred_at": now.isoformat(),
        },
        separators=(",", ":"),
    )
    event_id = json.loads(body)["id"]
    deliveries = [
        WebhookDelivery(event_id=event_id, url=url, body=body, next_attempt_at=now) for url in urls
    ]
    session.add_all(deliveries)
    session.flush()
    session.info.setdefault(_PENDING, []).extend(d.id for d in deliveries)


@sa.event.listens_for(Session, "after_commit")
def _enqueue_committed(session: Session) -> None:
    # Only now do the rows exist for a worker to read.  If the broker is unreachable the
    # rows stay due and the scheduler sends them.
    for delivery_id in session.info.pop(_PENDING, []):
        try:
            deliver_webhook.delay(delivery_id)
        except Exception:
            log.exception(
                "webhook delivery %s could not be queued; the scheduler will", delivery_id
            )


@sa.event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


def backoff_seconds(attempts: int) -> int:
    """Return how long to wait after the ``attempts``-th failed attempt."""
    config = current_app.config
    return min(config["WEBHOOK_BASE_SECONDS"] * 2 ** (attempts - 1), config["WEBHOOK_MAX_SECONDS"])


def _post(delivery: WebhookDelivery) -> str | None:
    """POST the delivery once; return None on success, else what went wrong."""
    config = current_app.config
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Lethe-Webhooks/1",
        "Lethe-Event-Id": delivery.event_id,
        "Lethe-Timestamp": timestamp,
        "Lethe-Signature": "v1=" + sign(config["WEBHOOK_SECRET"], timestamp, delivery.body),
    }
    try:
        response = requests.post(
            delivery.url,
            data=delivery.body.encode(),
            headers=headers,
            timeout=config["WEBHOOK_TIMEOUT_SECONDS"],
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


def _claim(delivery_id: int, now: datetime) -> bool:
    # One conditional UPDATE: a task delivered twice, or racing the scheduler, posts once.
    claimed = db.session.execute(
        sa.update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.delivered_at.is_(None),
            WebhookDelivery.gave_up_at.is_(None),
            WebhookDelivery.next_attempt_at <= now,
        )
        .values(
            attempts=WebhookDelivery.attempts + 1,
            next_attempt_at=now + timedelta(seconds=LEASE_SECONDS),
        )
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return claimed.rowcount == 1


@shared_task(name="core.webhooks.deliver_webhook")
def deliver_webhook(delivery_id: int) -> bool:
    """Try one delivery; on failure schedule the next try. Return whether it was delivered."""
    if not _claim(delivery_id, utcnow()):
        return False
    delivery = db.session.get(WebhookDelivery, delivery_id)
    error = _post(delivery)
    if error is None:
        delivery.delivered_at, delivery.last_error = utcnow(), None
        db.session.commit()
        return True
    delivery.last_error = error
    if delivery.attempts >= current_app.config["WEBHOOK_MAX_ATTEMPTS"]:
        delivery.gave_up_at = utcnow()
        db.session.commit()
        log.error("webhook %s to %s given up: %s", delivery.event_id, delivery.url, error)
        return False
    delay = backoff_seconds(delivery.attempts)
    delivery.next_attempt_at = utcnow() + timedelta(seconds=delay)
    db.session.commit()
    deliver_webhook.apply_async((delivery_id,), countdown=delay)
    return False


@shared_task(name="core.webhooks.retry_due_webhooks")
def retry_due_webhooks() -> int:
    """Queue every delivery that is due and not being tried (a lost task); return how many."""
    due = db.session.scalars(
        sa.select(WebhookDelivery.id)
        .where(
            WebhookDelivery.delivered_at.is_(None),
            WebhookDelivery.gave_up_at.is_(None),
            WebhookDelivery.next_attempt_at <= utcnow(),
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(500)
    ).all()
    db.session.rollback()
    for delivery_id in due:
        deliver_webhook.delay(delivery_id)
    return len(due)
