"""The audit log as a hash chain: each event seals the one before it.

Events hold references, system names, counts and staff identities — never a subject's
personal data — so the chain can be kept after the request's personal data is purged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.models import AuditEvent, utcnow

GENESIS = "0" * 64
#: Arbitrary constant naming the PostgreSQL advisory lock that serialises appends.
_CHAIN_LOCK = 0x1E7E


def event_hash(
    prev_hash: str,
    position: int,
    occurred_at: str,
    actor: str,
    action: str,
    reference: str | None,
    details: dict[str, Any],
) -> str:
    """Return the hash that seals one event to its predecessor."""
    body = json.dumps(
        [position, occurred_at, actor, action, reference, details],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def record_event(
    session: Session, actor: str, action: str, reference: str | None = None, **details: Any
) -> AuditEvent:
    """Append an event to the chain in the caller's transaction."""
    if session.get_bind().dialect.name == "postgresql":
        # Two transactions appending at once would fork the chain; the lock makes them queue.
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(_CHAIN_LOCK)))
    head = session.scalars(
        sa.select(AuditEvent).order_by(AuditEvent.position.desc()).limit(1)
    ).first()
    position = head.position + 1 if head else 1
    prev_hash = head.hash if head else GENESIS
    occurred_at = utcnow().replace(microsecond=0)
    event = AuditEvent(
        position=position,
        occurred_at=occurred_at,
        actor=actor,
        action=action,
        reference=reference,
        details=details,
        prev_hash=prev_hash,
        hash=event_hash(
            prev_hash, position, occurred_at.isoformat(), actor, action, reference, details
        ),
    )
    session.add(event)
    session.flush()
    return event


@dataclass
class ChainCheck:
    """The result of re-computing the chain from its first event."""

    ok: bool
    events: int
    head_hash: str
    problem: str = ""


def verify_chain(session: Session, through: int | None = None) -> ChainCheck:
    """Recompute every hash in order (up to position ``through``) and report the first break."""
    query = sa.select(AuditEvent).order_by(AuditEvent.position).execution_options(yield_per=500)
    if through is not None:
        query = query.where(AuditEvent.position <= through)
    result = session.scalars(query)
    try:
        return _walk(result)
    finally:
        result.close()  # a break found early must not leave a server-side cursor open


def _walk(events: Iterable[AuditEvent]) -> ChainCheck:
    prev_hash, count = GENESIS, 0
    for event in events:
        count += 1
        if event.position != count:
            return ChainCheck(False, count, prev_hash, f"event {count} is missing")
        if event.prev_hash != prev_hash:
            return ChainCheck(
                False, count, prev_hash, f"event {event.position} does not follow its predecessor"
            )
        expected = event_hash(
            prev_hash,
            event.position,
            event.occurred_at.isoformat(),
            event.actor,
            event.action,
            event.reference,
            event.details,
        )
        if expected != event.hash:
            return ChainCheck(
                False, count, prev_hash, f"event {event.position} was altered after it was written"
            )
        prev_hash = event.hash
    return ChainCheck(True, count, prev_hash)


def chain_head(session: Session) -> tuple[int, str]:
    """Return the position and hash of the newest event (0 and the genesis hash if none)."""
    head = session.scalars(
        sa.select(AuditEvent).order_by(AuditEvent.position.desc()).limit(1)
    ).first()
    return (head.position, head.hash) if head else (0, GENESIS)


def timeline_of(session: Session, reference: str) -> list[AuditEvent]:
    """Return the audit events of one request, oldest first."""
    return list(
        session.scalars(
            sa.select(AuditEvent)
            .where(AuditEvent.reference == reference)
            .order_by(AuditEvent.position)
        )
    )
