"""The users page: admins create staff accounts, change roles, deactivate, unlock."""

from __future__ import annotations

import sqlalchemy as sa
from flask import flash, make_response, redirect, render_template, url_for
from flask_login import current_user

from admin import bp
from admin.account_forms import ActiveForm, ConfirmForm, CreateUserForm, RoleForm
from core.extensions import db
from core.models import Role, StaffUser, utcnow
from core.security import roles_required
from core.staff import (
    StaffError,
    change_role,
    create_staff,
    get_staff,
    reset_totp,
    set_active,
    unlock_staff,
)


def _actor() -> str:
    return f"staff:{current_user.email}"


def _users_page(form: CreateUserForm | None = None) -> str:
    staff = db.session.scalars(sa.select(StaffUser).order_by(StaffUser.email)).all()
    return render_template(
        "admin/accounts/users.html",
        staff=staff,
        now=utcnow(),
        form=form or CreateUserForm(formdata=None),
        roles=[role.value for role in Role],
        button=ConfirmForm(formdata=None),
    )


@bp.route("/users")
@roles_required(Role.ADMIN)
def users():
    """List the staff accounts, with what an admin can do to each."""
    return _users_page()


@bp.route("/users/new", methods=["POST"])
@roles_required(Role.ADMIN)
def create_user():
    """Create a staff account and show its generated password once."""
    form = CreateUserForm()
    if form.validate_on_submit():
        try:
            user, generated = create_staff(
                db.session,
                _actor(),
                form.email.data,
                Role(form.role.data),
                form.password.data or None,
            )
        except StaffError as exc:
            db.session.rollback()
            form.email.errors.append(f"Not created: {exc}.")
        else:
            db.session.commit()
            response = make_response(
                render_template("admin/accounts/user_created.html", user=user, password=generated)
            )
            response.headers["Cache-Control"] = "no-store"  # the password is on this page
            return response
    flash("No account created: correct the form below.")
    return _users_page(form)


def _change(user_id: int, form, action, done: str):
    """Validate ``form``, apply ``action`` to the account, commit and go back to the list."""
    if not form.validate_on_submit():
        flash("Nothing changed: the form was incomplete. Try again.")
        return redirect(url_for("admin.users"))
    try:
        user = get_staff(db.session, user_id)
        action(user)
    except StaffError as exc:
        db.session.rollback()
        flash(f"Nothing changed: {exc}.")
        return redirect(url_for("admin.users"))
    db.session.commit()
    flash(done.format(email=user.email))
    return redirect(url_for("admin.users"))


@bp.route("/users/<int:user_id>/role", methods=["POST"])
@roles_required(Role.ADMIN)
def user_role(user_id: int):
    """Give a staff member another role (the last active admin keeps theirs)."""
    form = RoleForm()
    return _change(
        user_id,
        form,
        lambda user: change_role(db.session, _actor(), user, Role(form.role.data)),
        "{email} now has the role " + str(form.role.data) + ".",
    )


@bp.route("/users/<int:user_id>/active", methods=["POST"])
@roles_required(Role.ADMIN)
def user_active(user_id: int):
    """Deactivate or reactivate an account (the last active admin stays active)."""
    form = ActiveForm()
    active = form.active.data == "1"
    return _change(
        user_id,
        form,
        lambda user: set_active(db.session, _actor(), user, active),
        "{email} is " + ("active again." if active else "deactivated and cannot sign in."),
    )


@bp.route("/users/<int:user_id>/unlock", methods=["POST"])
@roles_required(Role.ADMIN)
def user_unlock(user_id: int):
    """Lift the lock that repeated sign-in failures put on an account."""
    return _change(
        user_id,
        ConfirmForm(),
        lambda user: unlock_staff(db.session, _actor(), user),
        "{email} is unlocked.",
    )


@bp.route("/users/<int:user_id>/reset-two-factor", methods=["POST"])
@roles_required(Role.ADMIN)
def user_reset_two_factor(user_id: int):
    """Remove an account's two-factor secret (a lost phone); its sessions end."""
    return _change(
        user_id,
        ConfirmForm(),
        lambda user: reset_totp(db.session, _actor(), user),
        "{email} has two-factor authentication off and must set it up again.",
    )
