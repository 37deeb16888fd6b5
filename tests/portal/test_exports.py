"""Access and portability: the person gets a copy of their data through a signed link.

The package is built by the worker once the DPO approves, kept encrypted on disk, handed
out a limited number of times until it expires, then purged; the person can ask for a new
copy from their status page.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.extensions import db
from core.jobs import purge_exports
from core.models import DataSubjectRequest, ExportPackage, RunStatus, Status, utcnow
from tests.conftest import csrf_token, link_in, outbox_messages
from tests.flows import approve, login, path_of, submit, verify_latest


def ask_for_a_copy(app, client, request_type: str = "access", email: str = "alice@example.com"):
    """Submit, verify and approve a request for a copy; return the status page path."""
    submit(client, email, request_type)
    status = verify_latest(app, client)
    with app.app_context():
        reference = db.session.scalars(
            sa.select(DataSubjectRequest.reference).order_by(DataSubjectRequest.id.desc())
        ).first()
    staff = app.test_client()
    login(staff)
    assert approve(staff, reference).status_code == 302
    return status


def only_package(app) -> ExportPackage:
    return db.session.scalars(sa.select(ExportPackage)).one()


def download_link(app) -> str:
    message = outbox_messages(app)[-1]
    assert "ready to download" in message["Subject"]
    return path_of(link_in(message, "/export/"))


def open_zip(response) -> zipfile.ZipFile:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["Cache-Control"] == "no-store"
    return zipfile.ZipFile(io.BytesIO(response.data))


def test_an_approved_access_request_is_answered_at_once_with_a_package(app, client):
    status = ask_for_a_copy(app, client)
    with app.app_context():
        request = db.session.scalars(sa.select(DataSubjectRequest)).one()
        # No cooling-off: nothing irreversible happens, so the copy is built right away.
        assert request.status == Status.COMPLETED
        assert [run.status for run in request.runs] == [RunStatus.COMPLETED]
        assert request.runs[0].rows_affected["customers"] == 1
    page = client.get(status)
    assert "Your copy is ready" in page.text
    assert "Download my data" in page.text
    assert "Cancel my request" not in page.text

    package = open_zip(client.get(download_link(app)))
    names = set(package.namelist())
    assert {"manifest.json", "index.html", "summary.pdf"} <= names
    assert {"json/crm/customers.json", "csv/crm/customers.csv", "csv/crm/orders.csv"} <= names
    customers = json.loads(package.read("json/crm/customers.json"))
    assert [row["email"] for row in customers] == ["alice@example.com"]
    rows = list(csv.DictReader(io.StringIO(package.read("csv/crm/orders.csv").decode("utf-8-sig"))))
    assert len(rows) >= 2
    manifest = json.loads(package.read("manifest.json"))
    assert manifest["complete"] is True
    crm = manifest["systems"]["crm"]
    assert crm["tables"]["customers"] == 1
    # The Art. 15 information configured for the system travels with the data.
    assert "Marketing, only if you agreed to it" in crm["information"]["purposes"]
    summary = package.read("index.html").decode()
    assert "Marketing, only if you agreed to it" in summary


def test_the_link_on_the_status_page_downloads_the_same_package(app, client):
    status = ask_for_a_copy(app, client, "portability")
    page = client.get(status)
    link = re.search(r'href="([^"]*/export/[^"]+)"', page.text)[1]
    assert link == download_link(app)
    package = open_zip(client.get(link))
    assert "json/crm/customers.json" in package.namelist()


def test_the_package_is_encrypted_on_disk(app, client):
    ask_for_a_copy(app, client)
    with app.app_context():
        package = only_package(app)
        raw = (Path(app.config["EXPORT_DIR"]) / package.filename).read_bytes()
    assert package.size == len(raw) > 0
    assert not raw.startswith(b"PK")  # not a readable ZIP
    for clear in (b"alice@example.com", b"Alice Example", b"customers"):
        assert clear not in raw
    # Every export gets a file name of its own that says nothing about the person.
    assert "alice" not in package.filename


def test_the_download_is_limited_in_uses_then_a_new_copy_can_be_asked_for(app, client):
    app.config["EXPORT_MAX_DOWNLOADS"] = 2
    status = ask_for_a_copy(app, client)
    link = download_link(app)
    open_zip(client.get(link))
    page = client.get(status)
    assert "1 more time." in page.text
    open_zip(client.get(link))
    used = client.get(link)
    assert used.status_code == 410
    assert "used as many times as it allows" in used.text
    assert "Go to my request" in used.text
    page = client.get(status)
    assert "Download my data" not in page.text
    assert "Prepare a new copy" in page.text

    sent = len(outbox_messages(app))
    client.post(f"{status}/renew-export", data={"csrf_token": csrf_token(page.text)})
    assert len(outbox_messages(app)) == sent + 1
    fresh = download_link(app)
    assert fresh != link
    open_zip(client.get(fresh))
    assert client.get(link).status_code == 410  # the old link stays dead
    with app.app_context():
        packages = db.session.scalars(sa.select(ExportPackage).order_by(ExportPackage.id)).all()
        assert [p.downloads for p in packages] == [2, 1]


def test_a_renewal_is_refused_while_a_package_can_still_be_downloaded(app, client):
    status = ask_for_a_copy(app, client)
    page = client.get(status)
    assert "Prepare a new copy" not in page.text
    client.post(f"{status}/renew-export", data={"csrf_token": csrf_token(page.text)})
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ExportPackage)) == 1


def test_an_expired_package_is_purged_and_its_link_explains_what_to_do(app, client):
    status = ask_for_a_copy(app, client)
    link = download_link(app)
    with app.app_context():
        package = only_package(app)
        file = Path(app.config["EXPORT_DIR"]) / package.filename
        package.expires_at = utcnow() - timedelta(minutes=1)
        db.session.commit()
        assert file.exists()
        assert purge_exports() == 1
        assert not file.exists()
        package = only_package(app)
        assert package.purged_at is not None
        assert package.summary["systems"]["crm"]["tables"]["customers"] == 1  # counts stay
    expired = client.get(link)
    assert expired.status_code == 410
    assert "The link has expired" in expired.text
    assert 'rel="noreferrer"' in expired.text
    assert "Prepare a new copy" in client.get(status).text


def test_a_used_up_package_is_purged_before_it_expires(app, client):
    app.config["EXPORT_MAX_DOWNLOADS"] = 1
    ask_for_a_copy(app, client)
    open_zip(client.get(download_link(app)))
    with app.app_context():
        file = Path(app.config["EXPORT_DIR"]) / only_package(app).filename
        assert purge_exports() == 1
    assert not file.exists()


@pytest.mark.parametrize("damage", ["tampered", "foreign"])
def test_a_tampered_or_foreign_download_link_gets_a_friendly_page(app, client, damage):
    ask_for_a_copy(app, client)
    link = download_link(app)
    if damage == "tampered":
        link = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    else:  # a status link is signed for another purpose: it must not download anything
        status_link = path_of(link_in(outbox_messages(app)[-1], "/status/"))
        link = "/export/" + status_link.rsplit("/", 1)[1]
    response = client.get(link)
    assert response.status_code == 400
    assert "This link is not valid" in response.text
    assert "Traceback" not in response.text
    with app.app_context():
        assert only_package(app).downloads == 0


def test_the_ready_email_is_in_the_language_of_the_request(app, client):
    client.get("/?lang=ru")
    ask_for_a_copy(app, client)
    message = outbox_messages(app)[-1]
    assert "/export/" in link_in(message, "/export/")
    assert re.search("[а-яА-Я]", message["Subject"]), message["Subject"]
    assert message.get_body(("html",)) is not None


def test_the_dpo_sees_what_the_person_told_us_and_a_copy_needs_no_cooling_off(app, client):
    submit(client, "alice@example.com", "access", customer_number="C-1001", reason="Moving bank")
    verify_latest(app, client)
    with app.app_context():
        reference = db.session.scalars(sa.select(DataSubjectRequest.reference)).one()
    staff = app.test_client()
    login(staff)
    page = staff.get(f"/admin/requests/{reference}").text
    assert "C-1001" in page and "Moving bank" in page
    assert "Plan: what the person's copy will hold" in page
    assert "Approve and send the copy" in page and "Approve erasure" not in page
    assert "anonymise" not in page  # a copy changes nothing: no actions to show
    approve(staff, reference)
    page = staff.get(f"/admin/requests/{reference}").text
    assert "erasure starts" not in page
    assert "Your copy is ready" in client.get(verify_status(app)).text


def verify_status(app) -> str:
    return path_of(link_in(outbox_messages(app)[-1], "/status/"))


def test_the_queue_shows_the_average_feedback(app, client):
    status = ask_for_a_copy(app, client)
    page = client.get(status)
    client.post(f"{status}/feedback", data={"csrf_token": csrf_token(page.text), "score": "4"})
    status = ask_for_a_copy(app, client, email="bob@example.com")
    client.post(f"{status}/feedback", data={"csrf_token": csrf_token(page.text), "score": "5"})
    staff = app.test_client()
    login(staff)
    assert "4.5 / 5</strong> from 2 answers" in staff.get("/admin/").text


def test_the_person_gets_one_email_with_the_link_and_none_about_erasure(app, client):
    submit(client, "alice@example.com", "access")
    verify_latest(app, client)
    before = len(outbox_messages(app))
    with app.app_context():
        reference = db.session.scalars(sa.select(DataSubjectRequest.reference)).one()
    staff = app.test_client()
    login(staff)
    approve(staff, reference)
    sent = outbox_messages(app)[before:]
    assert [m["Subject"] for m in sent] == [f"Your data is ready to download (request {reference})"]
    text = sent[0].get_body(("plain",)).get_content()
    assert "eras" not in text.lower()  # nothing about erasure in an answer to a copy
