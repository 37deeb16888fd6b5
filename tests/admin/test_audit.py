"""The auditor's side: finished requests by period, proofs as a ZIP, the audit log, the act."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import subprocess
import zipfile
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from core.audit import current_chain_cache, verify_chain, verify_chain_cached
from core.clock import today as local_today
from core.extensions import db
from core.keyring import trusted_keys
from core.models import AuditEvent, DataSubjectRequest, Proof, RequestType, Role, Status
from core.proofs import verify_proof_pdf
from tests.admin.test_dashboard import sign_in_as
from tests.core.test_metrics import add_request, at
from tests.flows import approve, login, submit, verify_latest

IVAN = ("ivan.petrov@example.ru", "Иван", "Петров", "Москва")


def erase(app, client, email: str) -> str:
    """Erase ``email`` from the demo CRM end to end (``client``: the DPO); return its reference."""
    submit(client, email)
    verify_latest(app, client)
    with app.app_context():
        reference = db.session.scalars(
            sa.select(DataSubjectRequest.reference).order_by(DataSubjectRequest.id.desc())
        ).first()
    assert approve(client, reference).status_code == 302
    with app.app_context():
        dsr = db.session.scalars(
            sa.select(DataSubjectRequest).where(DataSubjectRequest.reference == reference)
        ).one()
        assert dsr.status == Status.COMPLETED and dsr.proofs
    return reference


def move_to(app, reference: str, day: str) -> None:
    """Say that ``reference`` was received and completed on ``day`` (and its proofs issued)."""
    with app.app_context():
        dsr = db.session.scalars(
            sa.select(DataSubjectRequest).where(DataSubjectRequest.reference == reference)
        ).one()
        dsr.received_at = at(day, "08:00")
        dsr.completed_at = dsr.status_changed_at = at(day)
        for proof in dsr.proofs:
            proof.issued_at = at(day)
        db.session.commit()


def events_where(app, **where) -> list[AuditEvent]:
    with app.app_context():
        query = sa.select(AuditEvent).order_by(AuditEvent.position)
        for column, value in where.items():
            query = query.where(getattr(AuditEvent, column) == value)
        events = list(db.session.scalars(query))
        db.session.expunge_all()
        return events


def references(page: str) -> list[str]:
    return re.findall(r'<th scope="row" class="mono">(DSR-[0-9A-Z]+)</th>', page)


def check_accessible(page: str) -> None:
    assert "<script" not in page and "style=" not in page and "<style" not in page
    assert "<h1>" in page
    for header in re.findall(r"<th[ >][^>]*>?", page):
        assert "scope=" in header
    for field in re.findall(r'<(?:input|select) id="([^"]+)"', page):
        assert f'<label for="{field}">' in page, field


def test_filters_give_the_right_rows_and_no_personal_data(app, client):
    with app.app_context():
        on_time = add_request(
            Status.COMPLETED, received=at("2025-03-01"), due="2025-03-31", ended=at("2025-03-05")
        )
        late = add_request(
            Status.PARTIALLY_COMPLETED,
            received=at("2025-02-01"),
            due="2025-03-01",
            ended=at("2025-03-10"),
            jurisdiction="ru-152fz",
        )
        failed = add_request(
            Status.FAILED,
            received=at("2025-03-02"),
            due="2025-04-02",
            ended=at("2025-03-20"),
            kind=RequestType.ACCESS,
        )
        add_request(  # denied: not a finished request an auditor looks at here
            Status.DENIED, received=at("2025-03-01"), due="2025-03-31", ended=at("2025-03-04")
        )
        add_request(  # finished in April: outside the period
            Status.COMPLETED, received=at("2025-03-25"), due="2025-04-25", ended=at("2025-04-01")
        )
    sign_in_as(app, client, Role.AUDITOR)
    march = "/admin/audit/?from=2025-03-01&to=2025-03-31"
    page = client.get(march)
    assert page.status_code == 200
    assert references(page.text) == [on_time, late, failed]
    assert "3 finished requests" in page.text
    assert not re.search(r"person\d+@", page.text)  # the subjects' addresses
    check_accessible(page.text)
    cases = {
        "&jurisdiction=ru-152fz": [late],
        "&type=access": [failed],
        "&outcome=partially_completed": [late],
        "&outcome=failed": [failed],
        "&timing=late": [late],
        "&timing=on_time": [on_time, failed],
        "&type=erasure&timing=on_time": [on_time],
    }
    for query, expected in cases.items():
        assert references(client.get(march + query).text) == expected, query
    # Paginated: 50 a page, the filters kept in the page links.
    with app.app_context():
        for _ in range(51):
            add_request(
                Status.COMPLETED,
                received=at("2024-06-01"),
                due="2024-07-01",
                ended=at("2024-06-02"),
            )
    june = client.get("/admin/audit/?from=2024-06-01&to=2024-06-30&type=erasure").text
    assert len(references(june)) == 50 and "Page 1 of 2" in june
    assert "page=2" in june and "type=erasure" in june
    second = client.get("/admin/audit/?from=2024-06-01&to=2024-06-30&type=erasure&page=2").text
    assert len(references(second)) == 1


def test_the_default_period_is_the_last_calendar_month(app, client):
    sign_in_as(app, client, Role.AUDITOR)
    with app.app_context():
        today = local_today()
    last = today.replace(day=1).toordinal() - 1
    expected = date.fromordinal(last)
    page = client.get("/admin/audit/").text
    assert f'value="{expected.replace(day=1).isoformat()}"' in page
    assert f'value="{expected.isoformat()}"' in page


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=2025-13-01", "“2025-13-01” in “from” is not a date"),
        ("from=yesterday&to=2025-01-01", "“yesterday” in “from” is not a date"),
        ("from=2025-03-31&to=2025-03-01", "starts on 2025-03-31, after it ends on 2025-03-01"),
    ],
)
def test_bad_dates_are_explained_not_a_server_error(app, client, query, message):
    sign_in_as(app, client, Role.AUDITOR)
    for path in ("/admin/audit/", "/admin/audit/log"):
        page = client.get(f"{path}?{query}")
        assert page.status_code == 400
        assert message in page.text and 'aria-invalid="true"' in page.text
    for path in ("/admin/audit/proofs.zip", "/admin/audit/act.pdf", "/admin/audit/act.csv"):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 302
        assert client.get(response.headers["Location"]).status_code == 400
    for path in ("/admin/audit/log.csv", "/admin/audit/log.json"):
        assert client.get(f"{path}?{query}").status_code == 302


def test_the_zip_holds_each_proof_of_the_period_and_a_true_manifest(app, client):
    login(client)
    march = [erase(app, client, "alice@example.com"), erase(app, client, IVAN[0])]
    may = erase(app, client, "li.wei@example.cn")
    move_to(app, march[0], "2025-03-10")
    move_to(app, march[1], "2025-03-20")
    move_to(app, may, "2025-05-10")
    auditor = app.test_client()
    sign_in_as(app, auditor, Role.AUDITOR)
    page = auditor.get("/admin/audit/?from=2025-03-01&to=2025-03-31").text
    assert references(page) == march
    for proof_link in re.findall(r'href="(/admin/proofs/\d+\.pdf)"', page):
        assert auditor.get(proof_link).data.startswith(b"%PDF")
    with auditor.get("/admin/audit/proofs.zip?from=2025-03-01&to=2025-03-31") as response:
        assert response.status_code == 200 and response.mimetype == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(response.data))
    manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    with app.app_context():
        proofs = db.session.scalars(
            sa.select(Proof)
            .join(DataSubjectRequest)
            .where(DataSubjectRequest.reference.in_(march))
            .order_by(Proof.id)
        ).all()
        expected = [
            {
                "reference": proof.request.reference,
                "proof_id": str(proof.id),
                "key_id": proof.key_id,
                "fingerprint": proof.fingerprint,
                "pdf_sha256": proof.pdf_sha256,
                "issued_at": proof.issued_at.isoformat(timespec="seconds"),
            }
            for proof in proofs
        ]
    assert [{k: v for k, v in row.items() if k != "file"} for row in manifest] == expected
    assert sorted(archive.namelist()) == sorted(["manifest.csv", *(r["file"] for r in manifest)])
    for row in manifest:
        pdf = archive.read(row["file"])
        assert hashlib.sha256(pdf).hexdigest() == row["pdf_sha256"]
        assert row["reference"] in row["file"]
    assert may not in archive.read("manifest.csv").decode()
    downloaded = events_where(app, action="audit.proofs_downloaded")
    assert len(downloaded) == 1
    assert downloaded[0].actor == "staff:auditor-staff@example.com"
    assert downloaded[0].details["from"] == "2025-03-01"
    assert downloaded[0].details["to"] == "2025-03-31"
    assert downloaded[0].details["count"] == 2


def recompute(event: dict, prev_hash: str) -> str:
    """Return an event's hash by the recipe the export documents, without Lethe's code."""
    body = json.dumps(
        [
            event["position"],
            event["occurred_at"],
            event["actor"],
            event["action"],
            event["reference"],
            event["details"],
        ],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def test_exports_hold_exactly_the_filtered_events_and_let_anyone_recheck_them(app, client):
    login(client)
    reference = erase(app, client, "alice@example.com")
    other = erase(app, client, IVAN[0])
    auditor = app.test_client()
    sign_in_as(app, auditor, Role.AUDITOR)
    expected = [e for e in events_where(app, reference=reference) if e.action.startswith("run.")]
    assert expected
    query = f"reference={reference[4:]}&action=run."  # the reference without DSR- will do
    page = auditor.get(f"/admin/audit/log?{query}")
    assert page.status_code == 200
    check_accessible(page.text)
    assert "Verified up to position" in page.text
    shown = re.findall(r'<th scope="row">(\d+)', page.text)
    assert sorted(map(int, shown)) == [e.position for e in expected]
    assert other not in page.text.split("<table>")[-1]

    exported = auditor.get(f"/admin/audit/log.csv?{query}")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [int(row["position"]) for row in rows] == [e.position for e in expected]
    assert all(row["reference"] == reference for row in rows)
    assert [json.loads(row["details"]) for row in rows] == [e.details for e in expected]

    document = auditor.get(f"/admin/audit/log.json?{query}").get_json()
    assert [event["position"] for event in document["events"]] == [e.position for e in expected]
    assert document["chain"]["ok"] is True
    for event in document["events"]:
        assert recompute(event, event["prev_hash"]) == event["hash"]
    # The whole log, exported, re-checks link by link from the genesis hash.
    everything = auditor.get("/admin/audit/log.json").get_json()
    prev = everything["genesis_prev_hash"]
    for event in everything["events"]:
        assert event["prev_hash"] == prev
        prev = recompute(event, prev)
        assert prev == event["hash"]
    # Each export is in the log, and not in the file it produced.
    exports = events_where(app, action="audit.log_exported")
    assert [e.details["format"] for e in exports] == ["csv", "json", "json"]
    assert exports[0].details["count"] == len(expected)
    assert everything["events"][-1]["position"] == exports[-1].position - 1


def test_csv_cells_cannot_run_as_formulas(app, client):
    with app.app_context():
        from core.audit import record_event

        record_event(db.session, '=HYPERLINK("http://evil")', "+cmd", None, note="-1+1")
        db.session.commit()
    sign_in_as(app, client, Role.AUDITOR)
    rows = list(csv.reader(io.StringIO(client.get("/admin/audit/log.csv?action=%2Bcmd").text)))
    assert rows[1][2] == '\'=HYPERLINK("http://evil")' and rows[1][3] == "'+cmd"


def test_a_tampered_audit_row_breaks_the_chain_where_it_was_changed(app, client):
    login(client)
    reference = erase(app, client, "alice@example.com")
    target = next(e for e in events_where(app, reference=reference) if e.action == "run.completed")
    with app.app_context():
        db.session.execute(
            sa.update(AuditEvent)
            .where(AuditEvent.position == target.position)
            .values(details={**target.details, "rows_affected": {"customers": 0}})
        )
        db.session.commit()
        assert not verify_chain(db.session).ok
    auditor = app.test_client()
    sign_in_as(app, auditor, Role.AUDITOR)
    page = auditor.get("/admin/audit/log").text
    assert f"Broken at position {target.position}" in page
    assert f"event {target.position} was altered after it was written" in page
    assert "broken here" in page
    document = auditor.get("/admin/audit/log.json").get_json()
    assert document["chain"] == {
        "ok": False,
        "position": target.position,
        "head_hash": document["chain"]["head_hash"],
        "problem": f"event {target.position} was altered after it was written",
    }


def test_an_event_edited_inside_an_already_verified_prefix_is_still_found(app, client):
    login(client)
    erase(app, client, "alice@example.com")
    auditor = app.test_client()
    sign_in_as(app, auditor, Role.AUDITOR)
    assert "no event was altered" in auditor.get("/admin/audit/log").text
    with app.app_context():
        cache = current_chain_cache()
        verified = cache.position
        assert verified > 3 and cache.verified_at is not None
        # Edited straight in the database, no re-hash; the verified head row is untouched,
        # and the chain grows past it, as it does between two views of the page.
        db.session.execute(
            sa.update(AuditEvent).where(AuditEvent.position == 2).values(details={"forged": 1})
        )
        db.session.commit()
        # What a check continuing from the cached head cannot see (it reads only newer
        # events) the auditor's page must: it always recomputes the whole chain.
        assert verify_chain_cached(db.session, current_chain_cache()).ok
    erase(app, client, "bob@example.com")
    page = auditor.get("/admin/audit/log").text
    assert "Broken at position 2" in page and "event 2 was altered after it was written" in page
    with app.app_context():
        assert current_chain_cache().verified_at is None  # the break is not cached as a head


def pdf_text(pdf: bytes, tmp_path) -> str:
    path = tmp_path / "act.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True
    )
    return " ".join(out.stdout.decode("utf-8").split())


def test_the_act_of_destruction_gives_what_order_179_asks_and_no_personal_data(
    app, client, tmp_path
):
    app.config["CONTROLLER_NAME"] = "ООО «Пример» / Example LLC"
    app.config["CONTROLLER_ADDRESS"] = "119019, Москва, ул. Примерная, д. 1"
    login(client)
    reference = erase(app, client, IVAN[0])
    move_to(app, reference, "2025-03-10")
    with app.app_context():
        dsr = db.session.scalars(
            sa.select(DataSubjectRequest).where(DataSubjectRequest.reference == reference)
        ).one()
        subject_hash = dsr.identity.email_hash
        tables = [
            step["table"]
            for step in dsr.runs[0].plan["steps"]
            if step["action"] != "retain" and dsr.runs[0].rows_affected.get(step["table"])
        ]
    auditor = app.test_client()
    sign_in_as(app, auditor, Role.AUDITOR)
    for query in (f"reference={reference}", "from=2025-03-01&to=2025-03-31"):
        response = auditor.get(f"/admin/audit/act.pdf?{query}")
        assert response.status_code == 200 and response.data.startswith(b"%PDF")
        text = pdf_text(response.data, tmp_path)
        for required in (
            "Акт об уничтожении персональных данных",
            "Act of destruction of personal data",
            "ООО «Пример» / Example LLC",
            "119019, Москва, ул. Примерная, д. 1",  # the controller's, not the subject's
            reference,
            "не храним ни имени",  # the act says why the subject has no name in it
            "Customer accounts",  # the information system
            *tables,
            "удаление записей / records deleted",
            "требование субъекта об уничтожении",
            "GDPR Art. 17",
            "2025-03-10",
            "dpo@example.com",  # who approved
            "worker",  # who destroyed
            "Выгрузка из журнала регистрации событий",
            "run.completed",
        ):
            assert required in text, required
        assert subject_hash in text.replace(" ", "")  # a long hash may break across lines
        reader = PdfReader(io.BytesIO(response.data))
        attached = " ".join(data[0].decode() for data in reader.attachments.values())
        everything = (text + attached).lower()
        for personal in (IVAN[0], "ivan", "petrov", IVAN[1], IVAN[2]):
            # Whole words: "обезличивание" (anonymisation) holds the letters of "иван".
            assert not re.search(rf"\b{re.escape(personal.lower())}\b", everything), personal
        assert "москва" not in text.lower().replace("119019, москва", "")
        assert b"ivan" not in response.data.lower()
        with app.app_context():
            assert verify_proof_pdf(response.data, trusted_keys()).authentic
    rows = list(
        csv.DictReader(io.StringIO(auditor.get(f"/admin/audit/act.csv?reference={reference}").text))
    )
    assert {row["table"] for row in rows} == set(tables)
    assert {row["subject_hash"] for row in rows} == {subject_hash}
    assert all("ivan" not in json.dumps(row).lower() for row in rows)
    acts = events_where(app, action="audit.act_downloaded")
    assert [e.details["format"] for e in acts] == ["pdf", "pdf", "csv"]
    # Nothing destroyed in a period: a clear page, not an empty act.
    nothing = auditor.get("/admin/audit/act.pdf?from=2024-01-01&to=2024-01-31")
    assert nothing.status_code == 404 and "nothing to draw up an act for" in nothing.text


def test_auditors_dpos_and_admins_read_every_page_and_others_do_not(app, client):
    with app.app_context():
        add_request(
            Status.COMPLETED,
            received=datetime(2025, 3, 1, tzinfo=UTC),
            due="2025-03-31",
            ended=at("2025-03-05"),
        )
    pages = ("/admin/audit/?from=2025-03-01&to=2025-03-31", "/admin/audit/log")
    for role in (Role.AUDITOR, Role.DPO, Role.ADMIN, Role.OPERATOR):
        staff = app.test_client()
        sign_in_as(app, staff, role)
        home = staff.get("/admin/dashboard").text
        for path in pages:
            response = staff.get(path)
            if role == Role.OPERATOR:
                assert response.status_code == 403
                assert 'href="/admin/audit/"' not in home
                continue
            assert response.status_code == 200, (role, path)
            assert 'href="/admin/audit/"' in home
            check_accessible(response.text)
            # Read only: the only form that posts is signing out.
            posts = re.findall(r'<form method="post" action="([^"]+)"', response.text)
            assert posts == ["/admin/logout"]
