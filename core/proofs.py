"""Render and verify signed PDF proofs of deletion, from plain data, with no personal data.

The content is a plain dict (built by ``core.proof_issue``) of this shape::

    format, controller, reference, subject_hash (keyed hash, never the email),
    request_type, jurisdiction, legal_basis, received_on, due_on, extended_due_on,
    completed_at, on_time, approved_by,
    systems: [{system, label, connector, connector_version, outcome,
               steps: [{table, action, rows, columns, ground, note, via}],
               rows_affected: {table: n}, verification: {clean, remaining}, message}],
    partial, audit_checkpoint: {position, hash}, issued_at

The page is written in the language of the request (English, Russian or Chinese) from the
compiled catalogs in ``translations/``; the content itself stays language-neutral (codes and
ISO dates), so the same content verifies whatever language its page is in.

The PDF carries two attachments: ``proof.json`` (the canonical JSON of the content) and
``proof.sig.json`` (key id, algorithm and the Ed25519 signature of those exact bytes).
The page prints the reference and the content's fingerprint, so a page swapped under an
authentic attachment is caught too.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import segno
from babel.dates import format_date, format_datetime
from babel.support import Translations
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from core import LANGUAGES
from core.signing import SigningKey, verify_signature

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
TRANSLATIONS = TEMPLATES.parent / "translations"
CONTENT_NAME, SIGNATURE_NAME = "proof.json", "proof.sig.json"


def canonical_json(content: Mapping[str, Any]) -> bytes:
    """Return the content as deterministic UTF-8 JSON; refuse anything that is not JSON."""
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def fingerprint(canonical: bytes) -> str:
    """Return the short fingerprint printed on the page: 16 hex digits in groups of four."""
    digest = hashlib.sha256(canonical).hexdigest()[:16]
    return " ".join(digest[i : i + 4] for i in range(0, 16, 4))


def qr_code_svg(url: str) -> Markup:
    """Return a QR code of ``url`` as inline SVG: drawn in the page, nothing to fetch."""
    svg = segno.make(url, error="m").svg_inline(
        omitsize=True, svgclass="qr", lineclass=None, border=2, title=url
    )
    return Markup(svg)  # noqa: S704  (segno's own markup; the URL is XML-escaped in it)


def _environment(language: str) -> Environment:
    """Return the proof templates' environment, speaking ``language`` (English if unknown)."""
    if language not in LANGUAGES:
        language = "en"
    env = _language_environment(language, TRANSLATIONS)
    if env.globals["language"] != language:
        # A proof is still owed once the data is gone: write it in English, but say why.
        log.warning("no compiled %s catalog in %s (run `make install`)", language, TRANSLATIONS)
    return env


@functools.lru_cache(maxsize=16)
def _language_environment(language: str, catalogs: Path) -> Environment:
    """Return a new environment speaking ``language`` (English if ``catalogs`` lacks it).

    Kept per language and folder, so that each compiles the templates once per process.
    """
    translations = Translations.load(str(catalogs), [language])
    if language != "en" and not isinstance(translations, Translations):
        language = "en"
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(translations, newstyle=True)
    env.globals["language"] = language
    env.filters["long_date"] = lambda iso: format_date(
        date.fromisoformat(iso), "long", locale=language
    )
    env.filters["long_datetime"] = lambda iso: format_datetime(
        datetime.fromisoformat(iso), "long", locale=language
    )
    return env


@functools.cache
def _staff_environment() -> Environment:
    """Return the environment of the staff documents (English, no catalog)."""
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))


def render_proof_html(
    content: Mapping[str, Any],
    key: SigningKey,
    *,
    verify_url: str | None = None,
    language: str = "en",
) -> str:
    """Return the page of the proof of ``content`` as HTML, written in ``language``."""
    canonical = canonical_json(content)
    return (
        _environment(language)
        .get_template("pdf/proof.html")
        .render(
            proof=json.loads(canonical),
            key_id=key.key_id,
            signature=base64.b64encode(key.sign(canonical)).decode("ascii"),
            fingerprint=fingerprint(canonical),
            verify_url=verify_url,
            verify_qr=qr_code_svg(verify_url) if verify_url else None,
            content_name=CONTENT_NAME,
            signature_name=SIGNATURE_NAME,
        )
    )


def render_proof_pdf(
    content: Mapping[str, Any],
    key: SigningKey,
    *,
    verify_url: str | None = None,
    language: str = "en",
) -> bytes:
    """Return the signed PDF of ``content``, its page written in ``language``."""
    canonical = canonical_json(content)
    signature_doc = json.dumps(
        {
            "key_id": key.key_id,
            "algorithm": "Ed25519",
            # Ed25519 is deterministic: the same signature as the one printed on the page.
            "signature": base64.b64encode(key.sign(canonical)).decode("ascii"),
        }
    )
    html = render_proof_html(content, key, verify_url=verify_url, language=language)
    return write_signed_pdf(html, canonical, signature_doc, "this proof")


