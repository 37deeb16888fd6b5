"""The DPO's queue: every request by legal deadline, filtered, searched and counted.

Overdue means not closed and past the date that binds now (the extended one if any),
whatever the state: a failed, paused or still unverified request is as late as any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.clock import open_pause, recompute_due_dates
from core.lifecycle import CLOSED
from core.metrics import effective_due
from core.models import (
    Channel,
    DataSubjectRequest,
    RequestPause,
    RequestType,
    Status,
    SubjectIdentity,
)
from core.operations import hash_email

#: The longest page of the queue; filters narrow it down.
PAGE = 200


@dataclass(frozen=True)
class QueueFilter:
    """What the DPO asked the queue to show."""

    state: str | None = None
    request_type: str | None = None
    jurisdiction: str | None = None
    channel: str | None = None
    due_within: int | None = None
    overdue: bool = False
    open_only: bool = False
    search: str = ""

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> QueueFilter:
        """Read the filter from query parameters, ignoring values that mean nothing."""
        due_within = args.get("due_within", "").strip()
        return cls(
            state=args.get("state") if args.get("state") in set(Status) else None,
            request_type=args.get("type") if args.get("type") in set(RequestType) else None,
            jurisdiction=(args.get("jurisdiction") or "").strip() or None,
            channel=args.get("channel") if args.get("channel") in set(Channel) else None,
            due_within=int(due_within) if due_within.isdigit() else None,
            overdue=args.get("overdue") == "1",
            open_only=args.get("open") == "1",
            search=(args.get("q") or "").strip()[:254],
        )

    @property
    def active(self) -> bool:
        """Return whether any filter narrows the queue."""
        return self != QueueFilter()


def _search(query: sa.Select, text: str) -> sa.Select:
    if "@" in text:
        # Addresses are stored only encrypted: they are found through their keyed hash.
        identity = sa.select(SubjectIdentity.id).where(
            SubjectIdentity.email_hash == hash_email(text)
        )
        return query.where(DataSubjectRequest.identity_id.in_(identity.scalar_subquery()))
    reference = text.upper()
    if not reference.startswith("DSR-"):
        reference = "DSR-" + reference
    return query.where(DataSubjectRequest.reference == reference)


def queue_query(wanted: QueueFilter, today: date) -> sa.Select:
    """Return the query of the requests ``wanted`` selects, the nearest due date first."""
    query = sa.select(DataSubjectRequest)
    if wanted.search:
        query = _search(query, wanted.search)
    if wanted.state:
        query = query.where(DataSubjectRequest.status == wanted.state)
    if wanted.request_type:
        query = query.where(DataSubjectRequest.request_type == wanted.request_type)
    if wanted.jurisdiction:
        query = query.where(DataSubjectRequest.jurisdiction == wanted.jurisdiction)
    if wanted.channel:
        query = query.where(DataSubjectRequest.channel == wanted.channel)
    if wanted.open_only or wanted.overdue or wanted.due_within is not None:
        query = query.where(DataSubjectRequest.status.not_in(CLOSED))
    if wanted.overdue:
        query = query.where(effective_due() < today)
    if wanted.due_within is not None:
        # Not yet late: the overdue ones have their own filter (and count).
        query = query.where(
            effective_due() >= today, effective_due() <= today + timedelta(days=wanted.due_within)
        )
    return query.order_by(effective_due(), DataSubjectRequest.received_at).limit(PAGE)


def state_counts(session: Session) -> dict[str, int]:
    """Return how many requests are in each state."""
    rows = session.execute(
        sa.select(DataSubjectRequest.status, sa.func.count()).group_by(DataSubjectRequest.status)
    ).all()
    return {str(status): count for status, count in rows}


def refresh_paused_clocks(session: Session, today: date) -> int:
    """Move the stored due dates of paused requests to where they stand today.

    While the clock is paused the due date moves a day each day; storing it keeps the
    queue's sorting and its overdue filter right.  Return how many requests moved.
    """
    paused = session.scalars(
        sa.select(DataSubjectRequest)
        .join(RequestPause, RequestPause.request_id == DataSubjectRequest.id)
        .where(RequestPause.ended_on.is_(None), DataSubjectRequest.status.not_in(CLOSED))
    ).all()
    moved = 0
    for request in paused:
        if open_pause(request) is None:
            continue
        before = request.effective_due_on
        recompute_due_dates(request, today)
        moved += request.effective_due_on != before
    return moved
