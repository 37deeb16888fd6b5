"""What the DPO answers for: open work, deadlines kept, and the yearly report (CCPA §7102).

Every count is an SQL aggregate.  Days to answer and "answered on time" depend on the
controller's time zone, which SQLite cannot apply, so they are worked out from a stream of
four columns per answered request folded into a histogram of days: memory grows with the
number of distinct durations, never with the number of requests.

The words used throughout:

- *open*: any state not in ``core.lifecycle.CLOSED`` (completed, denied, cancelled,
  expired).  Partially completed is open: its failed systems can still be retried.
- *answered*: completed, partially completed or denied — the person got an answer.  It
  is answered when ``completed_at`` (or, for a refusal, ``decided_at``) says so.
- *ended*: answered, or cancelled by the person, or expired because the address was never
  confirmed; cancelled and expired requests end when their state last changed.
- *days to answer*: calendar days from the day of receipt to the day of the answer, both
  in the controller's time zone (answered the day it arrived = 0 days).
- *on time*: answered on or before the due date that binds (the extended one if any).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from core.lifecycle import CLOSED
from core.models import DataSubjectRequest, RequestType, Status

DSR = DataSubjectRequest

#: The open states, in the order a request goes through them.
OPEN_STATES: tuple[Status, ...] = tuple(state for state in Status if state not in CLOSED)
#: States in which the person has had an answer.
ANSWERED: tuple[Status, ...] = (Status.COMPLETED, Status.PARTIALLY_COMPLETED, Status.DENIED)
#: States in which a request ended without an answer being owed any more.
WITHDRAWN: tuple[Status, ...] = (Status.CANCELLED, Status.EXPIRED)
#: Every state a request can end in, in the order the dashboard shows them.
ENDED: tuple[Status, ...] = ANSWERED + WITHDRAWN


def effective_due() -> sa.ColumnElement[date]:
    """Return, in SQL, the due date that binds now: the extended one if there is one."""
    return sa.func.coalesce(DSR.extended_due_on, DSR.due_on)


def ended_at() -> sa.ColumnElement[datetime]:
    """Return, in SQL, when a request ended (meaningful for the states in ``ENDED`` only)."""
    return sa.func.coalesce(DSR.completed_at, DSR.decided_at, DSR.status_changed_at)


#: What a request with no reason code is shown as.
NOT_GIVEN = "not given"


def _zone() -> ZoneInfo:
    return ZoneInfo(current_app.config["TIMEZONE"])


def _local_day(moment: datetime, zone: ZoneInfo) -> date:
    return moment.astimezone(zone).date()


def _start_of(day: date, zone: ZoneInfo) -> datetime:
    """Return the UTC instant at which ``day`` begins in ``zone``."""
    return datetime.combine(day, time(0, 0), tzinfo=zone).astimezone(UTC)


# --- open work, as of today ------------------------------------------------------------


def open_by_state(session: Session) -> dict[Status, int]:
    """Return how many requests are in each open state, every open state listed (zeros too).

    Open means any state not in ``CLOSED``; partially completed counts as open because its
    failed systems can still be retried.
    """
    counts = dict.fromkeys(OPEN_STATES, 0)
    rows = session.execute(
        sa.select(DSR.status, sa.func.count()).where(DSR.status.not_in(CLOSED)).group_by(DSR.status)
    )
    for status, count in rows:
        counts[Status(status)] = count
    return counts


def count_overdue(session: Session, today: date) -> int:
    """Count open requests whose binding due date is before ``today``.

    Every open state counts — submitted (the clock runs from receipt, confirmed or not),
    verified, approved, running, partially completed and failed — and so does a request
    whose clock is paused, by its stored due date.  ``today`` is the controller's today.
    """
    return session.scalar(
        sa.select(sa.func.count())
        .select_from(DSR)
        .where(DSR.status.not_in(CLOSED), effective_due() < today)
    )


def count_due_within(session: Session, today: date, days: int) -> int:
    """Count open requests due from ``today`` to ``today + days`` inclusive (not yet overdue)."""
    return session.scalar(
        sa.select(sa.func.count())
        .select_from(DSR)
        .where(
            DSR.status.not_in(CLOSED),
            effective_due() >= today,
            effective_due() <= today + timedelta(days=days),
        )
    )


@dataclass(frozen=True)
class DueRequest:
    """An open request and the date that binds it; no personal data."""

    reference: str
    request_type: RequestType
    status: Status
    due: date


def due_between(
    session: Session, first: date | None, last: date, limit: int | None = None
) -> tuple[int, list[DueRequest]]:
    """Return how many open requests are due in a span of days, and the earliest ``limit``.

    The span runs from ``first`` (None: however long ago) to ``last``, both included.
    """
    where = [DSR.status.not_in(CLOSED), effective_due() <= last]
    if first is not None:
        where.append(effective_due() >= first)
    total = session.scalar(sa.select(sa.func.count()).select_from(DSR).where(*where))
    query = (
        sa.select(DSR.reference, DSR.request_type, DSR.status, effective_due())
        .where(*where)
        .order_by(effective_due(), DSR.received_at, DSR.reference)
        .limit(limit)
    )
    items = [
        DueRequest(reference, RequestType(kind), Status(status), due)
        for reference, kind, status, due in session.execute(query)
    ]
    return total, items


# --- periods ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """A span of days in the controller's time zone, both ends included."""

    key: str
    label: str
    first: date
    last: date

    def bounds(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """Return the UTC instants the period starts at (included) and ends at (excluded)."""
        return _start_of(self.first, zone), _start_of(self.last + timedelta(days=1), zone)


#: The periods every dashboard offers, before the past calendar years.
PERIODS = {"month": "this month", "30d": "the last 30 days", "year": "this year"}


def period_for(key: str, today: date) -> Period:
    """Return the period named ``key`` as of ``today``; raise ValueError if there is none.

    ``month`` and ``year`` run from their first day to today, ``30d`` is today and the 29
    days before it, and a four-digit year is that whole calendar year (not a future one).
    """
    if key == "month":
        return Period(key, PERIODS[key], today.replace(day=1), today)
    if key == "30d":
        return Period(key, PERIODS[key], today - timedelta(days=29), today)
    if key == "year":
        return Period(key, PERIODS[key], date(today.year, 1, 1), today)
    if len(key) == 4 and key.isdigit() and 1970 <= int(key) <= today.year:
        year = int(key)
        return Period(key, str(year), date(year, 1, 1), date(year, 12, 31))
    raise ValueError(f"{key!r} is not a period: choose this month, the last 30 days or a year")


def first_year(session: Session, today: date) -> int:
    """Return the calendar year of the oldest request received (this year if none)."""
    oldest = session.scalar(sa.select(sa.func.min(DSR.received_at)))
    if oldest is None:
        return today.year
    if oldest.tzinfo is None:  # min() loses the column type on some dialects
        oldest = oldest.replace(tzinfo=UTC)
    return min(_local_day(oldest, _zone()).year, today.year)


def period_choices(session: Session, today: date) -> list[tuple[str, str]]:
    """Return the periods to choose from: the built-in ones, then each past year with data."""
    years = range(today.year - 1, first_year(session, today) - 1, -1)
    return [*PERIODS.items(), *((str(year), str(year)) for year in years)]


# --- durations -------------------------------------------------------------------------


@dataclass
class Durations:
    """Days to answer as a histogram, with how many answers were on time and late."""

    days: Counter[int] = field(default_factory=Counter)
    on_time: int = 0
    late: int = 0

    def add(self, days: int, on_time: bool) -> None:
        """Count one answer that took ``days`` days."""
        self.days[days] += 1
        if on_time:
            self.on_time += 1
        else:
            self.late += 1

    @property
    def answered(self) -> int:
        """Return how many answers were counted."""
        return self.on_time + self.late

    @property
    def on_time_share(self) -> float | None:
        """Return the share of answers given on time (0 to 1), None if there were none."""
        return self.on_time / self.answered if self.answered else None

    @property
    def median(self) -> float | None:
        """Return the median number of days to answer, None if there were no answers."""
        total = self.answered
        if not total:
            return None
        wanted = (total - 1) // 2, total // 2  # the middle one, or the middle two
        found: list[int] = []
        seen = 0
        for days in sorted(self.days):
            seen += self.days[days]
            while len(found) < 2 and seen > wanted[len(found)]:
                found.append(days)
            if len(found) == 2:
                break
        return (found[0] + found[1]) / 2

    @property
    def mean(self) -> float | None:
        """Return the mean number of days to answer, None if there were no answers."""
        total = self.answered
        if not total:
            return None
        return sum(days * count for days, count in self.days.items()) / total


def _durations_by_type(session: Session, *where: Any) -> dict[RequestType, Durations]:
    """Fold the answered requests matching ``where`` into durations per request type."""
    zone = _zone()
    query = (
        sa.select(DSR.request_type, DSR.received_at, ended_at(), effective_due())
        .where(DSR.status.in_(ANSWERED), *where)
        .execution_options(yield_per=1000)
    )
    result: dict[RequestType, Durations] = {}
    rows = session.execute(query)
    try:
        for kind, received_at, answered_at, due in rows:
            answered_on = _local_day(answered_at, zone)
            result.setdefault(RequestType(kind), Durations()).add(
                (answered_on - _local_day(received_at, zone)).days, answered_on <= due
            )
    finally:
        rows.close()  # releases a server-side cursor on PostgreSQL
    return result


def _merge(parts: Iterable[Durations]) -> Durations:
    total = Durations()
    for part in parts:
        total.days.update(part.days)
        total.on_time += part.on_time
        total.late += part.late
    return total


# --- a period's summary ----------------------------------------------------------------


@dataclass(frozen=True)
class PeriodSummary:
    """What happened in a period; the breakdowns are (label, count), largest first."""

    period: Period
    #: Requests received in the period, whatever became of them.
    received: int
    #: Requests that ended in the period (answered, cancelled or expired).
    ended: int
    #: Days to answer and punctuality of the requests answered in the period.
    durations: Durations
    by_outcome: list[tuple[str, int]]
    by_type: list[tuple[str, int]]
    by_jurisdiction: list[tuple[str, int]]
    by_channel: list[tuple[str, int]]
    by_reason: list[tuple[str, int]]


def _breakdown(session: Session, column: Any, where: Sequence[Any]) -> list[tuple[Any, int]]:
    count = sa.func.count()
    rows = session.execute(
        sa.select(column, count).where(*where).group_by(column).order_by(count.desc(), column)
    )
    return [(value, n) for value, n in rows]


def summarise_period(session: Session, period: Period) -> PeriodSummary:
    """Return the period's numbers.

    ``received`` counts requests whose receipt falls in the period.  Everything else is
    about the requests that *ended* in it (see the module's words): the outcome, type,
    jurisdiction, channel and reason breakdowns count all of them; punctuality and days to
    answer count the answered ones only, since a cancelled or expired request was owed no
    answer.  Reasons are the codes people chose, with ``not given`` for none.
    """
    start, end = period.bounds(_zone())
    received = session.scalar(
        sa.select(sa.func.count())
        .select_from(DSR)
        .where(DSR.received_at >= start, DSR.received_at < end)
    )
    ended = [DSR.status.in_(ENDED), ended_at() >= start, ended_at() < end]
    outcomes = dict(_breakdown(session, DSR.status, ended))
    by_outcome = [(str(state), outcomes.get(state, 0)) for state in ENDED]
    reasons = _breakdown(session, DSR.reason_code, ended)
    return PeriodSummary(
        period=period,
        received=received,
        ended=sum(outcomes.values()),
        durations=_merge(
            _durations_by_type(session, ended_at() >= start, ended_at() < end).values()
        ),
        by_outcome=by_outcome,
        by_type=[(str(kind), n) for kind, n in _breakdown(session, DSR.request_type, ended)],
        by_jurisdiction=_breakdown(session, DSR.jurisdiction, ended),
        by_channel=[(str(channel), n) for channel, n in _breakdown(session, DSR.channel, ended)],
        by_reason=sorted(
            ((code or NOT_GIVEN, n) for code, n in reasons), key=lambda pair: (-pair[1], pair[0])
        ),
    )


# --- the yearly report -----------------------------------------------------------------

#: The CSV's header, one row per request type and a last row ``all``.
YEARLY_COLUMNS = (
    "year",
    "request_type",
    "received",
    "complied_in_whole",
    "complied_in_part",
    "denied",
    "cancelled",
    "expired",
    "still_open",
    "median_days_to_respond",
    "mean_days_to_respond",
)


@dataclass(frozen=True)
class YearlyRow:
    """One line of the yearly report."""

    year: int
    request_type: str
    received: int
    complied_in_whole: int
    complied_in_part: int
    denied: int
    cancelled: int
    expired: int
    still_open: int
    median_days: float | None
    mean_days: float | None

    def cells(self) -> list[object]:
        """Return the row's values in the order of ``YEARLY_COLUMNS``."""
        return [
            self.year,
            self.request_type,
            self.received,
            self.complied_in_whole,
            self.complied_in_part,
            self.denied,
            self.cancelled,
            self.expired,
            self.still_open,
            _days(self.median_days),
            _days(self.mean_days),
        ]


def _days(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _row(year: int, kind: str, states: Counter[Status], durations: Durations) -> YearlyRow:
    return YearlyRow(
        year=year,
        request_type=kind,
        received=sum(states.values()),
        complied_in_whole=states[Status.COMPLETED],
        complied_in_part=states[Status.PARTIALLY_COMPLETED],
        denied=states[Status.DENIED],
        cancelled=states[Status.CANCELLED],
        expired=states[Status.EXPIRED],
        still_open=sum(n for state, n in states.items() if state not in ENDED),
        median_days=durations.median,
        mean_days=durations.mean,
    )


def yearly_report(session: Session, year: int) -> list[YearlyRow]:
    """Return the §7102 metrics of the requests received in calendar ``year``.

    The year is that of receipt in the controller's time zone, and each request is counted
    once, by the state it is in now: complied with in whole (completed), in part (partially
    completed), denied, cancelled by the person, expired unconfirmed, or still open — so
    the outcome columns add up to ``received``, and a year's report changes only while some
    of its requests are still open.  "Responded" means answered (completed, partially
    completed or denied); the median and mean days to respond count those only, from the
    day of receipt to the day of the answer.  One row per request type, then ``all``.
    """
    zone = _zone()
    start, end = _start_of(date(year, 1, 1), zone), _start_of(date(year + 1, 1, 1), zone)
    received = [DSR.received_at >= start, DSR.received_at < end]
    states: dict[RequestType, Counter[Status]] = {kind: Counter() for kind in RequestType}
    rows = session.execute(
        sa.select(DSR.request_type, DSR.status, sa.func.count())
        .where(*received)
        .group_by(DSR.request_type, DSR.status)
    )
    for kind, status, count in rows:
        states[RequestType(kind)][Status(status)] += count
    durations = _durations_by_type(session, *received)
    report = [
        _row(year, str(kind), states[kind], durations.get(kind, Durations()))
        for kind in RequestType
    ]
    everything: Counter[Status] = Counter()
    for counts in states.values():
        everything.update(counts)
    report.append(_row(year, "all", everything, _merge(durations.values())))
    return report


#: First characters that make a spreadsheet read a cell as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_cell(value: object) -> object:
    """Return ``value`` safe for a spreadsheet: text that could be a formula gets a quote."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def yearly_report_csv(rows: Iterable[YearlyRow]) -> str:
    """Return the yearly report as CSV text, header first."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(YEARLY_COLUMNS)
    for row in rows:
        writer.writerow([csv_cell(cell) for cell in row.cells()])
    return out.getvalue()
