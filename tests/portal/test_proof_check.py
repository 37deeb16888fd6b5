"""Checking a proof of deletion: on the public page and with ``lethe proof verify``, each kind
of forgery is named; keys are published and rotate without orphaning old proofs."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from pypdf import PdfReader, PdfWriter

from core.audit import hash_of
from core.cli import cli
from core.extensions import db
from core.models import AuditEvent, DataSubjectRequest, Proof
from core.proofs import (
    CONTENT_NAME,
    canonical_json,
    fingerprint,
    qr_code_svg,
    render_proof_html,
    render_proof_pdf,
)
from core.signing import load_or_create_signing_key, load_public_key_pem
from tests.conftest import csrf_token
from tests.flows import approve, login, submit, verify_latest

PAGE = "/proofs/verify"


def erase_with_proof(app, client, email: str = "alice@example.com") -> tuple[str, bytes]:
    """Run an erasure of ``email`` to its end; return its reference and proof PDF."""
    submit(client, email)
    verify_latest(app, client)
    login(client)
    with app.app_context():
        reference = db.session.scalars(
            sa.select(DataSubjectRequest.reference).order_by(DataSubjectRequest.id.desc())
        ).first()
    assert approve(client, reference).status_code == 302
    with app.app_context():
        pdf = db.session.scalars(
            sa.select(Proof.pdf)
            .join(Proof.request)
            .where(DataSubjectRequest.reference == reference)
        ).one()
    return reference, pdf


@pytest.fixture
def proof(app, client) -> tuple[str, bytes]:
    return erase_with_proof(app, client)


def upload(app, pdf: bytes, name: str = "proof.pdf"):
    """Upload ``pdf`` on the public page as a visitor; return the response."""
    visitor = app.test_client()
    token = csrf_token(visitor.get(PAGE).text)
    return visitor.post(
        PAGE,
        data={"csrf_token": token, "proof": (io.BytesIO(pdf), name)},
        content_type="multipart/form-data",
    )


def cli_verify(app, tmp_path: Path, pdf: bytes):
    path = tmp_path / "checked.pdf"
    path.write_bytes(pdf)
    return app.test_cli_runner().invoke(cli, ["proof", "verify", str(path)])


def words(html: str) -> str:
    """Return the visible text of a page, on one line."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split()).replace("&#39;", "'")


def rebuild(pdf: bytes, replace: dict[str, bytes]) -> bytes:
    """Return ``pdf`` with the named attachments replaced, as a forger would."""
    reader = PdfReader(io.BytesIO(pdf))
    attachments = {name: data[0] for name, data in reader.attachments.items()}
    attachments.update(replace)
    writer = PdfWriter()
    for page in reader.pages:
        writer.add_page(page)
    for name, data in attachments.items():
        writer.add_attachment(name, data)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def content_of(pdf: bytes) -> dict:
    return json.loads(PdfReader(io.BytesIO(pdf)).attachments[CONTENT_NAME][0])


def test_an_authentic_proof_is_said_authentic_on_the_page_and_by_the_cli(app, proof, tmp_path):
    reference, pdf = proof
    page = upload(app, pdf)
    assert page.status_code == 200
    text = words(page.text)
    assert "Authentic" in text and "Not authentic" not in text
    key = app.extensions["lethe.signing_key"]
    fingerprint = content_fingerprint(pdf)
    assert reference in text and key.key_id in text and fingerprint in text
    result = cli_verify(app, tmp_path, pdf)
    assert result.exit_code == 0, result.output
    assert f"authentic: {reference}, signed by key {key.key_id}" in result.output


def content_fingerprint(pdf: bytes) -> str:
    return fingerprint(canonical_json(content_of(pdf)))


def flip_a_date(pdf: bytes) -> bytes:
    """Flip one bit of a date in the PDF (2026 becomes 2027): the document still reads."""
    at = pdf.index(b"/ModDate (D:") + len(b"/ModDate (D:") + 3
    return pdf[:at] + bytes([pdf[at] ^ 0x01]) + pdf[at + 1 :]


def edit_json(pdf: bytes) -> bytes:
    content = content_of(pdf)
    content["systems"][0]["rows_affected"] = {"customers": 0}
    return rebuild(pdf, {CONTENT_NAME: canonical_json(content)})


