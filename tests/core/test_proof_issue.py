"""Issued proofs: in the language of the request, authentic, and free of personal data."""

from __future__ import annotations

import io
import shutil
import subprocess

import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from core.extensions import db
from core.models import DataSubjectRequest, Proof
from core.proof_issue import check_proof
from tests.flows import approve, login, submit, verify_latest
from tests.services import services_required

#: A demo customer per language, with what the CRM holds about them (tests/core/test_demo.py).
PEOPLE = {
    "en": ("alice@example.com", ["alice", "Alice Example", "London"]),
    "ru": ("ivan.petrov@example.ru", ["ivan.petrov", "Иван Петров", "Петров", "Москва"]),
    "zh": ("li.wei@example.cn", ["li.wei", "李伟", "北京"]),
}


def pdftotext(pdf: bytes, tmp_path) -> str:
    """Return the text of ``pdf`` as poppler's pdftotext reads it."""
    tool = shutil.which("pdftotext")
    if tool is None:
        message = "pdftotext is not installed (Debian package poppler-utils)"
        if services_required():
            pytest.fail(f"{message}; LETHE_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(message)
    path = tmp_path / "proof.pdf"
    path.write_bytes(pdf)
    return subprocess.run(
        [tool, "-enc", "UTF-8", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout


@pytest.mark.parametrize("language", ["en", "ru", "zh"])
def test_a_proof_is_issued_in_the_language_of_its_request(app, client, language, tmp_path):
    email, personal = PEOPLE[language]
    client.get(f"/?lang={language}")
    submit(client, email)
    verify_latest(app, client)
    login(client)
    with app.app_context():
        request = db.session.scalars(sa.select(DataSubjectRequest)).one()
        reference = request.reference
        assert request.language == language
    assert approve(client, reference).status_code == 302
    with app.app_context():
        pdf = db.session.scalars(sa.select(Proof.pdf)).one()
        check = check_proof(db.session, pdf)
    assert check.authentic, check.reasons
    assert "language" not in check.content and check.content["reference"] == reference
    # Who approved and who carried it out are stated (staff, not the subject).
    assert check.content["approved_by"] == "dpo@example.com"
    assert check.content["carried_out_by"] == ["worker"]
    reader = PdfReader(io.BytesIO(pdf))
    assert reader.root_object["/Lang"] == language
    everything = " ".join(page.extract_text() for page in reader.pages) + " ".join(
        data[0].decode() for data in reader.attachments.values()
    )
    poppler = pdftotext(pdf, tmp_path)
    assert reference in everything and reference in poppler
    # No personal data of the subject anywhere: page text (two extractors), attachments,
    # and the raw bytes in the encodings a PDF may hold text in.
    for word in [email, *personal]:
        assert word.lower() not in everything.lower(), word
        assert word.lower() not in poppler.lower(), word
        for encoding in ("utf-8", "utf-16-be"):
            assert word.encode(encoding) not in pdf, (word, encoding)
