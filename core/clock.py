"""A request's legal clock: its due dates, pauses while identity is being checked, days left.

The due dates are stored on the request (``due_on``, ``extended_due_on``) so the queue can
sort and filter on them; every change of what they depend on — a pause, its end, the
jurisdiction — recomputes them here, through ``core.deadlines``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy.orm import Session

from core import deadlines
from core.audit import record_event
from core.lifecycle import CLOSED
from core.models import DataSubjectRequest, RequestPause, StaffUser
from core.operations import DomainError, received_on

#: The only reason the law allows the clock to stand still: waiting for information
#: needed to identify the person (GDPR Art. 12(6), deadlines.md rule 5).
PAUSE_REASON = "identity-information"


def today() -> date:
    """Return today's date in the controller's time zone."""
    return datetime.now(ZoneInfo(current_app.config["TIMEZONE"])).date()


def open_pause(request: DataSubjectRequest) -> RequestPause | None:
    """Return the pause that is still running, if any."""
    return next((pause for pause in request.pauses if pause.ended_on is None), None)


def pauses_of(request: DataSubjectRequest, until: date) -> list[deadlines.Pause]:
    """Return the request's pauses as intervals, a running one ending on ``until``."""
    return [(p.started_on, p.ended_on or max(until, p.started_on)) for p in request.pauses]


def _rule_pauses(request: DataSubjectRequest) -> bool:
    rule = deadlines.get_rule(request.jurisdiction)
    return getattr(rule, "on_pause", deadlines.PauseMode.IGNORE) != deadlines.PauseMode.IGNORE


def can_pause(request: DataSubjectRequest) -> bool:
    """Return whether the clock of ``request`` may be paused now."""
    return (
        current_app.config["ALLOW_PAUSE"]
        and _rule_pauses(request)
        and request.status not in CLOSED
        and open_pause(request) is None
        and today() <= request.effective_due_on
    )


def recompute_due_dates(request: DataSubjectRequest, until: date | None = None) -> None:
    """Set the stored due dates from the receipt, the pauses and the extension."""
    until = until or today()
    clock = {
        "country": request.holiday_country,
        "subdivision": request.holiday_subdivision,
        "pauses": pauses_of(request, until),
    }
    received = received_on(request).date()
    request.due_on = deadlines.due_on(request.jurisdiction, received, **clock)
    if request.extended_due_on is not None:
        request.extended_due_on = deadlines.due_on(
            request.jurisdiction, received, extended=True, **clock
        )


def pause_clock(session: Session, request: DataSubjectRequest, staff: StaffUser) -> RequestPause:
    """Stop the clock from today while the person is asked to prove who they are."""
    if not can_pause(request):
        raise DomainError(
            f"the clock of {request.reference} cannot be paused now: it is already paused, "
            "the request is closed, its due date has passed, or its jurisdiction "
            f"({request.jurisdiction}) or this deployment does not allow pauses"
        )
    pause = RequestPause(
        request=request, started_on=today(), reason=PAUSE_REASON, started_by_id=staff.id
    )
    session.add(pause)
    record_event(
        session,
        f"staff:{staff.email}",
        "request.paused",
        request.reference,
        reason=PAUSE_REASON,
        started_on=pause.started_on.isoformat(),
    )
    return pause


def resume_clock(session: Session, request: DataSubjectRequest, staff: StaffUser) -> date:
    """End the running pause today and return the new due date."""
    pause = open_pause(request)
    if pause is None:
        raise DomainError(f"the clock of {request.reference} is not paused")
    pause.ended_on, pause.ended_by_id = today(), staff.id
    recompute_due_dates(request)
    record_event(
        session,
        f"staff:{staff.email}",
        "request.resumed",
        request.reference,
        paused_days=(pause.ended_on - pause.started_on).days,
        due_on=request.effective_due_on.isoformat(),
    )
    return request.effective_due_on


@dataclass(frozen=True)
class Clock:
    """What the request page and the queue say about a request's time."""

    received: date
    due: date
    days_left: int
    overdue: bool
    paused_since: date | None
    paused_days: int
    extended: bool


def clock_of(request: DataSubjectRequest) -> Clock:
    """Return the request's clock as of today; a running pause counts up to today."""
    now = today()
    pause = open_pause(request)
    due = request.effective_due_on
    if pause is not None:
        # While paused the due date moves a day each day; show where it stands today.
        received = received_on(request).date()
        clock = {
            "country": request.holiday_country,
            "subdivision": request.holiday_subdivision,
            "pauses": pauses_of(request, now),
        }
        due = deadlines.due_on(
            request.jurisdiction,
            received,
            extended=request.extended_due_on is not None,
            **clock,
        )
    paused_days = sum((end - start).days for start, end in pauses_of(request, now))
    return Clock(
        received=received_on(request).date(),
        due=due,
        days_left=(due - now).days,
        overdue=request.status not in CLOSED and due < now,
        paused_since=pause.started_on if pause else None,
        paused_days=paused_days,
        extended=request.extended_due_on is not None,
    )
