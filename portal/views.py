"""Views of the customer portal: each reads, validates, acts through core, then redirects."""

from __future__ import annotations

from flask import current_app, redirect, render_template, url_for
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l

from core.extensions import db
from core.links import STATUS_LINK_DAYS, status_token, verify_link
from core.mail import send_mail
from core.models import DataSubjectRequest, RequestType, RunStatus, Status
from core.operations import find_request, submit_request, verify_email
from core.tokens import TokenError, nonce_matches, read_token
from portal import bp
from portal.forms import ConfirmForm, RequestForm

#: Each state as the person reads it.
STATE_WORDS = {
    Status.SUBMITTED: _l("Waiting for you to confirm your email address"),
    Status.VERIFIED: _l("Received — our privacy team is reviewing it"),
    Status.APPROVED: _l("Approved — erasure starts when the cooling-off period ends"),
    Status.RUNNING: _l("In progress — your data is being erased"),
    Status.COMPLETED: _l("Done — your data has been erased"),
    Status.PARTIALLY_COMPLETED: _l("Partly done — some systems still need attention"),
    Status.FAILED: _l("Delayed — we hit a problem and are working on it"),
    Status.EXPIRED: _l("Expired — the email address was never confirmed"),
    Status.DENIED: _l("Refused — see the email we sent you for the reasons"),
    Status.CANCELLED: _l("Cancelled"),
}

#: Each system's progress as the person reads it.
RUN_WORDS = {
    RunStatus.PLANNED: _l("Waiting to start"),
    RunStatus.RUNNING: _l("In progress"),
    RunStatus.COMPLETED: _l("Erased"),
    RunStatus.NOT_FOUND: _l("Nothing held about you"),
    RunStatus.RETAINED: _l("Kept where the law requires it"),
    RunStatus.ACTION_REQUIRED: _l("Waiting for a person to act"),
    RunStatus.FAILED: _l("Delayed — we are on it"),
}


@bp.route("/", methods=["GET", "POST"])
def index():
    """Show the request form; on a valid submission record it and send the proof link."""
    form = RequestForm()
    if form.validate_on_submit():
        request = submit_request(
            db.session, form.email.data, RequestType(form.request_type.data), str(get_locale())
        )
        db.session.commit()
        send_mail(
            form.email.data,
            "verify",
            dsr=request,
            link=verify_link(request),
            days=current_app.config["VERIFY_LINK_DAYS"],
        )
        return redirect(url_for("portal.submitted"))
    return render_template("portal/index.html", form=form)


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


@bp.route("/status/<token>")
def status(token: str):
    """Show where the request is: reference, state, dates and progress per system."""
    try:
        request = _request_from_token("status", token, STATUS_LINK_DAYS)
    except TokenError as exc:
        return _token_problem(exc)
    return render_template(
        "portal/status.html",
        dsr=request,
        state=STATE_WORDS[Status(request.status)],
        run_words=RUN_WORDS,
    )


def _token_problem(error: TokenError):
    return render_template("portal/link_problem.html", reason=error.reason), 410 if (
        error.reason in {"expired", "used"}
    ) else 400
