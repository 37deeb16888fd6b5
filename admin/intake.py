"""Requests from other channels: staff record what a person asked by phone, letter or email."""

from __future__ import annotations

import logging
import smtplib

from flask import flash, redirect, render_template, url_for
from flask_login import current_user

from admin import bp
from admin.forms import IntakeForm
from core.clock import today
from core.extensions import db
from core.intake import Intake, record_request
from core.models import Channel, RequestType, Role, Status
from core.notify import send_verification
from core.operations import DomainError
from core.security import roles_required

log = logging.getLogger(__name__)


@bp.route("/requests/new", methods=["GET", "POST"])
@roles_required(Role.DPO, Role.OPERATOR)
def new_request():
    """Record a request on behalf of a person who phoned, wrote or came in."""
    form = IntakeForm()
    if not form.is_submitted():
        form.received_on.data = today()
    if not form.validate_on_submit():
        if form.is_submitted():
            flash("Not recorded: correct the form below.")
        return render_template("admin/new_request.html", form=form), 400 if form.errors else 200
    intake = Intake(
        email=form.email.data,
        request_type=RequestType(form.request_type.data),
        channel=Channel(form.channel.data),
        received_on=form.received_on.data,
        language=form.language.data,
        country=form.country.data,
        customer_number=form.customer_number.data,
        reason=form.reason.data,
        identity_method=form.identity_method.data or None,
        identity_note=form.identity_note.data,
    )
    try:
        dsr, created = record_request(db.session, current_user, intake)
    except DomainError as exc:
        db.session.rollback()
        flash(f"Not recorded: {exc}.")
        return render_template("admin/new_request.html", form=form), 400
    db.session.commit()
    if not created:
        flash(
            f"This person already has an open {dsr.request_type} request: {dsr.reference}. "
            "Nothing new was recorded."
        )
    elif dsr.status == Status.SUBMITTED:
        try:
            send_verification(dsr)
            db.session.commit()
        except (OSError, smtplib.SMTPException):
            log.exception("the confirmation email could not be sent")
            flash("Recorded, but the confirmation email could not be sent: check the mail.")
        else:
            flash(f"Recorded as {dsr.reference}. The person was emailed a link to confirm.")
    else:
        flash(f"Recorded as {dsr.reference}, identity checked. It is ready for review.")
    return redirect(url_for("admin.request_page", reference=dsr.reference))
