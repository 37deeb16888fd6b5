"""Views of the staff side."""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user, login_user, logout_user

from admin import bp
from admin.forms import ApproveForm, LoginForm
from connectors.base import ConfigError, ConnectorError
from core.audit import record_event
from core.extensions import db, limiter
from core.jobs import start_due_erasures
from core.lifecycle import CLOSED
from core.models import DataSubjectRequest, Proof, Role, StaffUser, Status, utcnow
from core.notify import notify_subject
from core.operations import (
    DomainError,
    approve_request,
    find_request,
    plan_digest,
    preview_plans,
)
from core.security import check_password, roles_required

log = logging.getLogger(__name__)
STAFF = (Role.DPO, Role.OPERATOR, Role.AUDITOR)


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit("10 per minute", methods=["POST"])
def login():
    """Sign a member of staff in."""
    form = LoginForm()
    if form.validate_on_submit():
        user = db.session.scalars(
            sa.select(StaffUser).where(StaffUser.email == form.email.data.strip().lower())
        ).first()
        if user and user.active and check_password(user.password_hash, form.password.data):
            login_user(user)
            record_event(db.session, f"staff:{user.email}", "staff.login")
            db.session.commit()
            return redirect(url_for("admin.queue"))
        flash("Wrong email or password.")
    return render_template("admin/login.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout():
    """Sign out."""
    logout_user()
    return redirect(url_for("admin.login"))


@bp.route("/")
@roles_required(*STAFF)
def queue():
    """List open and recent requests, the nearest legal deadline first."""
    due = sa.func.coalesce(DataSubjectRequest.extended_due_on, DataSubjectRequest.due_on)
    requests = db.session.scalars(
        sa.select(DataSubjectRequest).order_by(due, DataSubjectRequest.received_at).limit(500)
    ).all()
    today = datetime.now(ZoneInfo(current_app.config["TIMEZONE"])).date()
    return render_template("admin/queue.html", requests=requests, closed=CLOSED, today=today)


def _get_request(reference: str) -> DataSubjectRequest:
    dsr = find_request(db.session, reference)
    if dsr is None:
        abort(404)
    return dsr


@bp.route("/requests/<reference>")
@roles_required(*STAFF)
def request_page(reference: str):
    """Show one request: its clock, its runs and, before approval, every system's plan."""
    dsr = _get_request(reference)
    plans, problem, form = {}, None, None
    if dsr.status == Status.VERIFIED:
        try:
            plans = preview_plans(current_app.extensions["lethe.systems"], dsr)
        except (ConfigError, ConnectorError) as exc:
            problem = str(exc)
        form = ApproveForm(plan_digest=plan_digest(plans))
    return render_template("admin/request.html", dsr=dsr, plans=plans, problem=problem, form=form)


@bp.route("/requests/<reference>/approve", methods=["POST"])
@roles_required(Role.DPO)
def approve(reference: str):
    """Approve erasure if the plan is still the one the DPO reviewed."""
    dsr = _get_request(reference)
    form = ApproveForm()
    if not form.validate_on_submit() or dsr.status != Status.VERIFIED:
        flash("This request cannot be approved in its current state.")
        return redirect(url_for("admin.request_page", reference=reference))
    systems = current_app.extensions["lethe.systems"]
    try:
        plans = preview_plans(systems, dsr)
        if plan_digest(plans) != form.plan_digest.data:
            flash(
                "The data changed since you reviewed the plan. "
                "Review the new plan and approve again."
            )
            return redirect(url_for("admin.request_page", reference=reference))
        approve_request(db.session, dsr, current_user, systems, plans)
    except (ConfigError, ConnectorError, DomainError) as exc:
        db.session.rollback()
        flash(f"Not approved: {exc}")
        return redirect(url_for("admin.request_page", reference=reference))
    db.session.commit()
    try:
        notify_subject(dsr, "approved")
    except (OSError, smtplib.SMTPException):
        log.exception("the approval email could not be sent")
    if dsr.cooling_off_until <= utcnow():
        start_due_erasures.delay()  # no cooling-off: start now rather than at the next tick
    flash(f"Approved. Erasure starts at {dsr.cooling_off_until:%Y-%m-%d %H:%M} UTC.")
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
