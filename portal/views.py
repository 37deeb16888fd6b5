"""Views of the customer portal: each reads, validates, acts through core, then redirects."""

from __future__ import annotations

import hashlib
import logging

from flask import (
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    stream_with_context,
    url_for,
)
from flask import request as flask_request
from flask_babel import get_locale
from flask_babel import gettext as _

from core.decisions import find_extension_reason, find_ground, supervisory_authority
from core.exports import check_renewable, current_package, download_problem, open_download
from core.extensions import db, limiter
from core.jobs import renew_export, start_due_erasures
from core.links import STATUS_LINK_DAYS, download_token, status_token
from core.mail_queue import mail_held_back
from core.models import DataSubjectRequest, RequestType, Status
from core.notify import notify_subject, send_verification
from core.operations import (
    DomainError,
    accept_objection,
    can_cancel,
    can_give_feedback,
    cancel_request,
    find_request,
    hash_email,
    record_feedback,
    submit_request,
    verify_email,
)
from core.tokens import TokenError, nonce_matches, read_token
from portal import bp
from portal.forms import ConfirmForm, FeedbackForm, RequestForm
from portal.limits import bad_links
from portal.wording import TYPE_WORDS, run_words, state_words

log = logging.getLogger(__name__)


def _mail_delayed() -> str:
    """Return the note shown when the email of this page waits in the mail queue."""
    return _(
        "We could not send the email just yet. It will go out by itself within a few "
        "minutes: there is no need to send the form again."
    )


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
    request, _created = submit_request(
        db.session,
        form.email.data,
        request_type,
        str(get_locale()),
        customer_number=form.customer_number.data,
        reason=form.reason.data,
        reason_code=form.reason_code.data or None,
    )
    if request.status == Status.SUBMITTED:
        send_verification(request)
    else:
        notify_subject(request, "already_open")
    db.session.commit()  # the request and its email in one transaction: all or nothing
    if mail_held_back(db.session):
        flash(_mail_delayed())
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
@bad_links
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
        if request.request_type == RequestType.OBJECTION:
            accept_objection(db.session, request, current_app.extensions["lethe.systems"])
        db.session.commit()
        if request.request_type == RequestType.OBJECTION:
            start_due_erasures.delay()
        return redirect(url_for("portal.status", token=status_token(request)))
    return render_template("portal/verify.html", form=form, dsr=request)


def _status_request(token: str) -> DataSubjectRequest:
    return _request_from_token("status", token, STATUS_LINK_DAYS)


@bp.route("/status/<token>")
@bad_links
def status(token: str):
    """Show where the request is: reference, state, dates and progress per system."""
    try:
        request = _status_request(token)
    except TokenError as exc:
        return _token_problem(exc)
    return _status_page(request, token)


def _status_page(request: DataSubjectRequest, token: str, feedback: FeedbackForm | None = None):
    package = current_package(request)
    return render_template(
        "portal/status.html",
        dsr=request,
        token=token,
        form=ConfirmForm(),
        feedback_form=feedback or FeedbackForm(),
        feedback_open=can_give_feedback(request),
        type_words=TYPE_WORDS[request.request_type],
        state=state_words(request),
        run_words=run_words(request.request_type),
        cancellable=can_cancel(request),
        package=package,
        download_url=url_for("portal.download", token=download_token(package)) if package else None,
        renewable=_renewable(request),
        refusal=find_ground(request.decision_reason) if request.status == Status.DENIED else None,
        extension=find_extension_reason(request.extension_reason),
        authority=supervisory_authority(),
    )


def _renewable(request: DataSubjectRequest) -> bool:
    try:
        check_renewable(request)
    except DomainError:
        return False
    return True


@bp.route("/status/<token>/feedback", methods=["POST"])
@limiter.limit("10 per hour", key_func=_token_key)
def feedback(token: str):
    """Take the person's optional feedback once their request is closed."""
    try:
        request = _status_request(token)
    except TokenError as exc:
        return _token_problem(exc)
    form = FeedbackForm()
    if not form.validate_on_submit():
        return _status_page(request, token, form), 400
    try:
        record_feedback(db.session, request, int(form.score.data), form.comment.data)
    except DomainError:
        db.session.rollback()
        return redirect(url_for("portal.status", token=token))
    db.session.commit()
    flash(_("Thank you for telling us."))
    return redirect(url_for("portal.status", token=token))


@bp.route("/export/<token>")
@bad_links
@limiter.limit("30 per hour", key_func=_token_key)
def download(token: str):
    """Send the export package, decrypted as it streams; count the download."""
    try:
        reference, package_id = read_token(
            current_app.config["SECRET_KEY"],
            "export",
            token,
            current_app.config["EXPORT_LINK_DAYS"] * 86400,
        )
    except TokenError as exc:
        return _download_problem(exc.reference, "expired" if exc.reason == "expired" else "invalid")
    request = find_request(db.session, reference)
    package = (
        next((p for p in request.exports if str(p.id) == package_id), None) if request else None
    )
    if request is None or package is None:
        return _download_problem(None, "invalid")
    if problem := download_problem(package):
        return _download_problem(request, problem)
    chunks = open_download(db.session, package)
    db.session.commit()
    response = Response(stream_with_context(chunks), mimetype="application/zip")
    response.headers["Content-Disposition"] = f'attachment; filename="{reference}-my-data.zip"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _download_problem(request: DataSubjectRequest | str | None, reason: str):
    if isinstance(request, str):
        request = find_request(db.session, request)
    token = status_token(request) if isinstance(request, DataSubjectRequest) else None
    renewable = isinstance(request, DataSubjectRequest) and _renewable(request)
    code = 410 if reason in {"expired", "used"} else 400
    return render_template(
        "portal/download_problem.html", reason=reason, status_token=token, renewable=renewable
    ), code


@bp.route("/status/<token>/renew-export", methods=["POST"])
@limiter.limit("3 per day", key_func=_token_key)
def renew(token: str):
    """Build a new export package when the old one expired or was used up."""
    try:
        request = _status_request(token)
    except TokenError as exc:
        return _token_problem(exc)
    if ConfirmForm().validate_on_submit() and _renewable(request):
        renew_export.delay(request.id)
        flash(_("We are preparing a new copy of your data and will email you a new link."))
    return redirect(url_for("portal.status", token=token))


@bp.route("/status/<token>/resend", methods=["POST"])
@limiter.limit("3 per hour", key_func=_token_key)
def resend(token: str):
    """Send the confirmation link of this request again; never a second request."""
    try:
        request = _status_request(token)
    except TokenError as exc:
        return _token_problem(exc)
    if ConfirmForm().validate_on_submit() and request.status == Status.SUBMITTED:
        send_verification(request)
        db.session.commit()
        if mail_held_back(db.session):
            flash(_mail_delayed())
        else:
            flash(_("We sent the confirmation link again. It may take a few minutes to arrive."))
    return redirect(url_for("portal.status", token=token))


@bp.route("/status/<token>/cancel", methods=["POST"])
@bad_links
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
    notify_subject(request, "cancelled")
    db.session.commit()
    flash(_("Your request is cancelled. Nothing was erased."))
    return redirect(url_for("portal.status", token=token))


@bp.app_errorhandler(429)
def too_many(error):
    """Ask the person to slow down, in their language, with the time to wait."""
    return render_template("portal/rate_limited.html"), 429


def _token_problem(error: TokenError):
    code = 410 if error.reason in {"expired", "used"} else 400
    return render_template("portal/link_problem.html", reason=error.reason), code
