"""Staff sign-in and sign-out, session limits, and each staff member's own account."""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime, timedelta

import segno
from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from admin import bp
from admin.account_forms import CodeForm, LoginForm, PasswordChangeForm
from core.extensions import db, limiter
from core.models import Role, StaffUser, utcnow
from core.security import credentials_stamp, roles_required, session_end_reason
from core.staff import (
    SignIn,
    StaffError,
    change_password,
    check_code_step,
    check_password_step,
    confirm_totp,
    disable_totp,
    is_locked,
    pending_totp_secret,
    provisioning_uri,
)

#: Every staff role; admins pass every check anyway.
STAFF = (Role.DPO, Role.OPERATOR, Role.AUDITOR)
#: The same words whatever went wrong, so the page never tells which addresses have an
#: account, which are locked or deactivated.
REFUSED = (
    "Wrong email or password. After too many failed attempts an account is locked for a "
    "while; an administrator can unlock it."
)
_SESSION_KEYS = ("staff_signed_in_at", "staff_seen_at", "staff_stamp")
_PENDING_KEYS = ("staff_pending_id", "staff_pending_at")
#: How long the code step waits after the right password.
_PENDING_FOR = timedelta(minutes=5)
#: What an admin who must turn two-factor on can still reach.
_ENROLMENT_PAGES = {"admin.two_factor", "admin.logout", "admin.login", "admin.login_code"}


def _forget(keys: tuple[str, ...]) -> None:
    for key in keys:
        session.pop(key, None)


def _when(key: str) -> datetime | None:
    value = session.get(key)
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int | float) else None


def _start_session(user: StaffUser, now: datetime) -> None:
    _forget(_PENDING_KEYS + _SESSION_KEYS)
    login_user(user)
    session["staff_signed_in_at"] = session["staff_seen_at"] = now.timestamp()
    session["staff_stamp"] = credentials_stamp(user)


def _ended(reason: str) -> str:
    config = current_app.config
    return {
        "idle": f"Your session ended after {config['STAFF_IDLE_MINUTES']} minutes without "
        "activity. Sign in again.",
        "expired": f"Your session ended: sessions last at most {config['STAFF_SESSION_HOURS']} "
        "hours. Sign in again.",
        "changed": "Your session ended because the account's password or two-factor "
        "authentication changed. Sign in again.",
    }[reason]


@bp.before_request
def guard_staff_session():
    """End idle, old or outdated staff sessions; send admins to enrol when 2FA is required."""
    if not current_user.is_authenticated:
        return None
    now = utcnow()
    reason = session_end_reason(_when("staff_signed_in_at"), _when("staff_seen_at"), now)
    if reason is None and session.get("staff_stamp") != credentials_stamp(current_user):
        reason = "changed"
    if reason:
        logout_user()
        _forget(_SESSION_KEYS)
        flash(_ended(reason))
        return redirect(url_for("admin.login"))
    session["staff_seen_at"] = now.timestamp()
    if (
        current_app.config["TOTP_REQUIRED_FOR_ADMIN"]
        and current_user.role == Role.ADMIN
        and current_user.totp_enabled_at is None
        and request.endpoint not in _ENROLMENT_PAGES
    ):
        flash("Administrators must use two-factor authentication: set it up to continue.")
        return redirect(url_for("admin.two_factor"))
    return None


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit("10 per minute", methods=["POST"])
def login():
    """Sign a member of staff in: the password, then a code if two-factor is on."""
    form = LoginForm()
    if form.validate_on_submit():
        now = utcnow()
        outcome, user = check_password_step(db.session, form.email.data, form.password.data, now)
        db.session.commit()  # failures and locks are kept whatever the outcome
        if outcome is SignIn.NEED_CODE:
            session["staff_pending_id"] = user.id
            session["staff_pending_at"] = now.timestamp()
            return redirect(url_for("admin.login_code"))
        if outcome is SignIn.OK:
            _start_session(user, now)
            return redirect(url_for("admin.queue"))
        flash(REFUSED)
    return render_template("admin/accounts/login.html", form=form)


