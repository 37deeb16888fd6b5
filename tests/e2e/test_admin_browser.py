"""The staff side in Debian's Chromium: sign in, find the request in the queue, review the
plan, approve it by typing the reference, and see the erasure complete — with an axe-core
check of each page.  Set LETHE_SCREENSHOTS=1 (``make screenshots``) to save the queue, the
request page and the dashboard under docs/screenshots/.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from core.extensions import db
from core.models import DataSubjectRequest, Status
from tests.conftest import DPO_EMAIL, DPO_PASSWORD
from tests.e2e.conftest import check_page
from tests.flows import submit, verify_latest

pytestmark = pytest.mark.e2e


def test_the_dpo_reviews_approves_and_sees_the_erasure_complete(app, live_url, browser, tmp_path):
    app.config["COOLING_OFF_MINUTES"] = 0
    person = app.test_client()
    for email in ("ivan.petrov@example.ru", "li.wei@example.cn", "alice@example.com"):
        submit(person, email)
    verify_latest(app, person)  # Alice's request is the one to review
    with app.app_context():
        reference = db.session.scalars(
            sa.select(DataSubjectRequest.reference).where(
                DataSubjectRequest.status == Status.VERIFIED
            )
        ).one()

    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    page.goto(f"{live_url}/admin/")
    page.wait_for_url(re.compile(r"/admin/login"))
    page.fill("input[name=email]", DPO_EMAIL)
    page.fill("input[name=password]", DPO_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/admin/$"))
    assert page.locator("tbody tr").count() == 3
    check_page(page, "1-queue", "en", tmp_path, "admin")

    page.fill("input[name=q]", reference)
    page.locator("form.filters button[type=submit]").click()
    assert page.locator("tbody tr").count() == 1
    page.get_by_role("link", name=reference).click()
    page.wait_for_url(re.compile(rf"/admin/requests/{reference}$"))
    plan = page.locator("table").first.inner_text()
    assert "support_tickets" in plan and "delete" in plan and "anonymise" in plan
    check_page(page, "2-request-plan", "en", tmp_path, "admin")

    page.locator("#confirm_reference").fill(reference)
    page.get_by_role("button", name="Approve erasure along this plan").click()
    page.wait_for_url(re.compile(rf"/admin/requests/{reference}$"))
    page.reload()  # the worker ran while the page loaded (eager tasks in tests)
    systems = page.locator("h2:has-text('Systems') + table").inner_text()
    assert "completed" in systems
    assert page.get_by_role("link", name=re.compile(r"proof-.*\.pdf")).count() == 1
    check_page(page, "3-request-done", "en", tmp_path, "admin")

    page.get_by_role("link", name="Dashboard").click()
    page.wait_for_load_state()
    assert page.locator("svg[role=img]").count() >= 1
    check_page(page, "4-dashboard", "en", tmp_path, "admin")
    context.close()