def resign(pdf: bytes, tmp_path: Path) -> bytes:
    other = load_or_create_signing_key(tmp_path / "forger.pem")
    content = content_of(pdf)
    return render_proof_pdf(content, other, verify_url="http://127.0.0.1:5000/proofs/verify")


#: Each forgery, what the page says about it, and what ``lethe proof verify`` says.
FORGERIES = {
    "flipped byte": (
        "Not a proof we issued",
        "these bytes are not the PDF this deployment issued",
    ),
    "edited JSON": ("Bad signature", "signature does not match the embedded content"),
    "re-signed with another key": ("Unknown signing key", "unknown signing key"),
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_each_forgery_is_named_on_the_page_and_by_the_cli(app, proof, tmp_path, forgery):
    _reference, pdf = proof
    forged = {
        "flipped byte": flip_a_date,
        "edited JSON": edit_json,
        "re-signed with another key": lambda pdf: resign(pdf, tmp_path),
    }[forgery](pdf)
    on_page, in_cli = FORGERIES[forgery]
    page = upload(app, forged)
    assert page.status_code == 200
    text = words(page.text)
    assert "Not authentic" in text and on_page in text, text
    result = cli_verify(app, tmp_path, forged)
    assert result.exit_code == 1 and "NOT AUTHENTIC" in result.output
    assert in_cli in result.output


def test_any_flipped_byte_makes_a_proof_not_authentic(app, proof):
    from core.proof_issue import check_proof

    _reference, pdf = proof
    with app.app_context():
        for at in range(0, len(pdf), max(1, len(pdf) // 40)):
            forged = pdf[:at] + bytes([pdf[at] ^ 0x20]) + pdf[at + 1 :]
            check = check_proof(db.session, forged)
            assert not check.authentic and check.failures, at


def rehash_chain(start: int) -> None:
    """Recompute every hash from ``start`` on, as someone covering an edit would."""
    events = db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.position)).all()
    prev = events[start - 2].hash if start > 1 else "0" * 64
    for event in events[start - 1 :]:
        event.prev_hash = prev
        event.hash = prev = hash_of(event, prev)
    db.session.commit()


@pytest.mark.parametrize(
    ("rehashed", "on_page", "in_cli"),
    [
        (False, "Our audit log does not verify up to the position", "was altered after it"),
        (True, "differs from the one in the proof", "not the"),
    ],
    ids=["edited row", "edited row, chain re-hashed"],
)
def test_an_edited_audit_row_is_named_on_the_page_and_by_the_cli(
    app, proof, tmp_path, rehashed, on_page, in_cli
):
    _reference, pdf = proof
    position = content_of(pdf)["audit_checkpoint"]["position"]
    with app.app_context():
        first = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.position == 1)).one()
        first.details = {**first.details, "edited": True}
        db.session.commit()
        if rehashed:
            rehash_chain(1)
    page = upload(app, pdf)
    text = words(page.text)
    assert "Not authentic" in text and on_page in text and f"({position})" in text, text
    result = cli_verify(app, tmp_path, pdf)
    assert result.exit_code == 1
    assert f"audit chain position {position}" in result.output or (
        f"up to position {position}" in result.output
    )
    assert in_cli in result.output


def test_a_proof_whose_checkpoint_is_not_in_our_log_is_named(app, proof, tmp_path):
    # A proof signed with our key but pointing past the end of our log (another deployment's
    # log with the same key, or a log cut short).
    _reference, pdf = proof
    content = content_of(pdf)
    content["audit_checkpoint"]["position"] = 10_000
    with app.app_context():
        forged = render_proof_pdf(content, app.extensions["lethe.signing_key"])
    text = words(upload(app, forged).text)
    assert "(10000) is not in our audit log" in text
    assert "Not a proof we issued" in text
    assert "position 10000 recorded in the proof is not in our audit log" in (
        cli_verify(app, tmp_path, forged).output
    )


