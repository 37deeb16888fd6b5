"""The DPO's numbers: overdue and due soon, a period's punctuality, the yearly §7102 report."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime

import pytest

from core.cli import cli
from core.extensions import db
from core.metrics import (
    YEARLY_COLUMNS,
    Durations,
    YearlyRow,
    count_due_within,
    count_overdue,
    csv_cell,
    open_by_state,
    period_for,
    summarise_period,
    yearly_report,
    yearly_report_csv,
)
from core.models import Channel, RequestPause, RequestType, Status
from core.operations import submit_request

_numbers = itertools.count(1)


def at(day: str, clock: str = "12:00") -> datetime:
    """Return an aware UTC moment from ``YYYY-MM-DD`` and ``HH:MM``."""
    return datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=UTC)


def add_request(
    status: Status,
    *,
    received: datetime,
    due: str | date,
    ended: datetime | None = None,
    extended: str | None = None,
    kind: RequestType = RequestType.ERASURE,
    jurisdiction: str = "gdpr-eu",
    channel: Channel = Channel.PORTAL,
    reason: str | None = None,
    email: str | None = None,
) -> str:
    """Record a request through the domain, then set its state and dates; return its reference.

    Call inside an app context; ``ended`` is when it was answered, cancelled or expired.
    """
    request, created = submit_request(
        db.session, email or f"person{next(_numbers)}@example.com", kind
    )
    assert created
    request.status = status
    request.received_at = received
    request.due_on = date.fromisoformat(due) if isinstance(due, str) else due
    request.extended_due_on = date.fromisoformat(extended) if extended else None
    request.jurisdiction = jurisdiction
    request.channel = channel
    request.reason_code = reason
    request.status_changed_at = ended or received
    if ended and status in (Status.COMPLETED, Status.PARTIALLY_COMPLETED):
        request.completed_at = ended
    if ended and status == Status.DENIED:
        request.decided_at = ended
    db.session.commit()
    return request.reference


def test_overdue_counts_every_open_state_failed_and_paused_included_and_no_closed_one(app):
    today = date(2026, 3, 10)
    with app.app_context():
        for status in (
            Status.SUBMITTED,  # received but never confirmed: the clock runs all the same
            Status.VERIFIED,
            Status.APPROVED,
            Status.RUNNING,
            Status.PARTIALLY_COMPLETED,
            Status.FAILED,
        ):
            add_request(status, received=at("2026-02-06"), due="2026-03-09")
        paused = add_request(Status.VERIFIED, received=at("2026-02-01"), due="2026-03-02")
        for status in (Status.COMPLETED, Status.DENIED, Status.CANCELLED, Status.EXPIRED):
            add_request(status, received=at("2026-02-06"), due="2026-03-09", ended=at("2026-03-09"))
        # Extended in time: bound by the new date, so not late.
        add_request(
            Status.VERIFIED, received=at("2026-01-05"), due="2026-02-05", extended="2026-04-06"
        )
        add_request(Status.VERIFIED, received=at("2026-02-10"), due="2026-03-10")  # due today
        add_request(Status.APPROVED, received=at("2026-02-17"), due="2026-03-17")  # 7 days
        add_request(Status.VERIFIED, received=at("2026-02-18"), due="2026-03-18")  # 8 days
        from core.operations import find_request

        request = find_request(db.session, paused)
        db.session.add(
            RequestPause(
                request=request, started_on=date(2026, 2, 20), reason="identity-information"
            )
        )
        db.session.commit()

        assert count_overdue(db.session, today) == 7
        assert count_due_within(db.session, today, 7) == 2
        assert count_due_within(db.session, today, 0) == 1
        assert open_by_state(db.session) == {
            Status.SUBMITTED: 1,
            Status.VERIFIED: 5,
            Status.APPROVED: 2,
            Status.RUNNING: 1,
            Status.PARTIALLY_COMPLETED: 1,
            Status.FAILED: 1,
        }


def test_an_empty_database_counts_zero_everywhere(app):
    today = date(2026, 3, 10)
    with app.app_context():
        assert count_overdue(db.session, today) == 0
        assert set(open_by_state(db.session).values()) == {0}
        summary = summarise_period(db.session, period_for("month", today))
        assert (summary.received, summary.ended) == (0, 0)
        assert summary.durations.median is None and summary.durations.on_time_share is None
        assert all(
            row.received == 0 and row.median_days is None for row in yearly_report(db.session, 2026)
        )


def test_a_period_counts_answers_on_time_and_late_and_their_median(app):
    with app.app_context():  # Europe/Dublin: GMT until 29 March 2026, then GMT+1
        on_time = add_request(
            Status.COMPLETED,
            received=at("2026-03-02"),
            due="2026-04-02",
            ended=at("2026-03-05"),
            channel=Channel.EMAIL,
            reason="moving-provider",
        )
        late = add_request(
            Status.COMPLETED,
            received=at("2026-01-05"),
            due="2026-02-05",
            ended=at("2026-03-10"),
            reason="moving-provider",
        )
        add_request(
            Status.DENIED,
            received=at("2026-03-01"),
            due="2026-04-01",
            ended=at("2026-03-11"),
            kind=RequestType.ACCESS,
        )
        # Answered on its due date, late in the evening: still on time.
        add_request(
            Status.PARTIALLY_COMPLETED,
            received=at("2026-02-20"),
            due="2026-03-20",
            ended=at("2026-03-20", "23:30"),
        )
        # Late by the first date, on time by the extended one.
        add_request(
            Status.COMPLETED,
            received=at("2026-01-10"),
            due="2026-02-10",
            extended="2026-04-10",
            ended=at("2026-03-15"),
            jurisdiction="ccpa",
        )
        add_request(
            Status.CANCELLED, received=at("2026-03-03"), due="2026-04-03", ended=at("2026-03-04")
        )
        add_request(
            Status.EXPIRED, received=at("2026-03-01"), due="2026-04-01", ended=at("2026-03-08")
        )
        # Ended in February, or on 1 April in Dublin (23:30 UTC on 31 March): not in March.
        add_request(
            Status.COMPLETED, received=at("2026-02-01"), due="2026-03-02", ended=at("2026-02-20")
        )
        add_request(
            Status.COMPLETED,
            received=at("2026-03-02"),
            due="2026-04-02",
            ended=at("2026-03-31", "23:30"),
        )
        add_request(Status.VERIFIED, received=at("2026-03-09"), due="2026-04-09")

        summary = summarise_period(db.session, period_for("month", date(2026, 3, 31)))

    assert on_time != late
    assert summary.received == 6  # 2, 1, 3, 1 and 2 March, and the open one on the 9th
    assert summary.ended == 7
    assert summary.by_outcome == [
        ("completed", 3),
        ("partially_completed", 1),
        ("denied", 1),
        ("cancelled", 1),
        ("expired", 1),
    ]
    durations = summary.durations
    assert (durations.on_time, durations.late) == (4, 1)
    assert durations.on_time_share == pytest.approx(0.8)
    # Days: 3, 64, 10, 28, 64 -> median 28, mean 33.8.
    assert durations.median == 28
    assert durations.mean == pytest.approx(33.8)
    assert summary.by_type == [("erasure", 6), ("access", 1)]
    assert summary.by_jurisdiction == [("gdpr-eu", 6), ("ccpa", 1)]
    assert summary.by_channel == [("portal", 6), ("email", 1)]
    assert summary.by_reason == [("not given", 5), ("moving-provider", 2)]


def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two():
    durations = Durations()
    for days, on_time in ((1, True), (10, False), (2, True), (3, True)):
        durations.add(days, on_time)
    assert durations.median == 2.5
    assert durations.mean == 4
    assert durations.on_time_share == 0.75
    assert Durations().median is None


def test_periods_run_in_whole_days_and_refuse_what_they_do_not_know():
    today = date(2026, 3, 10)
    month, last30, year, past = (period_for(key, today) for key in ("month", "30d", "year", "2025"))
    assert (month.first, month.last) == (date(2026, 3, 1), today)
    assert (last30.first, last30.last) == (date(2026, 2, 9), today)
    assert (year.first, year.last) == (date(2026, 1, 1), today)
    assert (past.first, past.last) == (date(2025, 1, 1), date(2025, 12, 31))
    for key in ("week", "2027", "99", ""):
        with pytest.raises(ValueError):
            period_for(key, today)


def _yearly_fixture(app) -> None:
    app.config["TIMEZONE"] = "Europe/Berlin"
    with app.app_context():
        # 23:30 UTC on 31 December 2024 is already 2025 in Berlin; the same a year on is 2026.
        add_request(
            Status.COMPLETED,
            received=at("2024-12-31", "23:30"),
            due="2025-02-03",
            ended=at("2025-01-06"),
        )
        add_request(Status.COMPLETED, received=at("2025-12-31", "23:30"), due="2026-02-02")
        add_request(
            Status.COMPLETED, received=at("2025-03-03"), due="2025-04-03", ended=at("2025-03-12")
        )
        add_request(
            Status.PARTIALLY_COMPLETED,
            received=at("2025-04-01"),
            due="2025-05-02",
            ended=at("2025-04-21"),
        )
        add_request(
            Status.DENIED, received=at("2025-05-05"), due="2025-06-05", ended=at("2025-05-07")
        )
        add_request(
            Status.CANCELLED, received=at("2025-06-02"), due="2025-07-02", ended=at("2025-06-03")
        )
        add_request(
            Status.EXPIRED, received=at("2025-07-01"), due="2025-08-01", ended=at("2025-07-08")
        )
        add_request(Status.VERIFIED, received=at("2025-12-01"), due="2026-01-02")
        add_request(
            Status.COMPLETED,
            received=at("2025-02-03"),
            due="2025-03-03",
            ended=at("2025-03-05"),
            kind=RequestType.ACCESS,
        )
        add_request(
            Status.FAILED, received=at("2025-11-03"), due="2025-12-03", kind=RequestType.ACCESS
        )


EXPECTED_CSV = (
    ",".join(YEARLY_COLUMNS) + "\r\n"
    # erasure: 7 received; answered in 5 (2025-01-01 -> 01-06), 9, 20 and 2 days.
    "2025,erasure,7,2,1,1,1,1,1,7.0,9.0\r\n"
    "2025,access,2,1,0,0,0,0,1,30.0,30.0\r\n"
    "2025,portability,0,0,0,0,0,0,0,,\r\n"
    "2025,objection,0,0,0,0,0,0,0,,\r\n"
    "2025,all,9,3,1,1,1,1,2,9.0,13.2\r\n"
)


def test_the_yearly_report_counts_requests_received_in_the_year_by_type(app):
    _yearly_fixture(app)
    with app.app_context():
        rows = yearly_report(db.session, 2025)
        erasure = rows[0]
        assert erasure == YearlyRow(2025, "erasure", 7, 2, 1, 1, 1, 1, 1, 7.0, 9.0)
        outcomes = (
            erasure.complied_in_whole
            + erasure.complied_in_part
            + erasure.denied
            + erasure.cancelled
            + erasure.expired
            + erasure.still_open
        )
        assert outcomes == erasure.received
        assert yearly_report_csv(rows) == EXPECTED_CSV


def test_lethe_report_yearly_prints_or_writes_the_same_csv(app, tmp_path):
    _yearly_fixture(app)
    runner = app.test_cli_runner()
    printed = runner.invoke(cli, ["report", "yearly", "--year", "2025"])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout_bytes == EXPECTED_CSV.encode()
    target = tmp_path / "report.csv"
    written = runner.invoke(cli, ["report", "yearly", "--year", "2025", "--output", str(target)])
    assert written.exit_code == 0, written.output
    assert target.read_bytes() == EXPECTED_CSV.encode()
    refused = runner.invoke(cli, ["report", "yearly", "--year", "last"])
    assert refused.exit_code != 0 and "--year" in refused.output


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_defused():
    assert csv_cell('=HYPERLINK("http://evil")') == '\'=HYPERLINK("http://evil")'
    for dangerous in ("+1", "-1+2", "@SUM(A1)", "\tx", "\rx"):
        assert csv_cell(dangerous) == "'" + dangerous
    assert csv_cell("erasure") == "erasure" and csv_cell(7) == 7
    row = YearlyRow(2025, "=1+1", 0, 0, 0, 0, 0, 0, 0, None, None)
    assert yearly_report_csv([row]).splitlines()[1].startswith("2025,'=1+1,")
