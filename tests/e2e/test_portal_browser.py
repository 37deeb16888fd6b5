"""The portal in Debian's Chromium: submit, open the email link, follow, cancel — in every
language, with an axe-core accessibility check of each page on the way.

Set LETHE_SCREENSHOTS=1 (``make screenshots``) to save each page under docs/screenshots/.
"""

from __future__ import annotations

import re
import zipfile
from datetime import timedelta

import pytest
import sqlalchemy as sa

from core.extensions import db
from core.models import DataSubjectRequest, ExportPackage, utcnow
from tests.conftest import link_in, outbox_messages
from tests.e2e.conftest import check_page
from tests.flows import approve, login

pytestmark = pytest.mark.e2e


def approve_the_request(app) -> str:
    """As the DPO, approve the only request along its plan; return its reference."""
    with app.app_context():
        reference = db.session.scalars(sa.select(DataSubjectRequest.reference)).one()
    staff = app.test_client()
    login(staff)
    approve(staff, reference)
    return reference


@pytest.mark.parametrize("language", ["en", "ru", "zh"])
def test_a_person_asks_confirms_follows_and_cancels_in_the_browser(
    app, live_url, browser, language, tmp_path
):
    context = browser.new_context(locale={"en": "en-GB", "ru": "ru-RU", "zh": "zh-CN"}[language])
    page = context.new_page()
    page.goto(f"{live_url}/")
    assert page.locator("html").get_attribute("lang") == language
    check_page(page, "1-form", language, tmp_path)

    page.get_by_label(re.compile("email|почты|电子邮件", re.I)).fill("alice@example.com")
    page.locator("input[name=request_type][value=erasure]").check()
    page.locator("form button[type=submit]").click()
    check_page(page, "2-confirm-erasure", language, tmp_path)
    page.locator("form button[type=submit]").first.click()  # "Yes, erase my data"
    page.wait_for_url(re.compile(r"/submitted$"))
    check_page(page, "3-check-inbox", language, tmp_path)

    message = outbox_messages(app)[-1]
    page.goto(link_in(message, "/verify/"))
    check_page(page, "4-confirm-address", language, tmp_path)
    page.locator("form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/status/"))
    status_url = page.url
    check_page(page, "5-status-received", language, tmp_path)

    approve_the_request(app)

    page.goto(status_url)
    check_page(page, "6-status-approved", language, tmp_path)
    page.locator("button.danger").click()
    page.wait_for_load_state()
    check_page(page, "7-status-cancelled", language, tmp_path)
    with app.app_context():
        assert db.session.scalars(sa.select(DataSubjectRequest.status)).one() == "cancelled"

    page.goto(link_in(message, "/verify/"))  # the used link, opened again
    check_page(page, "8-link-used", language, tmp_path)
    context.close()


@pytest.mark.parametrize("language", ["en", "ru", "zh"])
def test_a_person_gets_a_copy_of_their_data_in_the_browser(
    app, live_url, browser, language, tmp_path
):
    context = browser.new_context(
        locale={"en": "en-GB", "ru": "ru-RU", "zh": "zh-CN"}[language], accept_downloads=True
    )
    page = context.new_page()
    page.goto(f"{live_url}/")
    page.get_by_label(re.compile("email|почты|电子邮件", re.I)).fill("alice@example.com")
    # Keyboard only: tab into the choices and pick "access" with the space bar.
    page.locator("input[name=request_type][value=access]").focus()
    page.keyboard.press("Space")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/submitted$"))
    page.goto(link_in(outbox_messages(app)[-1], "/verify/"))
    page.locator("form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/status/"))
    status_url = page.url

    reference = approve_the_request(app)

    page.goto(status_url)
    check_page(page, "9-status-export-ready", language, tmp_path)
    with page.expect_download() as download:
        page.locator("a.button[href*='/export/']").click()
    assert download.value.suggested_filename == f"{reference}-my-data.zip"
    assert zipfile.is_zipfile(download.value.path())

    with app.app_context():
        package = db.session.scalars(sa.select(ExportPackage)).one()
        package.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    page.goto(link_in(outbox_messages(app)[-1], "/export/"))
    check_page(page, "10-download-expired", language, tmp_path)
    page.locator("a.button").click()
    page.wait_for_url(re.compile(r"/status/"))
    check_page(page, "11-status-completed", language, tmp_path)
    context.close()
