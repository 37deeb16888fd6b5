"""Public proof checking: anyone uploads a proof of deletion and learns whether it is ours.

Also publishes, at stable URLs, every public key that signed proofs, so that an auditor can
check a proof's signature without trusting this page.
"""

from __future__ import annotations

import re

from flask import (
    abort,
    current_app,
    jsonify,
    make_response,
    render_template,
    request,
)
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from werkzeug.exceptions import RequestEntityTooLarge

from core.extensions import csrf, db, limiter
from core.keyring import published_keys
from core.links import external_url
from core.proof_issue import check_proof
from portal import bp

#: Largest upload (``PROOF_MAX_BYTES`` in the config overrides it); a proof of deletion
#: is tens of kilobytes.
MAX_PROOF_BYTES = 5 * 1024 * 1024
_FORM_OVERHEAD = 64 * 1024
_REFERENCE = re.compile(r"DSR-[0-9A-Z]{8}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_KEYS_MAX_AGE = 3600

#: Each failed check of ``core.proof_issue.check_proof``, in words a reader understands.
FAILURE_WORDS = {
    "not_pdf": _l("This file is not a PDF."),
    "unreadable": _l("The PDF cannot be read: the file is damaged."),
    "no_attachments": _l(
        "The PDF carries no signed content: it is not one of our proofs of deletion, "
        "or the signed content was removed from it."
    ),
    "malformed": _l("The signed content or its signature inside the PDF is damaged."),
    "unknown_key": _l(
        "Unknown signing key: the document was signed with a key (%(key_id)s) that we never used."
    ),
    "bad_signature": _l("Bad signature: the signed content was changed after we signed it."),
    "page_mismatch": _l(
        "The printed page does not match the signed content: its reference or fingerprint "
        "differs from the signed data."
    ),
    "not_issued": _l(
        "Not a proof we issued: the signed content is ours, but this file is not the PDF we "
        "issued — it was altered or saved again."
    ),
    "checkpoint_missing": _l(
        "The audit log position this proof records (%(position)s) is not in our audit log."
    ),
    "checkpoint_differs": _l(
        "Our audit log entry at the position this proof records (%(position)s) differs from "
        "the one in the proof: the audit log was rewritten."
    ),
    "chain_broken": _l(
        "Our audit log does not verify up to the position this proof records "
        "(%(position)s): an entry was edited or removed."
    ),
}


class ProofUploadForm(FlaskForm):
    """Upload one proof of deletion (PDF)."""

    proof = FileField(
        _l("Proof of deletion (PDF file)"),
        description=_l("The PDF we sent you or your auditor. It is checked, not kept."),
        validators=[FileRequired(message=_l("Choose the PDF file to check."))],
        render_kw={"accept": ".pdf,application/pdf"},
    )


def _checked_words(check) -> list[str]:
    """Return each failed check of ``check`` as a sentence in the reader's language."""
    position = ((check.content or {}).get("audit_checkpoint") or {}).get("position")
    # The key id comes from the uploaded file: only a well-formed one is repeated to the reader.
    key_id = check.key_id if _KEY_ID.fullmatch(check.key_id or "") else "?"
    return [
        str(FAILURE_WORDS[code]) % {"key_id": key_id, "position": position}
        for code in check.failures
    ]


def _page(form: ProofUploadForm, status: int = 200, **context):
    reference = request.args.get("reference", "")
    return render_template(
        "portal/proof_check.html",
        form=form,
        reference=reference if _REFERENCE.fullmatch(reference) else None,
        keys_url=external_url("portal.proof_keys"),
        **context,
    ), status


@bp.route("/proofs/verify", methods=["GET", "POST"])
@limiter.limit("30 per hour", methods=["POST"])
def proof_check():
    """Offer the upload form; check an uploaded proof and say whether it is authentic, and why."""
    if request.method == "GET":
        return _page(ProofUploadForm())
    # Exempt from the app-wide CSRF check, which would read the body under the app's smaller
    # limit: the form checks its own token once this page's limit applies.
    limit = current_app.config.get("PROOF_MAX_BYTES", MAX_PROOF_BYTES)
    request.max_content_length = limit + _FORM_OVERHEAD
    size = f"{limit // 2**20} MB" if limit >= 2**20 else f"{limit // 1024} kB"
    too_large = _l(
        "The file is larger than %(size)s. A proof of deletion is much smaller: check "
        "that you chose the right file.",
        size=size,
    )
    try:
        form = ProofUploadForm()
        valid = form.validate_on_submit()
    except RequestEntityTooLarge:
        return _page(ProofUploadForm(formdata=None), 413, upload_error=too_large)
    if not valid:
        if form.csrf_token.errors:
            error = _l("The form had expired. Choose the file again.")
            return _page(form, 400, upload_error=error)
        return _page(form, 400)
    pdf = form.proof.data.read(limit + 1)
    if len(pdf) > limit:
        return _page(form, 413, upload_error=too_large)
    if not pdf.startswith(b"%PDF-"):
        form.proof.errors = [_l("This file is not a PDF. Choose the proof of deletion (.pdf).")]
        return _page(form, 400)
    check = check_proof(db.session, pdf)
    current_app.logger.info(
        "proof check: %s (%s)", "authentic" if check.authentic else "NOT authentic", check.failures
    )
    statuses = {key.key_id: key.status for key in published_keys()}
    return _page(
        ProofUploadForm(formdata=None),
        check=check,
        failures=_checked_words(check),
        key_status=statuses.get(check.key_id),
    )


csrf.exempt(proof_check)


def _public(response, content_type: str):
    response.headers["Content-Type"] = content_type
    response.headers["Cache-Control"] = f"public, max-age={_KEYS_MAX_AGE}"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@bp.route("/.well-known/lethe-proof-keys.json")
def proof_keys():
    """Publish every public key that signed our proofs, current and retired."""
    keys = [
        {**key.as_dict(), "url": external_url("portal.proof_key_pem", key_id=key.key_id)}
        for key in published_keys()
    ]
    return _public(jsonify({"keys": keys}), "application/json")


@bp.route("/proof-keys/<key_id>.pem")
def proof_key_pem(key_id: str):
    """Publish one public key as PEM."""
    for key in published_keys():
        if key.key_id == key_id:
            return _public(make_response(key.public_key_pem), "application/x-pem-file")
    abort(404)
