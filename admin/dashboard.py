"""The dashboard: open work and deadlines kept, as numbers and charts; the yearly report."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from admin import bp
from core.clock import today as local_today
from core.extensions import db
from core.metrics import (
    count_due_within,
    count_overdue,
    first_year,
    open_by_state,
    period_choices,
    period_for,
    summarise_period,
    yearly_report,
    yearly_report_csv,
)
from core.models import Role, Status
from core.security import roles_required

#: Everyone on the staff side sees the dashboard (admins pass every check).
STAFF = (Role.DPO, Role.OPERATOR, Role.AUDITOR)
#: Who may download the yearly report.
REPORT_READERS = (Role.DPO, Role.AUDITOR)
#: "Due this week": open requests due from today to this many days ahead.
WEEK = 7

# Geometry of a bar chart, in SVG user units.
_BAR_AREA, _ROW, _VALUE_ROOM, _CHAR = 260, 28, 56, 7.5


@dataclass(frozen=True)
class Bar:
    """One bar: its label, its count, and where it is drawn."""

    label: str
    value: int
    y: int
    width: float
    kind: str


@dataclass(frozen=True)
class Chart:
    """A horizontal bar chart, drawn as SVG by ``templates/admin/_chart.html``."""

    id: str
    title: str
    label_heading: str
    bars: list[Bar]
    label_width: int
    width: int
    height: int

    @property
    def total(self) -> int:
        """Return the sum of the bars."""
        return sum(bar.value for bar in self.bars)

    @property
    def summary(self) -> str:
        """Return the chart's numbers as one sentence, for screen readers."""
        if not self.bars:
            return "No requests."
        return "; ".join(f"{bar.label}: {bar.value}" for bar in self.bars) + "."


def bar_chart(
    chart_id: str,
    title: str,
    rows: list[tuple[str, int]],
    label_heading: str,
    kinds: dict[str, str] | None = None,
) -> Chart:
    """Return a bar chart of ``rows`` (label, count), bars scaled to the largest."""
    kinds = kinds or {}
    largest = max((value for _, value in rows), default=0)
    longest = max((len(label) for label, _ in rows), default=8)
    label_width = int(min(max(longest, 8), 32) * _CHAR) + 12
    bars = [
        Bar(
            label=label,
            value=value,
            y=index * _ROW,
            width=round(_BAR_AREA * value / largest, 1) if largest else 0,
            kind=kinds.get(label, ""),
        )
        for index, (label, value) in enumerate(rows)
    ]
    return Chart(
        id=chart_id,
        title=title,
        label_heading=label_heading,
        bars=bars,
        label_width=label_width,
        width=label_width + _BAR_AREA + _VALUE_ROOM,
        height=max(len(bars), 1) * _ROW,
    )


def _words(code: str) -> str:
    return code.replace("_", " ")


def _period_charts(summary) -> list[Chart]:
    durations = summary.durations
    return [
        bar_chart(
            "chart-outcome",
            "How the requests ended",
            [(_words(state), n) for state, n in summary.by_outcome],
            "Outcome",
            {"completed": "ok", "partially completed": "warn", "denied": "muted"},
        ),
        bar_chart(
            "chart-on-time",
            "Answered on time or late",
            [("on time", durations.on_time), ("late", durations.late)],
            "Answer",
            {"on time": "ok", "late": "bad"},
        ),
        bar_chart("chart-type", "By type of request", summary.by_type, "Type"),
        bar_chart("chart-jurisdiction", "By jurisdiction", summary.by_jurisdiction, "Jurisdiction"),
        bar_chart(
            "chart-channel",
            "By channel",
            [(_words(channel), n) for channel, n in summary.by_channel],
            "Channel",
        ),
        bar_chart(
            "chart-reason",
            "Reasons people gave",
            summary.by_reason,
            "Reason",
            {"not given": "muted"},
        ),
    ]


def _can_read_reports() -> bool:
    return current_user.role in (Role.ADMIN, *REPORT_READERS)


@bp.route("/dashboard")
@roles_required(*STAFF)
def dashboard():
    """Show open work, overdue and due requests, and a period's numbers, with charts."""
    today = local_today()
    key = request.args.get("period", "month")
    try:
        period = period_for(key, today)
    except ValueError:
        flash(f"“{key[:20]}” is not a period Lethe knows; showing this month instead.")
        period = period_for("month", today)
    states = open_by_state(db.session)
    summary = summarise_period(db.session, period)
    state_chart = bar_chart(
        "chart-open",
        "Open requests by state",
        [(_words(state), n) for state, n in states.items()],
        "State",
        {_words(Status.FAILED): "bad", _words(Status.PARTIALLY_COMPLETED): "warn"},
    )
    reports = _can_read_reports()
    report_year = int(period.key) if period.key.isdigit() else today.year
    return render_template(
        "admin/dashboard.html",
        today=today,
        timezone=current_app.config["TIMEZONE"],
        week=WEEK,
        overdue=count_overdue(db.session, today),
        due_this_week=count_due_within(db.session, today, WEEK),
        open_total=sum(states.values()),
        state_chart=state_chart,
        period=period,
        periods=period_choices(db.session, today),
        summary=summary,
        charts=_period_charts(summary),
        reports=reports,
        report_years=list(range(today.year, first_year(db.session, today) - 1, -1)),
        report_year=report_year,
        yearly=yearly_report(db.session, report_year) if reports else None,
    )


@bp.route("/reports/yearly.csv")
@roles_required(*REPORT_READERS)
def yearly_csv():
    """Download the yearly report (CCPA §7102) of ``?year=`` (default: this year) as CSV."""
    today = local_today()
    raw = request.args.get("year", str(today.year)).strip()
    if not (raw.isdigit() and 1970 <= int(raw) <= today.year):
        flash(f"“{raw[:20]}” is not a year between 1970 and {today.year}; choose one below.")
        return redirect(url_for("admin.dashboard"))
    year = int(raw)
    return current_app.response_class(
        yearly_report_csv(yearly_report(db.session, year)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="lethe-yearly-report-{year}.csv"'},
    )
