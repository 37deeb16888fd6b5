"""Issued proofs: in the language of the request, authentic, and free of personal data."""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from core.extensions import db
from core.models import DataSubjectRequest, Proof
from core.proof_issue import check_proof
from tests.flows import approve, login, submit, verify_latest


@pytest.mark.parametrize("language", ["en", "ru", "zh"])
def test_a_proof_is_issued_in_the_language_of_its_request(app, client, language):
    client.get(f"/?lang={language}")
    submit(client, "alice@example.com")
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
    reader = PdfReader(io.BytesIO(pdf))
    assert reader.root_object["/Lang"] == language
    everything = " ".join(page.extract_text() for page in reader.pages) + " ".join(
        data[0].decode() for data in reader.attachments.values()
    )
    assert reference in everything
    for personal in ("alice", "Alice Example", "London"):
        assert personal.lower() not in everything.lower()
