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

from core.audit import (
    chain_head,
    current_chain_cache,
    record_event,
    timeline_of,
    verify_chain_cached,
)
from core.keyring import current_signing_key, trusted_keys
from core.links import external_url
from core.models import AuditEvent, DataSubjectRequest, Proof, RunStatus, utcnow
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
        # Who carried the erasure out: the worker, and any staff member, key or callback
        # that retried, confirmed or stopped a system.
        "carried_out_by": sorted(
            {
                event.actor
                for event in timeline_of(session, request.reference)
                if event.action.startswith("run.")
            }
        ),
        "systems": systems,
        "partial": any(RunStatus(run.status) not in finished for run in request.runs),
        "audit_checkpoint": {"position": position, "hash": head_hash},
        "issued_at": utcnow().replace(microsecond=0).isoformat(),
    }


def issue_proof_for(session: Session, request: DataSubjectRequest) -> Proof:
    """Render, sign and store the proof of ``request``, in the language of the request."""
    key = current_signing_key()
    content = proof_content(session, request)
    verify_url = external_url("portal.proof_check", reference=request.reference)
    pdf = render_proof_pdf(content, key, verify_url=verify_url, language=request.language)
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
    """Verify a proof: signed by one of our keys, page and bytes as issued, audit chain intact.

    The signature is checked against every key that ever signed our proofs, so proofs
    signed before a key rotation still verify.
    """
    check = verify_proof_pdf(pdf, trusted_keys())
    if not check.signed:
        return check  # the content cannot be trusted: nothing more to compare it with
    digest = hashlib.sha256(pdf).hexdigest()
    known = session.scalars(sa.select(Proof).where(Proof.pdf_sha256 == digest)).first()
    if known is None:
        check.fail(
            "not_issued",
            "the signed content is genuine, but these bytes are not the PDF "
            "this deployment issued: the document was altered or re-saved",
        )
    _check_checkpoint(session, check)
    if check.authentic:
        check.reasons.append(f"identical to the proof issued on {known.issued_at:%Y-%m-%d}")
    return check


def _check_checkpoint(session: Session, check: ProofCheck) -> None:
    """Check that the audit chain still holds the event the proof records, unaltered."""
    checkpoint = check.content.get("audit_checkpoint") or {}
    position, recorded = checkpoint.get("position"), checkpoint.get("hash")
    event = session.scalars(sa.select(AuditEvent).where(AuditEvent.position == position)).first()
    if event is None:
        check.fail(
            "checkpoint_missing",
            f"audit chain position {position} recorded in the proof is not in our audit log",
        )
        return
    if event.hash != recorded:
        check.fail(
            "checkpoint_differs",
            f"audit chain position {position} has hash {event.hash}, "
            f"not the {recorded} recorded in the proof",
        )
        return
    chain = verify_chain_cached(session, current_chain_cache(), through=position)
    if not chain.ok:
        check.fail(
            "chain_broken",
            f"the audit chain up to position {position} does not verify: {chain.problem}",
        )
