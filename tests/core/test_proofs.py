"""Signed proofs of deletion: authentic ones verify, every kind of tampering is caught,
and each is written in the language of its request with fonts that have its script."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter
from weasyprint import HTML
from weasyprint.urls import FatalURLFetchingError

from core.pdf import RefusingFetcher
from core.proofs import (
    CONTENT_NAME,
    SIGNATURE_NAME,
    canonical_json,
    render_proof_pdf,
    verify_proof_pdf,
)
from core.signing import SigningKeyError, load_or_create_signing_key, load_signing_key
from tests.services import services_required

LANGUAGES = ["en", "ru", "zh"]


def sample_content(partial: bool = False) -> dict:
    return {
        "format": "lethe-proof/1",
        "controller": "Example Ltd",
        "reference": "DSR-7K3F9Q2M",
        "subject_hash": "ab" * 32,
        "request_type": "erasure",
        "jurisdiction": "gdpr-eu",
        "legal_basis": "GDPR Art. 17",
        "received_on": "2026-03-05",
        "due_on": "2026-04-07",
        "extended_due_on": None,
        "completed_at": "2026-03-09T10:11:12+00:00",
        "on_time": True,
        "approved_by": "dpo@example.com",
        "systems": [
            {
                "system": "crm",
                "label": "Customer accounts",
                "connector": "sql",
                "connector_version": "1",
                "outcome": "failed" if partial else "completed",
                "steps": [
                    {
                        "table": "support_tickets",
                        "action": "delete",
                        "rows": 3,
                        "columns": {},
                        "ground": None,
                        "note": "",
                        "via": "",
                    },
                    {
                        "table": "customers",
                        "action": "anonymise",
                        "rows": 1,
                        "columns": {"email": "placeholder"},
                        "ground": "art17-3-b",
                        "note": "",
                        "via": "",
                    },
                ],
                "rows_affected": {"support_tickets": 3, "customers": 1},
                "verification": {
                    "clean": True,
                    "remaining": {"support_tickets": 0, "customers": 0},
                },
                "message": "",
            }
        ],
        "partial": partial,
        "audit_checkpoint": {"position": 42, "hash": "cd" * 32},
        "issued_at": "2026-03-09T10:11:13+00:00",
    }


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return load_or_create_signing_key(tmp_path_factory.mktemp("keys") / "signing.pem")


@pytest.fixture(scope="module")
def pdfs(key) -> dict[str, bytes]:
    """Return the proof of the same content rendered in each language."""
    return {
        language: render_proof_pdf(sample_content(), key, language=language)
        for language in LANGUAGES
    }


@pytest.fixture(scope="module")
def pdf(pdfs) -> bytes:
    return pdfs["en"]


def page_text(pdf: bytes) -> str:
    return " ".join(" ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(pdf)).pages)


def bare(text: str) -> str:
    """Return ``text`` without whitespace: text extraction spaces Chinese unpredictably."""
    return "".join(text.split())


def embedded_fonts(pdf: bytes, tmp_path: Path) -> dict[str, bool]:
    """Return each font of ``pdf``, without subset prefix, and whether it is embedded."""
    pdffonts = shutil.which("pdffonts")
    if pdffonts is None:
        message = "pdffonts is not installed (Debian package poppler-utils)"
        if services_required():
            pytest.fail(f"{message}; LETHE_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(message)
    path = tmp_path / "proof.pdf"
    path.write_bytes(pdf)
    listing = subprocess.run(
        [pdffonts, str(path)], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    fonts = {}
    for line in listing[2:]:  # a header and a rule, then: name type encoding emb sub uni id gen
        parts = line.split()
        fonts[parts[0].rpartition("+")[2]] = parts[-5] == "yes"
    return fonts


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


def test_an_issued_proof_verifies_and_carries_its_content(key, pdf):
    check = verify_proof_pdf(pdf, {key.key_id: key.public_key})
    assert check.authentic, check.reasons
    assert check.content == sample_content()
    assert check.key_id == key.key_id
    text = page_text(pdf)
    assert "DSR-7K3F9Q2M" in text and check.fingerprint in text and "on time" in text
    assert "PARTIAL" not in text


def test_a_partial_outcome_is_stated_on_the_first_page(key):
    pdf = render_proof_pdf(sample_content(partial=True), key)
    first_page = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "PARTIAL" in first_page


def test_edited_content_is_detected(key, pdf):
    content = sample_content()
    content["systems"][0]["rows_affected"]["support_tickets"] = 30
    forged = rebuild(pdf, {CONTENT_NAME: canonical_json(content)})
    check = verify_proof_pdf(forged, {key.key_id: key.public_key})
    assert not check.authentic
    assert check.reasons == ["signature does not match the embedded content"]


def test_a_proof_resigned_with_another_key_is_detected(tmp_path, key):
    other = load_or_create_signing_key(tmp_path / "other.pem")
    forged = render_proof_pdf(sample_content(), other)
    check = verify_proof_pdf(forged, {key.key_id: key.public_key})
    assert not check.authentic and check.reasons == [f"unknown signing key {other.key_id}"]
    # Claiming the real key's id does not help the forger.
    sig = json.loads(PdfReader(io.BytesIO(forged)).attachments[SIGNATURE_NAME][0])
    sig["key_id"] = key.key_id
    relabelled = rebuild(forged, {SIGNATURE_NAME: json.dumps(sig).encode()})
    assert verify_proof_pdf(relabelled, {key.key_id: key.public_key}).reasons == [
        "signature does not match the embedded content"
    ]


def test_a_page_swapped_under_authentic_attachments_is_detected(key, pdf):
    content = sample_content()
    content["reference"] = "DSR-00000000"
    other_page = render_proof_pdf(content, key)
    reader = PdfReader(io.BytesIO(pdf))
    swapped = rebuild(other_page, {name: data[0] for name, data in reader.attachments.items()})
    check = verify_proof_pdf(swapped, {key.key_id: key.public_key})
    assert not check.authentic
    assert check.reasons == ["the printed page does not match the signed content"]


@pytest.mark.parametrize("garbage", [b"", b"hello", b"%PDF-1.7\n garbage", os.urandom(300)])
def test_garbage_is_not_authentic_and_does_not_crash(key, garbage):
    check = verify_proof_pdf(garbage, {key.key_id: key.public_key})
    assert not check.authentic and check.reasons


def test_the_renderer_fetches_no_file_and_no_remote_url():
    fetcher = RefusingFetcher()
    for url in ("file:///etc/passwd", "https://example.com/logo.png", "http://127.0.0.1/"):
        with pytest.raises(FatalURLFetchingError, match="refuses to fetch"):
            fetcher.fetch(url)
    # A template that tried to pull a local file into a proof stops the rendering.
    with pytest.raises(FatalURLFetchingError):
        HTML(string='<img src="file:///etc/passwd">', url_fetcher=fetcher).write_pdf()


def test_key_file_is_private_stable_and_a_broken_one_is_named(tmp_path):
    path = tmp_path / "k.pem"
    first = load_or_create_signing_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_signing_key(path).key_id == first.key_id
    path.write_text("not a key")
    with pytest.raises(SigningKeyError, match=str(path)):
        load_signing_key(path)
    with pytest.raises(SigningKeyError, match="does not exist"):
        load_signing_key(Path(tmp_path / "absent.pem"))


#: The received date of ``sample_content()`` as each language writes it; Babel knows these
#: from CLDR, with or without our catalogs.
RECEIVED_ON = {"en": "March 5, 2026", "ru": "5 марта 2026 г.", "zh": "2026年3月5日"}


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_proof_in_each_language_verifies_and_signs_the_same_neutral_content(key, pdfs, language):
    check = verify_proof_pdf(pdfs[language], {key.key_id: key.public_key})
    assert check.authentic, check.reasons
    # The signed content names no language and keeps ISO dates: only the page changes.
    assert check.content == sample_content()
    reader = PdfReader(io.BytesIO(pdfs[language]))
    assert reader.root_object["/Lang"] == language
    assert bare(RECEIVED_ON[language]) in bare(page_text(pdfs[language]))


def test_an_unknown_language_gives_an_english_proof(key):
    pdf = render_proof_pdf(sample_content(), key, language="xx")
    assert PdfReader(io.BytesIO(pdf)).root_object["/Lang"] == "en"
    assert "Proof of deletion DSR-7K3F9Q2M" in page_text(pdf)
    assert verify_proof_pdf(pdf, {key.key_id: key.public_key}).authentic


def test_a_missing_catalog_gives_an_english_proof_and_says_so(key, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("core.proofs.TRANSLATIONS", tmp_path)
    pdf = render_proof_pdf(sample_content(), key, language="ru")
    assert PdfReader(io.BytesIO(pdf)).root_object["/Lang"] == "en"
    assert RECEIVED_ON["en"] in page_text(pdf)
    assert "no compiled ru catalog" in caplog.text


# Needs the proof's Russian and Chinese entries in translations/*/messages.po.
@pytest.mark.parametrize(
    ("language", "title", "on_time", "page_footer"),
    [
        ("en", "Proof of deletion DSR-7K3F9Q2M", "on time", "page 1 of 1"),
        ("ru", "Подтверждение удаления DSR-7K3F9Q2M", "в срок", "стр. 1 из 1"),
        ("zh", "删除证明 DSR-7K3F9Q2M", "按时", "第 1 页，共 1 页"),
    ],
    ids=LANGUAGES,
)
def test_the_page_is_written_in_the_language_of_the_request(
    pdfs, language, title, on_time, page_footer
):
    reader = PdfReader(io.BytesIO(pdfs[language]))
    assert reader.metadata.title == title
    first_page = bare(reader.pages[0].extract_text())
    assert bare(title) in first_page
    assert bare(on_time) in first_page and bare(page_footer) in first_page


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_font_of_a_proof_is_embedded(pdfs, language, tmp_path):
    fonts = embedded_fonts(pdfs[language], tmp_path)
    assert fonts and all(fonts.values()), fonts


def test_a_chinese_proof_embeds_a_font_that_has_chinese(pdfs, tmp_path):
    # The stylesheet names WenQuanYi Zen Hei and Noto Sans CJK SC for Chinese glyphs.
    fonts = embedded_fonts(pdfs["zh"], tmp_path)
    assert any(re.search("wenquanyi|cjk", name, re.IGNORECASE) for name in fonts), fonts
    assert "年" in page_text(pdfs["zh"])
