"""The signed summary of a finished bulk erasure: counts, and every request with its proof.

It names people only by their requests' references (each with its own proof of deletion,
whose fingerprint it gives), never by address.  It is signed like a proof — canonical JSON
embedded as ``proof.json`` with its Ed25519 signature — so the same checks apply to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from core.audit import chain_head
from core.keyring import current_signing_key, trusted_keys
from core.models import DataSubjectRequest, ErasureBatch, Proof, SystemRun, utcnow
from core.proofs import ProofCheck, canonical_json, render_signed_document, verify_proof_pdf
from core.signing import SigningKey

FORMAT = "lethe-batch/1"
#: References printed on the page; all of them are always in the signed content.
PAGE_LIST_MAX = 2000
#: What the batch's own summary keeps besides the outcome (the rest was working state).
_KEPT = ("report", "system", "segment", "label", "params", "skipped_open", "skipped_again")


def summary_content(
    session: Session, batch: ErasureBatch, outcomes: Mapping[str, int]
) -> dict[str, Any]:
    """Return the batch summary as plain data, free of personal data."""
    requests: list[dict[str, Any]] = []
    listed = (
        sa.select(DataSubjectRequest.reference, DataSubjectRequest.status, Proof.fingerprint)
        .outerjoin(Proof, Proof.request_id == DataSubjectRequest.id)
        .where(DataSubjectRequest.batch_id == batch.id)
        .order_by(DataSubjectRequest.reference, Proof.id)
        .execution_options(yield_per=1000)
    )
    for reference, status, proof in session.execute(listed):
        if requests and requests[-1]["reference"] == reference:
            requests[-1]["proof"] = proof  # the newest proof of a request counts
            continue
        requests.append({"reference": reference, "outcome": str(status), "proof": proof})
    systems: dict[str, dict[str, Any]] = {}
    runs = (
        sa.select(SystemRun.system, SystemRun.label, SystemRun.status, SystemRun.rows_affected)
        .join(DataSubjectRequest)
        .where(DataSubjectRequest.batch_id == batch.id)
        .execution_options(yield_per=1000)
    )
    for system, label, status, affected in session.execute(runs):
        entry = systems.setdefault(system, {"label": label, "outcomes": {}, "rows_affected": {}})
        entry["outcomes"][str(status)] = entry["outcomes"].get(str(status), 0) + 1
        for table, rows in (affected or {}).items():
            entry["rows_affected"][table] = entry["rows_affected"].get(table, 0) + rows
    position, head_hash = chain_head(session)
    return {
        "format": FORMAT,
        "controller": current_app.config["CONTROLLER_NAME"],
        "reference": batch.reference,
        "name": batch.name,
        "source": batch.source,
        "segment": (
            {k: batch.summary[k] for k in ("system", "segment", "label", "params")}
            if batch.source == "segment"
            else None
        ),
        "created_at": batch.created_at.isoformat(timespec="seconds"),
        "approved_at": batch.approved_at and batch.approved_at.isoformat(timespec="seconds"),
        "approved_by": batch.approved_by.email if batch.approved_by else None,
        "status": str(batch.status),
        "people": len(requests),
        "outcomes": dict(outcomes),
        "skipped": {
            "invalid_lines": batch.summary.get("report", {}).get("invalid_count", 0),
            "duplicates_in_file": batch.summary.get("report", {}).get("duplicates", 0),
            "already_open_request": batch.summary.get("skipped_open", 0),
            "listed_twice": batch.summary.get("skipped_again", 0),
        },
        "systems": systems,
        "requests": requests,
        "audit_checkpoint": {"position": position, "hash": head_hash},
        "issued_at": utcnow().replace(microsecond=0).isoformat(),
    }


def render_summary_pdf(content: Mapping[str, Any], key: SigningKey) -> bytes:
    """Return the signed PDF of a batch summary (English: it is for staff and auditors)."""
    return render_signed_document(
        "pdf/batch.html", content, key, "this batch summary", listed_max=PAGE_LIST_MAX
    )


def issue_summary(session: Session, batch: ErasureBatch, outcomes: Mapping[str, int]) -> str:
    """Render, sign and keep the batch's summary; return its fingerprint."""
    key = current_signing_key()
    content = summary_content(session, batch, outcomes)
    canonical = canonical_json(content)
    pdf = render_summary_pdf(content, key)
    digest = hashlib.sha256(canonical).hexdigest()[:16]
    batch.summary_pdf = pdf
    batch.summary = {
        **{k: batch.summary[k] for k in _KEPT if k in batch.summary},
        "started": True,
        "outcomes": dict(outcomes),
        "people": content["people"],
        "fingerprint": digest,
        "key_id": key.key_id,
        "pdf_sha256": hashlib.sha256(pdf).hexdigest(),
        "issued_at": content["issued_at"],
    }
    return digest


def check_summary(session: Session, pdf: bytes) -> ProofCheck:
    """Verify a batch summary's signature and that its bytes are the summary we keep."""
    check = verify_proof_pdf(pdf, trusted_keys())
    if not check.authentic:
        return check
    if check.content.get("format") != FORMAT:
        check.authentic = False
        check.reasons.append("this is not a batch summary; check a proof with `lethe proof verify`")
        return check
    reference = str(check.content.get("reference"))
    batch = session.scalars(
        sa.select(ErasureBatch).where(ErasureBatch.reference == reference)
    ).first()
    if batch is None or batch.summary_pdf != pdf:
        check.authentic = False
        check.reasons.append(
            "the signed content is genuine, but these bytes are not the current summary of "
            f"{reference} this deployment keeps: the document was altered, re-saved or replaced"
        )
    else:
        issued = batch.summary.get("issued_at", "")
        check.reasons.append(f"identical to the summary of {reference} issued {issued}")
    return check
