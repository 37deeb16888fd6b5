"""Legal holds: keep a person's data, a system's, or a person's in one system, until released."""

from __future__ import annotations

import sqlalchemy as sa
from flask import current_app, flash, redirect, render_template, url_for
from flask_login import current_user

from admin import bp
from admin.forms import ConfirmForm, HoldForm, RequestHoldForm
from core.extensions import db
from core.holds import (
    ground_label,
    hold_reason,
    hold_scope,
    place_hold,
    release_hold,
    retention_grounds,
)
from core.models import LegalHold, Role
from core.operations import DomainError, find_request, subject_email
from core.security import roles_required


def hold_choices(form: HoldForm) -> None:
    """Offer the configured systems and the Art. 17(3) grounds."""
    systems = current_app.extensions["lethe.systems"]
    form.system.choices = [("", "every system")] + [(s.name, s.label) for s in systems]
    form.ground.choices = [(code, ground_label(code)) for code in retention_grounds()]


def _show(form: HoldForm | None = None):
    holds = db.session.scalars(
        sa.select(LegalHold).order_by(LegalHold.released_at.is_not(None), LegalHold.id.desc())
    ).all()
    if form is None and current_user.role in (Role.DPO, Role.ADMIN):
        form = HoldForm(formdata=None)
    if form is not None:
        hold_choices(form)
    return render_template(
        "admin/holds.html",
        holds=holds,
        form=form,
        confirm=ConfirmForm(formdata=None),
        hold_reason=hold_reason,
        hold_scope=hold_scope,
        ground_label=ground_label,
    )


@bp.route("/holds", methods=["GET", "POST"])
@roles_required(Role.DPO, Role.OPERATOR, Role.AUDITOR)
def holds():
    """List the legal holds; the DPO places a new one."""
    form = HoldForm()
    hold_choices(form)
    if not form.is_submitted():
        return _show()
    if current_user.role not in (Role.DPO, Role.ADMIN):
        return _show(), 403
    if not form.validate():
        flash("No hold placed: correct the form below.")
        return _show(form), 400
    try:
        place_hold(
            db.session,
            current_user,
            ground=form.ground.data,
            reason=form.reason.data,
            email=form.email.data,
            system=form.system.data,
            known_systems=current_app.extensions["lethe.systems"].configs,
        )
    except DomainError as exc:
        db.session.rollback()
        flash(f"No hold placed: {exc}.")
        return _show(form), 400
    db.session.commit()
    flash("Hold placed. Erasure keeps what it covers until you release it.")
    return redirect(url_for("admin.holds"))


@bp.route("/requests/<reference>/hold", methods=["POST"])
@roles_required(Role.DPO)
def hold_request_subject(reference: str):
    """Place a hold on the person of a request (in every system or one)."""
    dsr = find_request(db.session, reference)
    if dsr is None:
        return redirect(url_for("admin.queue"))
    form = RequestHoldForm(prefix="hold")
    hold_choices(form)
    if not form.validate_on_submit():
        flash("No hold placed: choose a ground and say why the data must be kept.")
        return redirect(url_for("admin.request_page", reference=reference))
    try:
        place_hold(
            db.session,
            current_user,
            ground=form.ground.data,
            reason=form.reason.data,
            email=subject_email(dsr),
            system=form.system.data,
            known_systems=current_app.extensions["lethe.systems"].configs,
        )
    except DomainError as exc:
        db.session.rollback()
        flash(f"No hold placed: {exc}.")
    else:
        db.session.commit()
        flash("Hold placed on this person. The plan below now keeps what it covers.")
    return redirect(url_for("admin.request_page", reference=reference))


@bp.route("/holds/<int:hold_id>/release", methods=["POST"])
@roles_required(Role.DPO)
def release(hold_id: int):
    """Release a hold: erasure may reach what it covered from now on."""
    hold = db.session.get(LegalHold, hold_id)
    if hold is None or not ConfirmForm().validate_on_submit():
        return redirect(url_for("admin.holds"))
    try:
        release_hold(db.session, hold, current_user)
    except DomainError as exc:
        db.session.rollback()
        flash(f"Not released: {exc}.")
    else:
        db.session.commit()
        flash(f"Hold #{hold.id} released.")
    return redirect(url_for("admin.holds"))
