"""Requests through the API: submit from another channel, list, read, approve, deny, extend.

Each action calls the same domain function as the staff page, with the key as the actor;
the view commits once, then tells the person as the page does.
"""

from __future__ import annotations

import json
import logging
import smtplib
from typing import Any

from flask import current_app, url_for

from admin.api import api_error, bp, current_key, key_required
from admin.api.schemas import (
    ApproveSchema,
    DecidedSchema,
    DenySchema,
    ErrorSchema,
    ExtendSchema,
    ListArgsSchema,
    RequestPageSchema,
    RequestSchema,
    SubmitSchema,
    SubmittedSchema,
)
from connectors.base import ConfigError, ConnectorError
from core.clock import clock_of, today
from core.decisions import denial_details, deny_request, extend_request, extension_details
from core.extensions import db
from core.holds import check_retained, review_plans
from core.intake import Intake, record_request
from core.jobs import start_due_erasures
from core.lifecycle import TransitionError
from core.models import Channel, DataSubjectRequest, RequestType, Role, Status, utcnow
from core.notify import notify_subject, send_verification
from core.operations import DomainError, approve_request, find_request, plan_digest
from core.queue import QueueFilter, queue_query

log = logging.getLogger(__name__)
ALL_STAFF = tuple(Role)
PREPARERS = (Role.DPO, Role.OPERATOR)
DECIDERS = (Role.DPO,)
MAIL_ERRORS = (OSError, smtplib.SMTPException)


def _get_request(reference: str) -> DataSubjectRequest:
    dsr = find_request(db.session, reference.strip().upper())
    if dsr is None:
        raise api_error(404, f"there is no request {reference}")
    return dsr


def summary_of(dsr: DataSubjectRequest) -> dict[str, Any]:
    """Return what a list shows of a request."""
    clock = clock_of(dsr)
    return {
        "reference": dsr.reference,
        "type": str(dsr.request_type),
        "state": str(dsr.status),
        "channel": str(dsr.channel),
        "jurisdiction": dsr.jurisdiction,
        "received_at": dsr.received_at,
        "due_on": clock.due,
        "overdue": clock.overdue,
    }


def _plan(dsr: DataSubjectRequest) -> dict[str, Any]:
    try:
        plans, held = review_plans(db.session, current_app.extensions["lethe.systems"], dsr)
    except (ConfigError, ConnectorError) as exc:
        return {"digest": "", "systems": {}, "held": {}, "problem": str(exc)}
    return {
        "digest": plan_digest(plans),
        "systems": {
            name: json.loads(json.dumps(plan.to_dict(), default=str))
            for name, plan in plans.items()
        },
        "held": {name: hold.ground for name, hold in held.items()},
        "problem": None,
    }


def detail_of(dsr: DataSubjectRequest, with_plan: bool = False) -> dict[str, Any]:
    """Return a request as the staff page shows it, less the person's address and words."""
    clock = clock_of(dsr)
    return {
        **summary_of(dsr),
        "language": dsr.language,
        "subject_country": dsr.subject_country,
        "identity_method": dsr.identity_method,
        "verified_at": dsr.verified_at,
        "approved_at": dsr.approved_at,
        "cooling_off_until": dsr.cooling_off_until,
        "completed_at": dsr.completed_at,
        "decision_reason": dsr.decision_reason,
        "extension_reason": dsr.extension_reason,
        "runs_paused": dsr.runs_paused,
        "clock": {
            "received_on": clock.received,
            "due_on": clock.due,
            "first_due_on": dsr.due_on,
            "extended": clock.extended,
            "days_left": clock.days_left,
            "overdue": clock.overdue,
            "paused_since": clock.paused_since,
            "paused_days": clock.paused_days,
        },
        "runs": [
            {
                "system": run.system,
                "label": run.label,
                "connector": run.connector,
                "state": str(run.status),
                "attempts": run.attempts,
                "rows_before": run.rows_before,
                "rows_affected": run.rows_affected,
                "remaining": run.remaining,
                "message": run.message,
                "retained_ground": run.retained_ground,
                "started_at": run.started_at,
                "finished_at": run.finished_at,
            }
            for run in dsr.runs
        ],
        "proofs": [proof_of(proof) for proof in dsr.proofs],
        "plan": _plan(dsr) if with_plan and dsr.status == Status.VERIFIED else None,
    }


