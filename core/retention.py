"""Forget what we hold about a person once the record of their request need not name them.

A closed request keeps its personal data (the address, what the person typed, staff's
notes about them) for ``LETHE_RETENTION_DAYS`` after it closed, so staff can answer
questions about it; then the scheduler purges that data.  What remains proves what was
done without naming anyone: the request's dates, states and codes, the runs, the signed
proofs and the audit log.  The person's address goes when no request of theirs needs it
any more and no legal hold is on them; the keyed hash stays, so a proof still matches a
later request of the same person.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.audit import record_event
from core.exports import purge_package
from core.holds import active_holds
from core.lifecycle import CLOSED
from core.models import DataSubjectRequest, SubjectIdentity, utcnow

#: The request's columns that hold personal data, all sealed.
SEALED_COLUMNS = (
    "customer_number_sealed",
    "reason_sealed",
    "feedback_sealed",
    "decision_note_sealed",
    "extension_note_sealed",
    "identity_note_sealed",
)


def due_for_purge(session: Session, days: int) -> list[DataSubjectRequest]:
    """Return the closed requests whose retention ended and whose data is not purged yet."""
    limit = utcnow() - timedelta(days=days)
    return list(
        session.scalars(
            sa.select(DataSubjectRequest)
            .where(
                DataSubjectRequest.status.in_(CLOSED),
                DataSubjectRequest.status_changed_at < limit,
                DataSubjectRequest.purged_at.is_(None),
            )
            .order_by(DataSubjectRequest.id)
        )
    )


def purge_request(session: Session, request: DataSubjectRequest) -> bool:
    """Drop the request's personal data and, if nothing else needs it, the person's address.

    Return whether the address went too.
    """
    for column in SEALED_COLUMNS:
        setattr(request, column, None)
    request.purged_at = utcnow()
    for package in request.exports:
        if package.purged_at is None:  # the hourly purge normally got there long before
            purge_package(session, package)
    record_event(session, "scheduler", "request.purged", request.reference)
    return _forget_address(session, request.identity)


def _forget_address(session: Session, identity: SubjectIdentity) -> bool:
    if identity.email_sealed is None:
        return False
    unpurged = session.scalar(
        sa.select(sa.func.count())
        .select_from(DataSubjectRequest)
        .where(
            DataSubjectRequest.identity_id == identity.id,
            DataSubjectRequest.purged_at.is_(None),
        )
    )
    on_them = [h for h in active_holds(session, identity.id) if h.identity_id == identity.id]
    if unpurged or on_them:
        return False  # another request still runs or is within its retention, or a hold
    identity.email_sealed, identity.purged_at = None, utcnow()
    return True


def purge_expired_personal_data(session: Session, days: int) -> dict[str, int]:
    """Purge every request past its retention; return how many requests and addresses."""
    requests = addresses = 0
    for request in due_for_purge(session, days):
        addresses += purge_request(session, request)
        requests += 1
    return {"requests": requests, "addresses": addresses}