@bp.route("/login/code", methods=["GET", "POST"])
@limiter.limit("10 per minute", methods=["POST"])
def login_code():
    """Second sign-in step: the code from the staff member's authenticator app."""
    now = utcnow()
    started = _when("staff_pending_at")
    user = db.session.get(StaffUser, session.get("staff_pending_id") or 0)
    if user is None or started is None or now - started > _PENDING_FOR:
        _forget(_PENDING_KEYS)
        flash("Sign in with your email and password first.")
        return redirect(url_for("admin.login"))
    form = CodeForm()
    if form.validate_on_submit():
        outcome = check_code_step(db.session, user, form.code.data, now)
        db.session.commit()
        if outcome is SignIn.OK:
            _start_session(user, now)
            return redirect(url_for("admin.queue"))
        if is_locked(user, now) or not user.active:
            _forget(_PENDING_KEYS)
            flash(REFUSED)
            return redirect(url_for("admin.login"))
        form.code.errors.append("This code is not right or was already used.")
        flash("Not signed in: enter the code your app shows now.")
    return render_template("admin/accounts/login_code.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout():
    """Sign out."""
    logout_user()
    _forget(_SESSION_KEYS + _PENDING_KEYS)
    return redirect(url_for("admin.login"))


def _account_page(
    password_form: PasswordChangeForm | None = None, off_form: CodeForm | None = None
) -> str:
    return render_template(
        "admin/accounts/account.html",
        password_form=password_form or PasswordChangeForm(formdata=None),
        off_form=off_form or CodeForm(formdata=None, prefix="off"),
        totp_required=current_user.role == Role.ADMIN
        and current_app.config["TOTP_REQUIRED_FOR_ADMIN"],
    )


@bp.route("/account")
@roles_required(*STAFF)
def account():
    """Show one's own account: password and two-factor authentication."""
    return _account_page()


@bp.route("/account/password", methods=["POST"])
@roles_required(*STAFF)
@limiter.limit("10 per minute")
def change_own_password():
    """Change one's own password; every other session of the account ends."""
    form = PasswordChangeForm()
    if form.validate_on_submit():
        try:
            change_password(db.session, current_user, form.current.data, form.new.data)
        except StaffError as exc:
            db.session.rollback()
            form.current.errors.append(f"Not changed: {exc}.")
        else:
            db.session.commit()
            session["staff_stamp"] = credentials_stamp(current_user)
            flash("Your password is changed. Any other session of your account has ended.")
            return redirect(url_for("admin.account"))
    flash("Password not changed: correct the form below.")
    return _account_page(password_form=form)


def _qr_code(uri: str) -> str:
    """Return ``uri`` as a QR code in an SVG data: URL (the CSP allows data: images)."""
    svg = io.BytesIO()
    segno.make_qr(uri, error="m").save(
        svg, kind="svg", scale=5, border=4, xmldecl=False, title="Two-factor QR code"
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.getvalue()).decode("ascii")


@bp.route("/account/two-factor", methods=["GET", "POST"])
@roles_required(*STAFF)
def two_factor():
    """Turn two-factor on: scan the QR code, then confirm with a code from the app."""
    if current_user.totp_enabled_at is not None:
        flash("Two-factor authentication is already on.")
        return redirect(url_for("admin.account"))
    secret = pending_totp_secret(db.session, current_user)
    db.session.commit()  # the same secret is shown until it is confirmed
    form = CodeForm()
    if form.validate_on_submit():
        if confirm_totp(db.session, current_user, form.code.data, utcnow()):
            db.session.commit()
            session["staff_stamp"] = credentials_stamp(current_user)
            flash("Two-factor authentication is on: signing in now asks for a code.")
            return redirect(url_for("admin.account"))
        form.code.errors.append("This code is not right. Check the app's clock and try again.")
    if form.errors:
        flash("Two-factor authentication is not on yet: correct the code below.")
    return render_template(
        "admin/accounts/two_factor.html",
        form=form,
        qr_code=_qr_code(provisioning_uri(current_user, secret)),
        secret=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
    )


@bp.route("/account/two-factor/off", methods=["POST"])
@roles_required(*STAFF)
@limiter.limit("10 per minute")
def two_factor_off():
    """Turn two-factor off, with a current code from the app."""
    form = CodeForm(prefix="off")
    if form.validate_on_submit():
        try:
            done = disable_totp(db.session, current_user, form.code.data, utcnow())
        except StaffError as exc:
            flash(f"Two-factor authentication stays on: {exc}.")
            return redirect(url_for("admin.account"))
        if done:
            db.session.commit()
            session["staff_stamp"] = credentials_stamp(current_user)
            flash("Two-factor authentication is off.")
            return redirect(url_for("admin.account"))
        form.code.errors.append("This code is not right.")
    flash("Two-factor authentication stays on: correct the code below.")
    return _account_page(off_form=form)
