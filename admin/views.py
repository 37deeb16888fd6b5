"""Views of the staff side."""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Iterable

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import force_locale
from flask_login import current_user

from admin import bp
from admin.forms import ApproveForm, ConfirmForm, DenyForm, ExtendForm, RequestHoldForm
from admin.holds import hold_choices
from connectors.base import ConfigError, ConnectorError
from core.audit import record_event, timeline_of
from core.clock import can_pause, clock_of, open_pause, pause_clock, resume_clock
from core.decisions import (
    EXTENSION_REASONS,
    GROUNDS,
    Reason,
    can_extend_request,
    decision_note,
    denial_details,
    deny_request,
    extend_request,
    extension_details,
    extension_due_on,
    extension_note,
    grounds_for,
)
from core.extensions import db
from core.holds import (
    active_holds,
    check_retained,
    ground_label,
    hold_reason,
    retention_grounds,
    review_plans,
)
from core.intake import IDENTITY_METHODS
from core.jobs import start_due_erasures
from core.lifecycle import CLOSED
from core.models import DataSubjectRequest, Proof, RequestType, Role, Status, utcnow
from core.notify import notify_subject
from core.operations import (
    DomainError,
    approve_request,
    find_request,
    plan_digest,
    unseal,
)
from core.security import roles_required

log = logging.getLogger(__name__)
STAFF = (Role.DPO, Role.OPERATOR, Role.AUDITOR)


def _get_request(reference: str) -> DataSubjectRequest:
    dsr = find_request(db.session, reference)
    if dsr is None:
        abort(404)
    return dsr


def _english(reasons: Iterable[Reason]) -> list[tuple[str, str]]:
    # The staff side is not translated, whatever language the browser asks for.
    with force_locale("en"):
        return [(reason.code, str(reason.label)) for reason in reasons]


def _show_request(
    dsr: DataSubjectRequest,
    deny_form: DenyForm | None = None,
    extend_form: ExtendForm | None = None,
) -> str:
    """Render the request page; a form that was just refused keeps what the DPO typed."""
    plans, held, problem, form = {}, {}, None, None
    if dsr.status == Status.VERIFIED:
        try:
            plans, held = review_plans(db.session, current_app.extensions["lethe.systems"], dsr)
        except (ConfigError, ConnectorError) as exc:
            problem = str(exc)
        form = ApproveForm(formdata=None, plan_digest=plan_digest(plans))
    dpo = current_user.role in (Role.DPO, Role.ADMIN)
    if not (dpo and dsr.status == Status.VERIFIED):
        deny_form = None
    elif deny_form is None:
        deny_form = DenyForm(formdata=None, prefix="deny")
    if deny_form:
        deny_form.reason.choices = _english(grounds_for(dsr.request_type))
    extendable = can_extend_request(dsr)
    if not (dpo and extendable):
        extend_form = None
    elif extend_form is None:
        extend_form = ExtendForm(formdata=None, prefix="extend")
    if extend_form:
        extend_form.reason.choices = _english(EXTENSION_REASONS)
    decision = extension = None
    if dsr.decided_at:
        decision = {
            "ground": dict(_english(GROUNDS)).get(dsr.decision_reason, dsr.decision_reason),
            "note": decision_note(dsr),
        }
    if dsr.extended_at:
        extension = {
            "reason": dict(_english(EXTENSION_REASONS)).get(
                dsr.extension_reason, dsr.extension_reason
            ),
            "note": extension_note(dsr),
        }
    told = {
        "customer_number": unseal(dsr, dsr.customer_number_sealed),
        "reason": unseal(dsr, dsr.reason_sealed),
        "feedback": unseal(dsr, dsr.feedback_sealed),
    }
    holds = active_holds(db.session, dsr.identity_id)
    hold_form = None
    if dpo and dsr.status not in CLOSED and dsr.request_type == RequestType.ERASURE:
        hold_form = RequestHoldForm(formdata=None, prefix="hold")
        hold_choices(hold_form)
    return render_template(
        "admin/request.html",
        dsr=dsr,
        told=told,
        identity_note=unseal(dsr, dsr.identity_note_sealed),
        identity_method=IDENTITY_METHODS.get(dsr.identity_method or ""),
        clock=clock_of(dsr),
        can_pause=dpo and can_pause(dsr),
        can_resume=dpo and open_pause(dsr) is not None and dsr.status not in CLOSED,
        confirm=ConfirmForm(formdata=None),
        holds=holds,
        hold_form=hold_form,
        hold_reason=hold_reason,
        ground_label=ground_label,
        grounds=retention_grounds(),
        timeline=timeline_of(db.session, dsr.reference),
        held=held,
        plans=plans,
        problem=problem,
        form=form,
        deny_form=deny_form,
        extend_form=extend_form,
        would_be_due=extension_due_on(dsr) if extendable else None,
        decision=decision,
        extension=extension,
    )


