"""Views of the customer portal: each reads, validates, acts through core, then redirects."""

from __future__ import annotations

import hashlib
import logging
import smtplib

from flask import current_app, flash, redirect, render_template, url_for
from flask import request as flask_request
from flask_babel import get_locale
from flask_babel import gettext as _

from core.extensions import db, limiter
from core.links import STATUS_LINK_DAYS, status_token
from core.models import DataSubjectRequest, RequestType, Status
from core.notify import notify_subject, send_verification
from core.operations import (
    DomainError,
    can_cancel,
    cancel_request,
    find_request,
    hash_email,
    submit_request,
    verify_email,
)
from core.tokens import TokenError, nonce_matches, read_token
from portal import bp
from portal.forms import ConfirmForm, RequestForm
from portal.wording import RUN_WORDS, STATE_WORDS

log = logging.getLogger(__name__)
MAIL_ERRORS = (OSError, smtplib.SMTPException)


def _stored(response) -> bool:
    return response.status_code == 302  # only a request that went through counts


def _address_key() -> str:
    return "address:" + hash_email(flask_request.form.get("email", ""))


def _token_key() -> str:
    return "link:" + hashlib.sha256(flask_request.path.encode()).hexdigest()


@bp.route("/", methods=["GET", "POST"])
@limiter.limit("20 per hour", methods=["POST"], deduct_when=_stored)
@limiter.limit("5 per hour", methods=["POST"], key_func=_address_key, deduct_when=_stored)
def index():
    """Ask what the person wants; erasure is confirmed on a page that says what it means."""
    form = RequestForm()
    if not form.validate_on_submit():
        return render_template("portal/index.html", form=form)
    request_type = RequestType(form.request_type.data)
    if request_type == RequestType.ERASURE and form.confirmed.data != "yes":
        return render_template("portal/confirm_erasure.html", form=form)
    request, _created = submit_request(db.session, form.email.data, request_type, str(get_locale()))
    db.session.commit()
    try:
        if request.status == Status.SUBMITTED:
            send_verification(request)
        else:
            notify_subject(request, "already_open")
        db.session.commit()
    except MAIL_ERRORS:
        log.exception("the confirmation email could not be sent")
        db.session.rollback()
        return render_template("portal/mail_down.html"), 503
    return redirect(url_for("portal.submitted"))


@bp.route("/submitted")
def submitted():
    """Ask the person to open their inbox; the same page whether or not we know them."""
    return render_template("portal/submitted.html")


def _request_from_token(purpose: str, token: str, max_age_days: int) -> DataSubjectRequest:
    reference, nonce = read_token(
        current_app.config["SECRET_KEY"], purpose, token, max_age_days * 86400
    )
    request = find_request(db.session, reference)
    if request is None:
        raise TokenError("invalid")
    if purpose == "verify" and not nonce_matches(request.verify_nonce, nonce):
        raise TokenError("used", reference)
    return request


@bp.route("/verify/<token>", methods=["GET", "POST"])
@limiter.limit("30 per hour", methods=["POST"])
def verify(token: str):
    """Confirm the address with one deliberate click, then show the status page."""
    try:
        request = _request_from_token("verify", token, current_app.config["VERIFY_LINK_DAYS"])
    except TokenError as exc:
        return _token_problem(exc)
    if request.status != Status.SUBMITTED:
        return _token_problem(TokenError("used", request.reference))
    form = ConfirmForm()
    if form.validate_on_submit():
        verify_email(db.session, request)
        db.session.commit()
        return redirect(url_for("portal.status", token=status_token(request)))
    return render_template("portal/verify.html", form=form, dsr=request)


def _status_request(token: str) -> DataSubjectRequest:
    return _request_from_token("status", token, STATUS_LINK_DAYS)


@bp.route("/status/<token>")
def status(token: str):
    """Show where the request is: reference, state, dates and progress per system."""
    try:
        request = _status_request(token)
    except TokenError as exc:
        return _token_problem(exc)
    return render_template(
        "portal/status.html",
        dsr=request,
        token=token,
        form=ConfirmForm(),
        state=STATE_WORDS[Status(request.status)],
        run_words=RUN_WORDS,
        cancellable=can_cancel(request),
    )


@bp.route("/status/<token>/resend", methods=["POST"])
@limiter.limit("3 per hour", key_func=_token_key)
def resend(token: str):
    """Send the confirmation link of this request again; never a second request."""
    try:
        request = _status_request(token)
    except TokenError as exc:
        return _token_problem(exc)
    if ConfirmForm().validate_on_submit() and request.status == Status.SUBMITTED:
        try:
            send_verification(request)
        except MAIL_ERRORS:
            log.exception("the confirmation email could not be sent again")
            return render_template("portal/mail_down.html"), 503
        db.session.commit()
        flash(_("We sent the confirmation link again. It may take a few minutes to arrive."))
    return redirect(url_for("portal.status", token=token))


@bp.route("/status/<token>/cancel", methods=["POST"])
def cancel(token: str):
    """Stop the request while nothing has been erased yet."""
    try:
        request = _status_request(token)
    except TokenError as exc:
        return _token_problem(exc)
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("portal.status", token=token))
    try:
        cancel_request(db.session, request)
    except DomainError:
        db.session.rollback()
        flash(_("This request can no longer be cancelled: erasure has started."))
        return redirect(url_for("portal.status", token=token))
    db.session.commit()
    try:
        notify_subject(request, "cancelled")
    except MAIL_ERRORS:
        log.exception("the cancellation email could not be sent")
    flash(_("Your request is cancelled. Nothing was erased."))
    return redirect(url_for("portal.status", token=token))


@bp.app_errorhandler(429)
def too_many(error):
    """Ask the person to slow down, in their language, with the time to wait."""
    return render_template("portal/rate_limited.html"), 429


def _token_problem(error: TokenError):
    code = 410 if error.reason in {"expired", "used"} else 400
    return render_template("portal/link_problem.html", reason=error.reason), code
