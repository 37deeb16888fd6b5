"""The dashboard: every staff role sees the numbers and charts; the yearly report as CSV."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from core.clock import today as local_today
from core.extensions import db
from core.metrics import YEARLY_COLUMNS
from core.models import Role, StaffUser, Status
from core.security import hash_password
from tests.core.test_metrics import add_request, at
from tests.flows import login

PASSWORD = "a long staff password"


def sign_in_as(app, client, role: Role) -> None:
    """Sign ``client`` in as a new staff member with ``role``."""
    email = f"{role}-staff@example.com"
    with app.app_context():
        db.session.add(StaffUser(email=email, password_hash=hash_password(PASSWORD), role=role))
        db.session.commit()
    login(client, email, PASSWORD)


def figure(page: str, element_id: str) -> str:
    """Return the big number shown with ``element_id``."""
    match = re.search(rf'id="{element_id}">([^<]*)<', page)
    assert match, f"no {element_id} on the page"
    return match.group(1)


def table_row(page: str, chart_id: str, label: str) -> str:
    """Return the count that the table under chart ``chart_id`` gives for ``label``."""
    figure_html = page[page.index(f'id="{chart_id}-caption"') :]
    figure_html = figure_html[: figure_html.index("</figure>")]
    match = re.search(
        rf'<th scope="row">{re.escape(label)}</th><td class="num">(\d+)</td>', figure_html
    )
    assert match, f"no row {label!r} in the table of {chart_id}"
    return match.group(1)


def check_page_is_accessible_and_csp_safe(page: str) -> None:
    assert "<script" not in page and "style=" not in page and "<style" not in page
    charts = re.findall(r"<svg [^>]*>", page)
    assert charts, "the dashboard draws no chart"
    for tag in charts:
        assert 'role="img"' in tag and "aria-labelledby" in tag
    titles = re.findall(r"<svg [^>]*>\s*<title id=\"[^\"]+\">([^<]+)</title>", page)
    assert len(titles) == len(charts) and all(t.strip() for t in titles)
    # Every chart has its numbers in a table too.
    assert page.count('<table class="chart-data">') == len(charts)


@pytest.mark.parametrize("role", [Role.DPO, Role.OPERATOR, Role.AUDITOR, Role.ADMIN])
def test_every_staff_role_sees_the_dashboard_of_an_empty_database(app, client, role):
    sign_in_as(app, client, role)
    response = client.get("/admin/dashboard")
    assert response.status_code == 200
    page = response.text
    assert figure(page, "overdue-count") == "0"
    assert figure(page, "due-week-count") == "0"
    assert figure(page, "on-time-share") == "–"
    check_page_is_accessible_and_csp_safe(page)
    assert 'href="/admin/dashboard"' in page  # the nav link
    csv = client.get("/admin/reports/yearly.csv?year=2026")
    if role == Role.OPERATOR:
        assert csv.status_code == 403
        assert "yearly.csv" not in page
    else:
        assert csv.status_code == 200
        assert "Download the yearly report" in page


def test_the_dashboard_needs_a_sign_in(client):
    assert client.get("/admin/dashboard").status_code == 302
    assert client.get("/admin/reports/yearly.csv").status_code == 302


def test_the_dashboard_counts_overdue_and_due_requests_and_links_to_the_queue(app, client):
    with app.app_context():
        today = local_today()

        def day(offset: int) -> str:
            return (today + timedelta(days=offset)).isoformat()

        received = at(day(-40))
        add_request(Status.FAILED, received=received, due=day(-3))
        add_request(Status.SUBMITTED, received=received, due=day(-1))
        add_request(Status.VERIFIED, received=received, due=day(0))
        add_request(Status.APPROVED, received=received, due=day(7))
        add_request(Status.VERIFIED, received=received, due=day(8))
        add_request(Status.COMPLETED, received=received, due=day(-5), ended=at(day(-6)))
        add_request(Status.DENIED, received=received, due=day(-5), ended=at(day(-4)))
    login(client)
    page = client.get("/admin/dashboard?period=30d").text
    assert figure(page, "overdue-count") == "2"
    assert figure(page, "due-week-count") == "2"
    assert figure(page, "open-count") == "5"
    assert 'href="/admin/?overdue=1"' in page
    assert 'href="/admin/?due_within=7"' in page
    assert "failed, paused and not yet confirmed requests are included" in page
    assert table_row(page, "chart-open", "failed") == "1"
    assert table_row(page, "chart-open", "verified") == "2"
    # In the last 30 days one answer was on time (a day early) and one late (4 days late).
    assert figure(page, "ended-count") == "2"
    assert figure(page, "on-time-share") == "50 %"
    assert table_row(page, "chart-on-time", "on time") == "1"
    assert table_row(page, "chart-on-time", "late") == "1"
    assert table_row(page, "chart-outcome", "denied") == "1"
    assert table_row(page, "chart-reason", "not given") == "2"
    assert figure(page, "median-days") == "35"  # 34 and 36 days
    check_page_is_accessible_and_csp_safe(page)


def test_the_period_selector_offers_past_years_and_explains_an_unknown_period(app, client):
    with app.app_context():
        year = local_today().year - 1
        add_request(
            Status.COMPLETED,
            received=at(f"{year}-03-02"),
            due=f"{year}-04-02",
            ended=at(f"{year}-03-09"),
        )
    login(client)
    page = client.get(f"/admin/dashboard?period={year}").text
    assert f'<option value="{year}" selected>' in page
    assert f"{year}-01-01 to {year}-12-31" in page
    assert figure(page, "ended-count") == "1" and figure(page, "median-days") == "7"
    assert re.search(r"<th scope=\"row\">erasure</th><td class=\"num\">1</td>", page)
    unknown = client.get("/admin/dashboard?period=forever")
    assert unknown.status_code == 200
    assert "not a period Lethe knows; showing this month" in unknown.text
    assert '<option value="month" selected>' in unknown.text


def test_the_yearly_report_downloads_as_csv_and_a_bad_year_is_explained(app, client):
    with app.app_context():
        year = local_today().year - 1
        add_request(
            Status.DENIED,
            received=at(f"{year}-05-05"),
            due=f"{year}-06-05",
            ended=at(f"{year}-05-09"),
        )
    login(client)
    response = client.get(f"/admin/reports/yearly.csv?year={year}")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert f'filename="lethe-yearly-report-{year}.csv"' in response.headers["Content-Disposition"]
    lines = response.text.splitlines()
    assert lines[0] == ",".join(YEARLY_COLUMNS)
    assert lines[1] == f"{year},erasure,1,0,0,1,0,0,0,4.0,4.0"
    assert lines[-1] == f"{year},all,1,0,0,1,0,0,0,4.0,4.0"
    bad = client.get("/admin/reports/yearly.csv?year=next", follow_redirects=True)
    assert bad.status_code == 200
    assert "“next” is not a year" in bad.text
