"""A whole request leaves the person's name and address nowhere we keep things in clear.

Distinctive names (Latin, Cyrillic, Chinese) are typed into the free-text fields of the
portal, distinctive addresses into the email field; the requests are verified, approved,
erased (with a proof) or exported; every log record at DEBUG, the database's raw bytes
(SQLite file and its journals) or every text and binary value of every table
(PostgreSQL), the export files on disk and the proof PDFs are then searched for them.
"""

from __future__ import annotations

import io
import logging
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from core.extensions import db
from core.models import DataSubjectRequest, Proof, Status
from tests.flows import approve, login, submit, verify_latest

PEOPLE = (
    ("Zebulon Quixotesque", "zebulon.quixotesque@pii-probe.example", "erasure"),
    ("Всеволод Ыкающий", "vsevolod.ykayushchiy@pii-probe.example", "erasure"),
    ("欧阳震华", "ouyang.zhenhua@pii-probe.example", "erasure"),
    ("Ptolemaia Vandersnoot", "ptolemaia.vandersnoot@pii-probe.example", "access"),
)


def _needles() -> list[str]:
    needles = []
    for name, email, _ in PEOPLE:
        needles += [name, email, email.split("@")[0], *name.split()]
    needles.append("Xanthippopolis")
    return needles


def _leaks(haystack: str) -> list[str]:
    lowered = haystack.lower()
    return [needle for needle in _needles() if needle.lower() in lowered]


def _byte_leaks(data: bytes) -> list[str]:
    found = []
    for needle in _needles():
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            if needle.encode(encoding) in data or needle.lower().encode(encoding) in data:
                found.append(f"{needle} ({encoding})")
                break
    return found


@pytest.fixture
def every_log_record(caplog):
    """Capture every logger at DEBUG, whatever level it was quietened to."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    yield caplog
    for logger, level in levels.items():
        logger.setLevel(level)


def _add_to_the_crm(crm_url: str) -> None:
    """Make each person a customer of the demo CRM, so there is something to erase."""
    engine = sa.create_engine(crm_url, hide_parameters=True)
    customers = sa.Table("customers", sa.MetaData(), autoload_with=engine)
    with engine.begin() as connection:
        for name, email, _ in PEOPLE:
            connection.execute(
                customers.insert().values(
                    email=email,
                    full_name=name,
                    phone="+49 30 5550 1234",
                    city="Xanthippopolis",
                    created_at=datetime(2020, 1, 1),
                    marketing_opt_in=True,
                )
            )
    engine.dispose()


def _walk_every_request(app, client) -> list[bytes]:
    """Take each person's request from the portal to its end; return the proof PDFs."""
    staff = app.test_client()
    login(staff)
    for name, email, request_type in PEOPLE:
        submit(
            client,
            email,
            request_type,
            customer_number=name,
            reason_code="other",
            reason=f"Ich bin {name}, bitte löschen. My address is {email}.",
        )
        verify_latest(app, client)
        with app.app_context():
            reference = db.session.scalars(
                sa.select(DataSubjectRequest.reference).order_by(DataSubjectRequest.id.desc())
            ).first()
        assert approve(staff, reference).status_code == 302
    with app.app_context():
        statuses = db.session.scalars(sa.select(DataSubjectRequest.status)).all()
        assert set(statuses) == {Status.COMPLETED}, statuses
        proof_ids = db.session.scalars(sa.select(Proof.id)).all()
    assert len(proof_ids) == 3
    pdfs = []
    for proof_id in proof_ids:
        response = staff.get(f"/admin/proofs/{proof_id}.pdf")
        assert response.status_code == 200 and response.data.startswith(b"%PDF")
        pdfs.append(response.data)
    return pdfs


def _every_value_of_every_table(app) -> list[str]:
    """Return every non-null value of our database, as text, like a data-only dump."""
    values = []
    with app.app_context():
        engine = db.engine
        with engine.connect() as connection:
            metadata = sa.MetaData()
            metadata.reflect(bind=engine)
            for table in metadata.sorted_tables:
                for row in connection.execute(sa.select(table)):
                    for value in row:
                        if isinstance(value, bytes | memoryview):
                            values.append(bytes(value).decode("utf-8", "replace"))
                        elif value is not None:
                            values.append(str(value))
    return values


def test_no_name_or_address_is_left_in_clear_anywhere(
    app, client, crm_url, every_log_record, capfd
):
    _add_to_the_crm(crm_url)
    pdfs = _walk_every_request(app, client)

    # The proofs, as bytes and as the text a reader sees (with their attachments).
    for pdf in pdfs:
        reader = PdfReader(io.BytesIO(pdf))
        text = " ".join(page.extract_text() for page in reader.pages)
        text += " ".join(b"".join(data).decode() for data in reader.attachments.values())
        assert _leaks(text) == [], "the proof names the person"
        assert _byte_leaks(pdf) == [], "the proof's bytes hold the person"

    # Every value of every table, read like a dump.
    dump = "\n".join(_every_value_of_every_table(app))
    assert _leaks(dump) == [], "the database holds the person in clear"

    # The raw files of an SQLite database, journals included.
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        files = [p for p in path.parent.glob(path.name + "*") if p.is_file()]
        assert path in files
        for file in files:
            assert _byte_leaks(file.read_bytes()) == [], f"{file.name} holds the person"

    # Export packages on disk are sealed.
    exports = [p for p in Path(app.config["EXPORT_DIR"]).rglob("*") if p.is_file()]
    assert exports, "the access request left no package"
    for file in exports:
        assert _byte_leaks(file.read_bytes()) == [], "an export file is not sealed"

    # Every log record at DEBUG, and whatever the app's handlers wrote to the terminal.
    records = every_log_record.records
    assert records, "nothing was logged: the capture is not working"
    leaked = [r for r in records if _leaks(r.getMessage())]
    assert leaked == [], "\n".join(f"{r.name}: {r.getMessage()[:300]}" for r in leaked)
    out, err = capfd.readouterr()
    assert _leaks(out + err) == [], "the terminal output names the person"