def test_the_upload_form_is_accessible_and_works_without_javascript(client):
    page = client.get(f"{PAGE}?reference=DSR-7K3F9Q2M")
    assert page.status_code == 200
    assert "<h1>Check a proof of deletion</h1>" in page.text
    assert re.search(r'<label for="proof">[^<]+</label>', page.text)
    assert 'enctype="multipart/form-data"' in page.text and "<script" not in page.text
    assert "style=" not in page.text and "<style" not in page.text
    assert "DSR-7K3F9Q2M" in page.text
    # Anything else in the reference parameter is not echoed.
    assert "&lt;b&gt;" not in client.get(f"{PAGE}?reference=<b>x").text


def test_a_file_too_large_is_refused_with_a_clear_message(app):
    from portal.proof_check import MAX_PROOF_BYTES

    assert MAX_PROOF_BYTES == 5 * 1024 * 1024  # the default; the test lowers it
    app.config["PROOF_MAX_BYTES"] = 50 * 1024
    for size in (50 * 1024 + 1, 200 * 1024):  # just over, and beyond what is even read
        response = upload(app, b"%PDF-1.7\n" + b"0" * size)
        assert response.status_code == 413
        assert "The file is larger than 50 kB" in words(response.text)


@pytest.mark.parametrize("body", [b"PK\x03\x04 a zip", b"hello", b""])
def test_a_file_that_is_not_a_pdf_is_refused_with_a_clear_message(app, body):
    response = upload(app, body, name="proof.pdf")
    assert response.status_code == 400
    text = words(response.text)
    assert "This file is not a PDF" in text or "Choose the PDF file to check" in text


def test_an_expired_form_asks_to_choose_the_file_again(app):
    response = app.test_client().post(
        PAGE, data={"proof": (io.BytesIO(b"%PDF-1.7"), "p.pdf")}, content_type="multipart/form-data"
    )
    assert response.status_code == 400
    assert "The form had expired" in response.text


def test_uploads_are_rate_limited(app):
    visitor = app.test_client()
    statuses = [
        visitor.post(PAGE, data={"proof": (io.BytesIO(b"x"), "p.pdf")}).status_code
        for _ in range(31)
    ]
    assert statuses[:30] == [400] * 30 and statuses[30] == 429


def test_the_proof_carries_a_qr_code_and_the_address_of_the_verification_page(app, proof):
    reference, pdf = proof
    url = f"http://127.0.0.1:5000/proofs/verify?reference={reference}"
    first_page = "".join(PdfReader(io.BytesIO(pdf)).pages[0].extract_text().split())
    assert url in first_page
    # The QR code of that address is drawn in the page (inline SVG, nothing fetched).
    with app.app_context():
        key = app.extensions["lethe.signing_key"]
        html = render_proof_html(content_of(pdf), key, verify_url=url)
    qr = str(qr_code_svg(url))
    assert qr in html and f"<title>{url}</title>" in qr
    assert html.index(qr) < html.index("<h2>")  # above the details: on the first page
    # The page the code leads to exists and names the proof.
    assert reference in app.test_client().get(f"/proofs/verify?reference={reference}").text


def keys_of(client) -> dict[str, dict]:
    response = client.get("/.well-known/lethe-proof-keys.json")
    assert response.status_code == 200
    assert "public" in response.headers["Cache-Control"]
    return {key["key_id"]: key for key in response.json["keys"]}


def test_public_keys_are_published_at_a_stable_url(app, client):
    key = app.extensions["lethe.signing_key"]
    keys = keys_of(client)
    assert list(keys) == [key.key_id]
    assert keys[key.key_id]["status"] == "current" and keys[key.key_id]["algorithm"] == "Ed25519"
    pem = client.get(f"/proof-keys/{key.key_id}.pem")
    assert pem.status_code == 200 and "public" in pem.headers["Cache-Control"]
    assert pem.text == key.public_pem() == keys[key.key_id]["public_key_pem"]
    assert "PRIVATE" not in pem.text
    assert client.get("/proof-keys/0000000000000000.pem").status_code == 404