@bp.route("/requests/<reference>")
@roles_required(*STAFF)
def request_page(reference: str):
    """Show one request: its clock, its runs and, before approval, every system's plan."""
    return _show_request(_get_request(reference))


@bp.route("/requests/<reference>/approve", methods=["POST"])
@roles_required(Role.DPO)
def approve(reference: str):
    """Approve the request if the plan is still the one the DPO reviewed."""
    dsr = _get_request(reference)
    form = ApproveForm()
    if not form.validate_on_submit() or dsr.status != Status.VERIFIED:
        flash("This request cannot be approved in its current state.")
        return redirect(url_for("admin.request_page", reference=reference))
    erasure = dsr.request_type == RequestType.ERASURE
    if erasure and (form.confirm_reference.data or "").strip().upper() != dsr.reference:
        flash(f"Not approved: type {dsr.reference} to confirm an erasure, which cannot be undone.")
        return redirect(url_for("admin.request_page", reference=reference))
    systems = current_app.extensions["lethe.systems"]
    # Partial approval: a system the DPO keeps out, under an Art. 17(3) ground.
    retained = {
        name: ground
        for name in systems.configs
        if erasure and (ground := request.form.get(f"retain-{name}", ""))
    }
    try:
        check_retained(retained, systems.configs)
        plans, held = review_plans(db.session, systems, dsr)
        if plan_digest(plans) != form.plan_digest.data:
            flash(
                "The data changed since you reviewed the plan. "
                "Review the new plan and approve again."
            )
            return redirect(url_for("admin.request_page", reference=reference))
        approve_request(db.session, dsr, current_user, systems, plans, retained=retained, held=held)
    except (ConfigError, ConnectorError, DomainError) as exc:
        db.session.rollback()
        flash(f"Not approved: {exc}")
        return redirect(url_for("admin.request_page", reference=reference))
    db.session.commit()
    if dsr.request_type.exports:
        # Nothing to wait for: the person's next email is the one with the download link.
        start_due_erasures.delay()
        flash("Approved. The copy is being gathered; the person is emailed a link when ready.")
        return redirect(url_for("admin.request_page", reference=reference))
    try:
        notify_subject(dsr, "approved")
    except (OSError, smtplib.SMTPException):
        log.exception("the approval email could not be sent")
    if dsr.cooling_off_until <= utcnow():
        start_due_erasures.delay()  # no cooling-off: start now rather than at the next tick
    flash(f"Approved. Erasure starts at {dsr.cooling_off_until:%Y-%m-%d %H:%M} UTC.")
    return redirect(url_for("admin.request_page", reference=reference))


def _tell_subject(dsr: DataSubjectRequest, template: str, details: dict[str, object]) -> bool:
    """Email the person after the commit; a failure is logged and reported, never undone."""
    try:
        notify_subject(dsr, template, **details)
    except (OSError, smtplib.SMTPException):
        log.exception("the %s email could not be sent", template)
        flash(
            "The email to the person could not be sent. The law requires that they are told: "
            "check the mail settings and tell them another way."
        )
        return False
    return True


