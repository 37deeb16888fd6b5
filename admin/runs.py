"""Staff retry the failed systems of a request (one, or all), and pause or resume it."""

from __future__ import annotations

from flask import abort, flash, redirect, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from admin import bp
from admin.forms import ConfirmForm
from core.extensions import db
from core.jobs import export_request, run_system
from core.models import DataSubjectRequest, Role, RunStatus, Status, SystemRun
from core.operations import DomainError, find_request
from core.retries import pause_runs, resume_runs, retry_runs
from core.security import roles_required

#: Who may retry a system: the staff who run requests day to day (admins pass every check).
RETRIERS = (Role.DPO, Role.OPERATOR)


def _get_request(reference: str) -> DataSubjectRequest:
    dsr = find_request(db.session, reference)
    if dsr is None:
        abort(404)
    return dsr


def _retry(dsr: DataSubjectRequest, runs: list[SystemRun]) -> ResponseReturnValue:
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("admin.request_page", reference=dsr.reference))
    try:
        runs = retry_runs(db.session, dsr, runs, f"staff:{current_user.email}")
    except DomainError as exc:
        db.session.rollback()
        flash(f"Not retried: {exc}.")
        return redirect(url_for("admin.request_page", reference=dsr.reference))
    db.session.commit()
    names = ", ".join(run.label for run in runs)
    if dsr.request_type.exports:  # a package gathers every system again
        export_request.delay(dsr.id)
    else:
        for run in runs:
            run_system.delay(run.id)
    flash(f"Retrying: {names}. The request closes again, with a new outcome, when done.")
    return redirect(url_for("admin.request_page", reference=dsr.reference))


@bp.route("/requests/<reference>/systems/<int:run_id>/retry", methods=["POST"])
@roles_required(*RETRIERS)
def retry_run(reference: str, run_id: int):
    """Try one failed system of a request again."""
    dsr = _get_request(reference)
    run = db.session.get(SystemRun, run_id)
    if run is None or run.request_id != dsr.id:
        abort(404)
    return _retry(dsr, [run])


@bp.route("/requests/<reference>/systems/retry-failed", methods=["POST"])
@roles_required(*RETRIERS)
def retry_failed(reference: str):
    """Try every failed system of a request again."""
    dsr = _get_request(reference)
    return _retry(dsr, [run for run in dsr.runs if run.status == RunStatus.FAILED])


@bp.route("/requests/<reference>/systems/pause", methods=["POST"])
@roles_required(Role.DPO)
def pause_runs_view(reference: str):
    """Pause the request: no system starts until it is resumed; running ones finish."""
    dsr = _get_request(reference)
    if ConfirmForm().validate_on_submit():
        try:
            pause_runs(db.session, dsr, f"staff:{current_user.email}")
        except DomainError as exc:
            db.session.rollback()
            flash(f"Not paused: {exc}.")
        else:
            db.session.commit()
            flash("Paused: no system of this request starts until you resume it.")
    return redirect(url_for("admin.request_page", reference=reference))


@bp.route("/requests/<reference>/systems/resume", methods=["POST"])
@roles_required(Role.DPO)
def resume_runs_view(reference: str):
    """Resume a paused request: its planned systems run now."""
    dsr = _get_request(reference)
    if ConfirmForm().validate_on_submit():
        try:
            planned = resume_runs(db.session, dsr, f"staff:{current_user.email}")
        except DomainError as exc:
            db.session.rollback()
            flash(f"Not resumed: {exc}.")
        else:
            db.session.commit()
            if dsr.status == Status.RUNNING and dsr.request_type.exports:
                export_request.delay(dsr.id)
            else:
                for run in planned:
                    run_system.delay(run.id)
            flash("Resumed: the systems of this request run again.")
    return redirect(url_for("admin.request_page", reference=reference))