def test_after_rotation_old_proofs_verify_and_new_ones_use_the_new_key(app, client, tmp_path):
    reference, old_pdf = erase_with_proof(app, client)
    old_id = app.extensions["lethe.signing_key"].key_id
    runner = app.test_cli_runner()
    rotated = runner.invoke(cli, ["keys", "rotate"])
    assert rotated.exit_code == 0, rotated.output
    key_file = Path(app.config["SIGNING_KEY_FILE"])
    assert key_file.stat().st_mode & 0o777 == 0o600
    with app.app_context():
        from core.keyring import current_signing_key

        new_id = current_signing_key().key_id
        rotation = db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "signing_key.rotated")
        ).one()
        assert rotation.details == {"retired_key": old_id, "new_key": new_id}
        # The public keys are in the database every machine shares, not beside the key file.
        from core.keyring import keyring_file
        from core.models import SigningKeyRecord

        recorded = {r.key_id: r for r in db.session.scalars(sa.select(SigningKeyRecord))}
        assert set(recorded) == {old_id, new_id} and recorded[new_id].retired_at is None
        assert recorded[old_id].retired_at == recorded[new_id].since_at
        assert not keyring_file(key_file).exists()
    assert new_id != old_id and new_id in rotated.output
    # The old proof still verifies, on the page and by the command.
    text = words(upload(app, old_pdf).text)
    assert "Authentic" in text and "Not authentic" not in text and "retired key" in text
    assert cli_verify(app, tmp_path, old_pdf).exit_code == 0
    # Both keys are published, the old one retired.
    keys = keys_of(client)
    assert keys[new_id]["status"] == "current" and keys[old_id]["status"] == "retired"
    assert keys[old_id]["retired"] and keys[new_id]["since"] == keys[old_id]["retired"]
    from core.signing import key_id_of

    for key_id in (old_id, new_id):
        pem = client.get(f"/proof-keys/{key_id}.pem").text
        assert key_id_of(load_public_key_pem(pem)) == key_id
    listing = runner.invoke(cli, ["keys", "list"])
    assert listing.exit_code == 0
    lines = listing.output.splitlines()
    assert lines[0].startswith(f"{new_id}  Ed25519  current") and old_id in lines[1]
    assert "retired" in lines[1]
    # A new proof is signed with the new key, and verifies too.
    _new_reference, new_pdf = erase_with_proof(app, client, "ivan.petrov@example.ru")
    sig = json.loads(PdfReader(io.BytesIO(new_pdf)).attachments["proof.sig.json"][0])
    assert sig["key_id"] == new_id
    assert "Authentic" in words(upload(app, new_pdf).text)
    # A second rotation keeps both earlier keys.
    assert runner.invoke(cli, ["keys", "rotate"]).exit_code == 0
    assert {old_id, new_id} < set(keys_of(client))
    assert cli_verify(app, tmp_path, old_pdf).exit_code == 0
    assert reference in cli_verify(app, tmp_path, old_pdf).output


def test_proof_uploads_verify_the_chain_from_the_last_verified_head(app, client, proof):
    from core.audit import current_chain_cache

    _reference, pdf = proof
    assert "Authentic" in words(upload(app, pdf).text)
    with app.app_context():
        cache = current_chain_cache()
        first_check, verified = cache.verified_at, cache.position
    erase_with_proof(app, client, "ivan.petrov@example.ru")  # the chain grows
    assert "Not authentic" not in words(upload(app, pdf).text)
    assert cache.verified_at == first_check and cache.position == verified
    # An edited event covered by re-hashing changes the verified head's hash: checked again.
    with app.app_context():
        first = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.position == 1)).one()
        first.details = {**first.details, "edited": True}
        db.session.commit()
        rehash_chain(1)
    assert "Not authentic" in words(upload(app, pdf).text)


def test_once_the_cache_is_stale_an_edit_without_rehash_is_found_on_upload(app, proof):
    from core.audit import current_chain_cache

    _reference, pdf = proof
    assert "Not authentic" not in words(upload(app, pdf).text)
    with app.app_context():
        current_chain_cache().max_age = 0  # as when AUDIT_CHAIN_FULL_CHECK_SECONDS has passed
        db.session.execute(
            sa.update(AuditEvent).where(AuditEvent.position == 1).values(details={"forged": 1})
        )
        db.session.commit()
    text = words(upload(app, pdf).text)
    assert "Not authentic" in text and "Our audit log does not verify up to the position" in text