def proof_of(proof) -> dict[str, Any]:
    """Return what the API shows of a proof."""
    return {
        "id": proof.id,
        "reference": proof.request.reference,
        "issued_at": proof.issued_at,
        "key_id": proof.key_id,
        "fingerprint": proof.fingerprint,
        "pdf_sha256": proof.pdf_sha256,
        "url": url_for("api.get_proof_pdf", proof_id=proof.id),
    }


def _tell(dsr: DataSubjectRequest, template: str, details: dict[str, object]) -> bool:
    try:
        notify_subject(dsr, template, **details)
    except MAIL_ERRORS:
        log.exception("the %s email could not be sent", template)
        return False
    return True


@bp.route("/requests", methods=["POST"])
@key_required(*PREPARERS)
@bp.arguments(SubmitSchema)
@bp.response(201, SubmittedSchema, description="Recorded as a new request.")
@bp.alt_response(200, schema=SubmittedSchema, description="An open request of theirs was joined.")
@bp.alt_response(409, schema=ErrorSchema, description="Not recorded: the rules refuse it.")
def submit_request(data: dict[str, Any]):
    """Record a request that reached you by email, phone, letter or in person."""
    key = current_key()
    intake = Intake(
        email=data["email"],
        request_type=RequestType(data["type"]),
        channel=Channel(data["channel"]),
        received_on=data["received_on"],
        language=data["language"],
        country=data["country"],
        customer_number=data["customer_number"],
        reason=data["reason"],
        identity_method=data["identity_method"],
        identity_note=data["identity_note"],
    )
    try:
        dsr, created = record_request(db.session, key.owner, intake, actor=key.actor)
    except DomainError as exc:
        db.session.rollback()
        raise api_error(409, f"not recorded: {exc}") from None
    db.session.commit()
    sent = None
    if created and dsr.status == Status.SUBMITTED:
        try:
            send_verification(dsr)
            db.session.commit()
            sent = True
        except MAIL_ERRORS:
            log.exception("the confirmation email could not be sent")
            sent = False
    body = {"created": created, "email_sent": sent, "request": detail_of(dsr)}
    return body, 201 if created else 200


@bp.route("/requests", methods=["GET"])
@key_required(*ALL_STAFF)
@bp.arguments(ListArgsSchema, location="query")
@bp.response(200, RequestPageSchema)
def list_requests(args: dict[str, Any]):
    """List requests by the date that binds them, nearest first, filtered as on the queue."""
    wanted = QueueFilter(
        state=args.get("state"),
        request_type=args.get("type"),
        due_within=args.get("due_within"),
        overdue=args["overdue"],
        open_only=args["open"],
        search=(args.get("q") or "").strip(),
    )
    page, per_page = args["page"], args["per_page"]
    query = queue_query(wanted, today()).limit(per_page + 1).offset((page - 1) * per_page)
    found = db.session.scalars(query).all()
    db.session.commit()  # the key's last use
    return {
        "requests": [summary_of(dsr) for dsr in found[:per_page]],
        "page": page,
        "per_page": per_page,
        "has_more": len(found) > per_page,
    }


@bp.route("/requests/<reference>", methods=["GET"])
@key_required(*ALL_STAFF)
@bp.response(200, RequestSchema)
@bp.alt_response(404, schema=ErrorSchema, description="No such request.")
def get_request(reference: str):
    """Read a request: clock, runs per system, proofs and, before a decision, the plan."""
    dsr = _get_request(reference)
    body = detail_of(dsr, with_plan=True)
    db.session.commit()
    return body


