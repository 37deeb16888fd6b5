"""Issue and check proofs of deletion for requests in our database.

``core.proofs`` renders and verifies PDFs from plain dicts; this module gathers those
dicts from the request, keeps the issued PDF with the digest of its bytes, and tells the
subject.  The proof names the subject only by keyed hash.
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from core.audit import chain_head, record_event
from core.links import external_url
from core.models import DataSubjectRequest, Proof, RunStatus, utcnow
from core.operations import received_on
from core.proofs import ProofCheck, canonical_json, render_proof_pdf, verify_proof_pdf
from core.recipients import proof_recipients

LEGAL_BASIS = {
    "gdpr-eu": "GDPR Art. 17",
    "uk-gdpr": "UK GDPR Art. 17",
    "ccpa": "Cal. Civ. Code §1798.105",
    "ru-152fz": "152-FZ Art. 21",
    "cn-pipl": "PIPL Art. 47",
}


def proof_content(session: Session, request: DataSubjectRequest) -> dict[str, Any]:
    """Return the proof of a finished request as plain data, free of personal data."""
    completed_at = request.completed_at or utcnow()
    position, head_hash = chain_head(session)
    systems = []
    for run in request.runs:
        systems.append(
            {
                "system": run.system,
                "label": run.label,
                "connector": run.connector,
                "connector_version": run.connector_version,
                "outcome": str(run.status),
                "steps": run.plan["steps"],
                "rows_affected": run.rows_affected or {},
                "verification": {
                    "clean": not any((run.remaining or {}).values()),
                    "remaining": run.remaining or {},
                    # Records kept by hand cannot be re-scanned: the owner's confirmation,
                    # in the message, stands in for it.
                    **({"method": "confirmation"} if run.connector == "manual" else {}),
                },
                "message": run.message,
                # Art. 19: the recipients told of the erasure, and whether they answered yet.
                **({"recipients": told} if (told := proof_recipients(session, run)) else {}),
            }
        )
    finished = {RunStatus.COMPLETED, RunStatus.NOT_FOUND, RunStatus.RETAINED}
    completed_on = completed_at.astimezone(received_on(request).tzinfo).date()
    return {
        "format": "lethe-proof/1",
        "controller": current_app.config["CONTROLLER_NAME"],
        "reference": request.reference,
        "subject_hash": request.identity.email_hash,
        "request_type": str(request.request_type),
        "jurisdiction": request.jurisdiction,
        "legal_basis": LEGAL_BASIS.get(request.jurisdiction, request.jurisdiction),
        "received_on": received_on(request).date().isoformat(),
        "due_on": request.due_on.isoformat(),
        "extended_due_on": request.extended_due_on and request.extended_due_on.isoformat(),
        "completed_at": completed_at.isoformat(timespec="seconds"),
        "on_time": completed_on <= request.effective_due_on,
        "approved_by": request.approved_by.email if request.approved_by else None,
        "systems": systems,
        "partial": any(RunStatus(run.status) not in finished for run in request.runs),
        "audit_checkpoint": {"position": position, "hash": head_hash},
        "issued_at": utcnow().replace(microsecond=0).isoformat(),
    }


def issue_proof_for(session: Session, request: DataSubjectRequest) -> Proof:
    """Render, sign and store the proof of ``request``, in the language of the request."""
    key = current_app.extensions["lethe.signing_key"]
    content = proof_content(session, request)
    pdf = render_proof_pdf(
        content, key, verify_url=external_url("portal.index"), language=request.language
    )
    proof = Proof(
        request=request,
        key_id=key.key_id,
        fingerprint=hashlib.sha256(canonical_json(content)).hexdigest()[:16],
        pdf_sha256=hashlib.sha256(pdf).hexdigest(),
        pdf=pdf,
    )
    session.add(proof)
    session.flush()
    record_event(
        session,
        "worker",
        "proof.issued",
        request.reference,
        proof=proof.id,
        key_id=key.key_id,
        pdf_sha256=proof.pdf_sha256,
    )
    return proof


def check_proof(session: Session, pdf: bytes) -> ProofCheck:
    """Verify a proof's signature and, when we issued it, that its bytes are the ones we kept."""
    key = current_app.extensions["lethe.signing_key"]
    check = verify_proof_pdf(pdf, {key.key_id: key.public_key})
    if not check.authentic:
        return check
    digest = hashlib.sha256(pdf).hexdigest()
    known = session.scalars(sa.select(Proof).where(Proof.pdf_sha256 == digest)).first()
    if known is None:
        check.authentic = False
        check.reasons.append(
            "the signed content is genuine, but these bytes are not the PDF "
            "this deployment issued: the document was altered or re-saved"
        )
    else:
        check.reasons.append(f"identical to the proof issued on {known.issued_at:%Y-%m-%d}")
    return check
