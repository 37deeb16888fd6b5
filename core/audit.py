"""The audit log as a hash chain: each event seals the one before it.

Events hold references, system names, counts and staff identities — never a subject's
personal data — so the chain can be kept after the request's personal data is purged.

Verification recomputes every hash.  :class:`ChainCache` lets frequent checks (a proof
upload) verify only what was appended since the last verified head; see its docstring for
what that can and cannot see.  The auditor's page and ``lethe audit verify`` always verify
the whole chain.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session, SessionTransaction, scoped_session

from core.models import AuditEvent, utcnow

GENESIS = "0" * 64
#: Arbitrary constant naming the PostgreSQL advisory lock that serialises appends.
_CHAIN_LOCK = 0x1E7E
#: session.info key: (transaction, position, hash) of the last event it appended.
_HEAD = "lethe_audit_head"


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


def hash_of(event: Any, prev_hash: str) -> str:
    """Return the hash that seals a stored ``event`` (row or object) to ``prev_hash``."""
    return event_hash(
        prev_hash,
        event.position,
        event.occurred_at.isoformat(),
        event.actor,
        event.action,
        event.reference,
        event.details,
    )


def _transaction(session: Session | scoped_session) -> SessionTransaction | None:
    """Return the session's outermost transaction (Flask-SQLAlchemy's is a scoped session)."""
    real = session() if isinstance(session, scoped_session) else session
    return real.get_transaction()


def record_event(
    session: Session, actor: str, action: str, reference: str | None = None, **details: Any
) -> AuditEvent:
    """Append an event to the chain in the caller's transaction.

    The first event of a transaction takes the chain's lock and reads the head; the
    transaction keeps the lock until it ends, so its next events continue from the head it
    wrote itself without asking the database again.
    """
    transaction = _transaction(session)
    known = session.info.get(_HEAD)
    if transaction is not None and known is not None and known[0] is transaction:
        position, prev_hash = known[1] + 1, known[2]
    else:
        if session.get_bind().dialect.name == "postgresql":
            # Two transactions appending at once would fork the chain; the lock queues them.
            session.execute(sa.select(sa.func.pg_advisory_xact_lock(_CHAIN_LOCK)))
        last, prev_hash = chain_head(session)
        position = last + 1
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
    session.info[_HEAD] = (_transaction(session), position, event.hash)
    return event


@dataclass
class ChainCheck:
    """The result of re-computing the chain from its first event."""

    ok: bool
    events: int
    head_hash: str
    problem: str = ""


#: The columns a verification reads: plain rows, not ORM objects, are much faster to walk.
_CHAIN_COLUMNS = (
    AuditEvent.position,
    AuditEvent.occurred_at,
    AuditEvent.actor,
    AuditEvent.action,
    AuditEvent.reference,
    AuditEvent.details,
    AuditEvent.prev_hash,
    AuditEvent.hash,
)


def verify_chain(session: Session, through: int | None = None) -> ChainCheck:
    """Recompute every hash in order (up to position ``through``) and report the first break."""
    return _verify_range(session, 0, GENESIS, through)


def _verify_range(session: Session, after: int, prev_hash: str, through: int | None) -> ChainCheck:
    """Recompute the hashes of the events after position ``after``, which has ``prev_hash``."""
    query = (
        sa.select(*_CHAIN_COLUMNS)
        .where(AuditEvent.position > after)
        .order_by(AuditEvent.position)
        .execution_options(yield_per=1000)
    )
    if through is not None:
        query = query.where(AuditEvent.position <= through)
    result = session.execute(query)
    try:
        return _walk(result, after, prev_hash)
    finally:
        result.close()  # a break found early must not leave a server-side cursor open


def _walk(events: Iterable[Any], count: int = 0, prev_hash: str = GENESIS) -> ChainCheck:
    for event in events:
        count += 1
        if event.position != count:
            return ChainCheck(False, count, prev_hash, f"event {count} is missing")
        if event.prev_hash != prev_hash:
            return ChainCheck(
                False, count, prev_hash, f"event {event.position} does not follow its predecessor"
            )
        if hash_of(event, prev_hash) != event.hash:
            return ChainCheck(
                False, count, prev_hash, f"event {event.position} was altered after it was written"
            )
        prev_hash = event.hash
    return ChainCheck(True, count, prev_hash)


@dataclass
class ChainCache:
    """The newest head this process verified, so that the next check starts from it.

    Kept per process (on the app), never in the database: whoever can edit audit rows can
    edit a table too, and a forged "verified up to here" would hide their edit.

    A check from the cache re-reads the cached head row: an event edited and the chain
    re-hashed from it changes that row's hash, and everything is verified again.  An event
    inside the verified prefix edited *without* re-hashing is only seen by a full
    verification: one runs when the cache is older than ``max_age`` seconds
    (``AUDIT_CHAIN_FULL_CHECK_SECONDS``) and on every view of the auditor's page, and each
    refreshes the cache, or clears it on a break.
    """

    max_age: float = 600.0
    position: int = 0
    hash: str = GENESIS
    verified_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def remember(self, check: ChainCheck, *, full: bool = True) -> None:
        """Keep the head a verification reached if the chain held, else forget everything.

        Only a full verification restarts the clock: extending a verified prefix with the
        events appended since says nothing new about the prefix itself.
        """
        with self.lock:
            if not check.ok:
                self.position, self.hash, self.verified_at = 0, GENESIS, None
            elif full or self.verified_at is not None:
                self.position, self.hash = check.events, check.head_hash
                if full:
                    self.verified_at = time.monotonic()

    def start(self) -> tuple[int, str] | None:
        """Return the verified head to continue from, or None when a full check is due."""
        with self.lock:
            if self.verified_at is None or time.monotonic() - self.verified_at > self.max_age:
                return None
            return self.position, self.hash


def verify_chain_cached(
    session: Session, cache: ChainCache, through: int | None = None
) -> ChainCheck:
    """Verify the chain (up to ``through``) from the cached head, or fully if that is stale."""
    start = cache.start()
    if start is not None and start[0]:
        stored = session.scalar(sa.select(AuditEvent.hash).where(AuditEvent.position == start[0]))
        if stored != start[1]:
            start = None  # the verified prefix changed: trust none of it
    if start is None:
        check = verify_chain(session, through)
        cache.remember(check)
        return check
    position, head_hash = start
    if through is not None and through <= position:
        stored = session.scalar(sa.select(AuditEvent.hash).where(AuditEvent.position == through))
        if stored is None:
            check = ChainCheck(False, through, head_hash, f"event {through} is missing")
            cache.remember(check)
            return check
        return ChainCheck(True, through, stored)
    check = _verify_range(session, position, head_hash, through)
    cache.remember(check, full=False)
    return check


def current_chain_cache() -> ChainCache:
    """Return this process's cache of the app's verified chain head."""
    cache = current_app.extensions.get("lethe.audit_chain")
    if cache is None:
        max_age = float(current_app.config.get("AUDIT_CHAIN_FULL_CHECK_SECONDS", 600))
        cache = current_app.extensions.setdefault("lethe.audit_chain", ChainCache(max_age))
    return cache


def chain_head(session: Session) -> tuple[int, str]:
    """Return the position and hash of the newest event (0 and the genesis hash if none)."""
    head = session.execute(
        sa.select(AuditEvent.position, AuditEvent.hash)
        .order_by(AuditEvent.position.desc())
        .limit(1)
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