@bp.route("/requests/<reference>/approve", methods=["POST"])
@key_required(*DECIDERS)
@bp.arguments(ApproveSchema)
@bp.response(200, DecidedSchema)
@bp.alt_response(404, schema=ErrorSchema, description="No such request.")
@bp.alt_response(409, schema=ErrorSchema, description="Not approved: state or plan changed.")
def approve(data: dict[str, Any], reference: str):
    """Approve along the plan whose digest GET /requests/{reference} gave."""
    key, dsr = current_key(), _get_request(reference)
    if dsr.status != Status.VERIFIED:
        raise api_error(409, f"request {dsr.reference} is {dsr.status}: it cannot be approved")
    erasure = dsr.request_type == RequestType.ERASURE
    if erasure and data["confirm_reference"].strip().upper() != dsr.reference:
        raise api_error(
            422,
            "an erasure cannot be undone: confirm it with the request's reference",
            {"confirm_reference": [f"This is not {dsr.reference}."]},
        )
    if data["retain"] and not erasure:
        raise api_error(422, "only an erasure keeps systems out", {"retain": ["Not allowed."]})
    systems = current_app.extensions["lethe.systems"]
    try:
        check_retained(data["retain"], systems.configs)
        plans, held = review_plans(db.session, systems, dsr)
        if plan_digest(plans) != data["plan_digest"]:
            raise api_error(409, "the data changed since the plan was read: read it again")
        approve_request(
            db.session,
            dsr,
            key.owner,
            systems,
            plans,
            retained=data["retain"],
            held=held,
            actor=key.actor,
        )
    except (ConfigError, ConnectorError, DomainError, TransitionError) as exc:
        db.session.rollback()
        raise api_error(409, f"not approved: {exc}") from None
    except Exception:
        db.session.rollback()
        raise
    db.session.commit()
    sent = None
    if dsr.request_type.exports:
        start_due_erasures.delay()  # the person's next email carries the download link
    else:
        sent = _tell(dsr, "approved", {})
        if dsr.cooling_off_until <= utcnow():
            start_due_erasures.delay()
    db.session.refresh(dsr)
    return {"request": detail_of(dsr), "email_sent": sent}


@bp.route("/requests/<reference>/deny", methods=["POST"])
@key_required(*DECIDERS)
@bp.arguments(DenySchema)
@bp.response(200, DecidedSchema)
@bp.alt_response(404, schema=ErrorSchema, description="No such request.")
@bp.alt_response(409, schema=ErrorSchema, description="Not refused: the rules refuse it.")
def deny(data: dict[str, Any], reference: str):
    """Refuse a verified request on a legal ground; the person is told why and how to complain."""
    key, dsr = current_key(), _get_request(reference)
    if data["confirm_reference"].strip().upper() != dsr.reference:
        raise api_error(
            422,
            "a refusal cannot be undone: confirm it with the request's reference",
            {"confirm_reference": [f"This is not {dsr.reference}."]},
        )
    try:
        deny_request(db.session, dsr, key.owner, data["reason"], data["note"], actor=key.actor)
    except (DomainError, TransitionError) as exc:
        db.session.rollback()
        raise api_error(409, f"not refused: {exc}") from None
    db.session.commit()
    sent = _tell(dsr, "denied", denial_details(dsr))
    return {"request": detail_of(dsr), "email_sent": sent}


@bp.route("/requests/<reference>/extend", methods=["POST"])
@key_required(*DECIDERS)
@bp.arguments(ExtendSchema)
@bp.response(200, DecidedSchema)
@bp.alt_response(404, schema=ErrorSchema, description="No such request.")
@bp.alt_response(409, schema=ErrorSchema, description="Not extended: the rules refuse it.")
def extend(data: dict[str, Any], reference: str):
    """Extend the deadline once (GDPR Art. 12(3)); the person is told the reason."""
    key, dsr = current_key(), _get_request(reference)
    try:
        extend_request(db.session, dsr, key.owner, data["reason"], data["note"], actor=key.actor)
    except DomainError as exc:
        db.session.rollback()
        raise api_error(409, f"not extended: {exc}") from None
    db.session.commit()
    sent = _tell(dsr, "extended", extension_details(dsr))
    return {"request": detail_of(dsr), "email_sent": sent}
