"""Proofs of deletion through the API: list them by period, download the signed PDF."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app

from admin.api import api_error, bp, current_key, key_required
from admin.api.requests import ALL_STAFF, proof_of
from admin.api.schemas import ErrorSchema, ProofArgsSchema, ProofPageSchema
from core.audit import record_event
from core.extensions import db
from core.models import Proof, Role

#: Who reads proofs by period on the staff side (the auditor's pages).
REPORT_READERS = (Role.DPO, Role.AUDITOR)


def _start_of(day) -> datetime:
    """Return the first moment of ``day`` in the controller's time zone."""
    return datetime.combine(day, time(0, 0), tzinfo=ZoneInfo(current_app.config["TIMEZONE"]))


@bp.route("/proofs", methods=["GET"])
@key_required(*REPORT_READERS)
@bp.arguments(ProofArgsSchema, location="query")
@bp.response(200, ProofPageSchema)
def list_proofs(args: dict[str, Any]):
    """List proofs of deletion issued in a period (days in the controller's time zone)."""
    first, last = args.get("from_"), args.get("to")
    if first and last and first > last:
        raise api_error(422, "the period ends before it starts", {"to": ["Before from."]})
    query = sa.select(Proof)
    if first:
        query = query.where(Proof.issued_at >= _start_of(first))
    if last:
        query = query.where(Proof.issued_at < _start_of(last + timedelta(days=1)))
    page, per_page = args["page"], args["per_page"]
    found = db.session.scalars(
        query.order_by(Proof.issued_at, Proof.id).limit(per_page + 1).offset((page - 1) * per_page)
    ).all()
    body = {
        "proofs": [proof_of(proof) for proof in found[:per_page]],
        "page": page,
        "per_page": per_page,
        "has_more": len(found) > per_page,
    }
    db.session.commit()
    return body


@bp.route("/proofs/<int:proof_id>.pdf", methods=["GET"])
@key_required(*ALL_STAFF)
@bp.response(200, content_type="application/pdf", description="The signed proof.")
@bp.alt_response(404, schema=ErrorSchema, description="No such proof.")
def get_proof_pdf(proof_id: int):
    """Download a signed proof of deletion; the download is audited."""
    # An id beyond any database's integer is simply not there (SQLite would overflow).
    proof = db.session.get(Proof, proof_id) if proof_id < 2**31 else None
    if proof is None:
        raise api_error(404, f"there is no proof {proof_id}")
    record_event(
        db.session, current_key().actor, "proof.downloaded", proof.request.reference, proof=proof.id
    )
    db.session.commit()
    return current_app.response_class(
        proof.pdf,
        mimetype="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="proof-{proof.request.reference}.pdf"'
        },
    )