@bp.route("/requests/<reference>/deny", methods=["POST"])
@roles_required(Role.DPO)
def deny(reference: str):
    """Refuse the request on a legal ground, once the DPO has typed its reference."""
    dsr = _get_request(reference)
    form = DenyForm(prefix="deny")
    form.reason.choices = _english(grounds_for(dsr.request_type))
    if not form.validate_on_submit():
        flash("Not refused: correct the form below.")
        return _show_request(dsr, deny_form=form)
    if form.confirm_reference.data.strip().upper() != dsr.reference:
        form.confirm_reference.errors.append(f"This is not {dsr.reference}.")
        flash(f"Not refused: the reference you typed does not match {dsr.reference}.")
        return _show_request(dsr, deny_form=form)
    try:
        deny_request(db.session, dsr, current_user, form.reason.data, form.note.data)
    except DomainError as exc:
        db.session.rollback()
        flash(f"Not refused: {exc}.")
        return _show_request(dsr, deny_form=form)
    db.session.commit()
    if _tell_subject(dsr, "denied", denial_details(dsr)):
        flash("Refused. The person has been told why and how to complain.")
    return redirect(url_for("admin.request_page", reference=reference))


@bp.route("/requests/<reference>/extend", methods=["POST"])
@roles_required(Role.DPO)
def extend(reference: str):
    """Extend the request's deadline once, and tell the person why."""
    dsr = _get_request(reference)
    form = ExtendForm(prefix="extend")
    form.reason.choices = _english(EXTENSION_REASONS)
    if not form.validate_on_submit():
        flash("Not extended: correct the form below.")
        return _show_request(dsr, extend_form=form)
    try:
        due = extend_request(db.session, dsr, current_user, form.reason.data, form.note.data)
    except DomainError as exc:
        db.session.rollback()
        flash(f"Not extended: {exc}.")
        return _show_request(dsr, extend_form=form)
    db.session.commit()
    if _tell_subject(dsr, "extended", extension_details(dsr)):
        flash(f"Extended. The new due date is {due.isoformat()}; the person has been told why.")
    return redirect(url_for("admin.request_page", reference=reference))


@bp.route("/proofs/<int:proof_id>.pdf")
@roles_required(*STAFF)
def proof_pdf(proof_id: int):
    """Download a signed proof of deletion."""
    proof = db.session.get(Proof, proof_id) or abort(404)
    record_event(
        db.session,
        f"staff:{current_user.email}",
        "proof.downloaded",
        proof.request.reference,
        proof=proof.id,
    )
    db.session.commit()
    return current_app.response_class(
        proof.pdf,
        mimetype="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="proof-{proof.request.reference}.pdf"'
        },
    )


@bp.route("/requests/<reference>/pause", methods=["POST"])
@roles_required(Role.DPO)
def pause(reference: str):
    """Stop the legal clock while the person is asked to prove who they are."""
    dsr = _get_request(reference)
    if ConfirmForm().validate_on_submit():
        try:
            pause_clock(db.session, dsr, current_user)
        except DomainError as exc:
            db.session.rollback()
            flash(f"Not paused: {exc}.")
        else:
            db.session.commit()
            flash("The clock is paused from today. Resume it when the information arrives.")
    return redirect(url_for("admin.request_page", reference=reference))


@bp.route("/requests/<reference>/resume", methods=["POST"])
@roles_required(Role.DPO)
def resume(reference: str):
    """Restart the legal clock: the due date moves by the paused days."""
    dsr = _get_request(reference)
    if ConfirmForm().validate_on_submit():
        try:
            due = resume_clock(db.session, dsr, current_user)
        except DomainError as exc:
            db.session.rollback()
            flash(f"Not resumed: {exc}.")
        else:
            db.session.commit()
            flash(f"The clock runs again. The request is now due on {due.isoformat()}.")
    return redirect(url_for("admin.request_page", reference=reference))
