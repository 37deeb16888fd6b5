"""The request lifecycle: one function moves a request, over one table of allowed moves."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from core.audit import record_event
from core.models import DataSubjectRequest, Status, utcnow
from core.webhooks import queue_state_change

#: Every move a request may make.  Anything not listed here is refused.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.SUBMITTED: frozenset({Status.VERIFIED, Status.EXPIRED, Status.CANCELLED}),
    Status.VERIFIED: frozenset({Status.APPROVED, Status.DENIED, Status.CANCELLED}),
    Status.APPROVED: frozenset({Status.RUNNING, Status.CANCELLED}),
    Status.RUNNING: frozenset({Status.COMPLETED, Status.PARTIALLY_COMPLETED, Status.FAILED}),
    Status.PARTIALLY_COMPLETED: frozenset({Status.RUNNING}),
    Status.FAILED: frozenset({Status.RUNNING}),
    Status.COMPLETED: frozenset(),
    Status.EXPIRED: frozenset(),
    Status.DENIED: frozenset(),
    Status.CANCELLED: frozenset(),
}

#: States a request never leaves: its legal clock has stopped.
CLOSED = frozenset(state for state, moves in TRANSITIONS.items() if not moves)


class TransitionError(ValueError):
    """A move that the lifecycle does not allow."""


def transition(
    session: Session, request: DataSubjectRequest, to: Status, *, actor: str, **details: Any
) -> None:
    """Move ``request`` to ``to`` and audit the move in the same transaction."""
    current = Status(request.status)
    if to not in TRANSITIONS[current]:
        raise TransitionError(f"request {request.reference} cannot go from {current} to {to}")
    request.status = to
    request.status_changed_at = utcnow()
    record_event(
        session, actor, f"status.{to}", request.reference, **{"from": str(current), **details}
    )
    queue_state_change(session, request, current, to)  # sent once the transaction commits