def write_signed_pdf(html: str, canonical: bytes, signature_doc: str, what: str) -> bytes:
    """Render ``html`` to PDF with the signed JSON and its signature attached.

    WeasyPrint fetches nothing: no file, no remote URL.  The page is styled by
    ``templates/pdf/proof.css`` (parsed once per thread) and by its own ``<style>``.
    """
    from core.pdf import draw_signed_pdf

    return draw_signed_pdf(
        html,
        [
            (CONTENT_NAME, canonical, f"Signed content of {what} (canonical JSON)"),
            (
                SIGNATURE_NAME,
                signature_doc.encode("ascii"),
                f"Ed25519 signature of {CONTENT_NAME}",
            ),
        ],
    )


def render_signed_document(
    template: str, content: Mapping[str, Any], key: SigningKey, what: str, **context: Any
) -> bytes:
    """Return the signed PDF of a staff document (English) drawn by ``template``.

    The template gets ``content`` (as its canonical JSON reads back) as ``document`` and the
    signature's key id, signature and fingerprint to print; ``context`` adds to that.
    """
    canonical = canonical_json(content)
    signature = base64.b64encode(key.sign(canonical)).decode("ascii")
    page = _staff_environment().get_template(template)
    html = page.render(
        document=json.loads(canonical),
        key_id=key.key_id,
        signature=signature,
        fingerprint=fingerprint(canonical),
        content_name=CONTENT_NAME,
        signature_name=SIGNATURE_NAME,
        **context,
    )
    signature_doc = json.dumps(
        {"key_id": key.key_id, "algorithm": "Ed25519", "signature": signature}
    )
    return write_signed_pdf(html, canonical, signature_doc, what)


@dataclass
class ProofCheck:
    """Whether a proof is authentic, and every reason found for the verdict.

    ``failures`` names each failed check by a code (``not_pdf``, ``unreadable``,
    ``no_attachments``, ``malformed``, ``unknown_key``, ``bad_signature``, ``page_mismatch``,
    then those of ``core.proof_issue.check_proof``) for pages that word them for a reader;
    ``reasons`` says the same, and more, in English.  ``signed`` is whether one of our keys
    signed the embedded content, so that it can be trusted for further checks.
    """

    authentic: bool
    reasons: list[str] = field(default_factory=list)
    content: dict[str, Any] | None = None
    key_id: str | None = None
    fingerprint: str | None = None
    failures: list[str] = field(default_factory=list)
    signed: bool = False

    def fail(self, code: str, reason: str) -> ProofCheck:
        """Record a failed check; the proof is then not authentic."""
        self.authentic = False
        self.failures.append(code)
        self.reasons.append(reason)
        return self


def _attachments(pdf: bytes) -> tuple[dict[str, bytes], str]:
    from pypdf import PdfReader  # only where proofs are checked: it takes 10 MB to load

    reader = PdfReader(io.BytesIO(pdf), strict=False)
    found = {name: data[0] for name, data in reader.attachments.items() if data}
    text = "\n".join(page.extract_text() or "" for page in reader.pages)
    return found, text


def verify_proof_pdf(pdf: bytes, trusted_keys: Mapping[str, Ed25519PublicKey]) -> ProofCheck:
    """Check a proof's signature, its signing key and that its page matches the signed data."""
    if not pdf.startswith(b"%PDF-"):
        return ProofCheck(False).fail("not_pdf", "not a PDF")
    try:
        found, text = _attachments(pdf)
    except Exception as exc:  # pypdf raises many kinds of error on a damaged file
        return ProofCheck(False).fail("unreadable", f"the PDF cannot be read: {exc!r}"[:300])
    if CONTENT_NAME not in found or SIGNATURE_NAME not in found:
        return ProofCheck(False).fail(
            "no_attachments", f"no embedded {CONTENT_NAME} and {SIGNATURE_NAME}"
        )
    canonical = found[CONTENT_NAME]
    check = ProofCheck(False, fingerprint=fingerprint(canonical))
    try:
        signature_doc = json.loads(found[SIGNATURE_NAME])
        check.key_id = str(signature_doc["key_id"])
        signature = base64.b64decode(signature_doc["signature"], validate=True)
        check.content = json.loads(canonical)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return check.fail("malformed", "the embedded signature or content is malformed")
    key = trusted_keys.get(check.key_id)
    if key is None:
        return check.fail("unknown_key", f"unknown signing key {check.key_id}")
    if not verify_signature(key, signature, canonical) or not isinstance(check.content, dict):
        return check.fail("bad_signature", "signature does not match the embedded content")
    check.signed = True
    flat = " ".join(text.split())
    if str(check.content.get("reference")) not in flat or check.fingerprint not in flat:
        return check.fail("page_mismatch", "the printed page does not match the signed content")
    check.authentic = True
    return check
