"""Bulk erasure on the staff side: prepare a batch, review it, approve it once, follow it."""

from __future__ import annotations

import io
from typing import Any

import sqlalchemy as sa
from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.exceptions import RequestEntityTooLarge

from admin import bp
from admin.bulk_forms import ApproveBatchForm, BatchActionForm, CsvBatchForm, SegmentBatchForm
from connectors.base import ConfigError, ConnectorError
from core.audit import record_event
from core.bulk import (
    BatchStatus,
    approve_batch,
    available_segments,
    create_csv_batch,
    create_segment_batch,
    discard_batch,
    find_batch,
    review_batch,
)
from core.bulk_csv import CsvError, CsvReport, read_addresses
from core.bulk_run import progress, resume_batch
from core.extensions import csrf, db
from core.jobs import start_batch
from core.models import DataSubjectRequest, ErasureBatch, Role
from core.operations import DomainError
from core.security import roles_required

STAFF = (Role.DPO, Role.OPERATOR, Role.AUDITOR)
PREPARERS = (Role.DPO, Role.OPERATOR)
#: Room for the form's other fields around the file, in a multipart body.
_FORM_OVERHEAD = 64 * 1024
#: Requests listed on a batch's page; the summary lists them all.
_LISTED = 200


def _systems():
    return current_app.extensions["lethe.systems"]


def _get_batch(reference: str) -> ErasureBatch:
    return find_batch(db.session, reference) or abort(404)


def _segment_choices() -> dict[str, tuple[str, Any]]:
    """Return the configured segments by form value ``system/segment``."""
    found = available_segments(_systems())
    return {f"{system}/{info.name}": (system, info) for system, info in found}


def _new_page(
    csv_form: CsvBatchForm | None = None,
    segment_form: SegmentBatchForm | None = None,
    *,
    error: str | None = None,
    report: CsvReport | None = None,
    status: int = 200,
):
    segments = _segment_choices()
    segment_form = segment_form or SegmentBatchForm(formdata=None, prefix="segment")
    segment_form.segment.choices = [
        (value, f"{info.label} ({system})") for value, (system, info) in segments.items()
    ]
    config = current_app.config
    return (
        render_template(
            "admin/bulk/new.html",
            csv_form=csv_form or CsvBatchForm(formdata=None, prefix="csv"),
            segment_form=segment_form,
            segments=segments,
            error=error,
            report=report,
            max_mb=config["BULK_MAX_BYTES"] / (1024 * 1024),
            max_rows=config["BULK_MAX_ROWS"],
        ),
        status,
    )


@bp.route("/bulk")
@roles_required(*STAFF)
def bulk_list():
    """List bulk erasures, the newest first."""
    batches = db.session.scalars(
        sa.select(ErasureBatch).order_by(ErasureBatch.created_at.desc()).limit(200)
    ).all()
    return render_template("admin/bulk/list.html", batches=batches)


@bp.route("/bulk/new")
@roles_required(*PREPARERS)
def bulk_new():
    """Offer the two ways of preparing a batch: a CSV file or a segment."""
    return _new_page()


def _in_memory(*_args: object, **_kwargs: object) -> io.BytesIO:
    # Werkzeug spools uploads over 500 KB to a temporary file; a list of addresses is
    # never written to disk, so it is kept in memory (the size is capped just before).
    return io.BytesIO()


@bp.route("/bulk/new/csv", methods=["POST"])
@roles_required(*PREPARERS)
def bulk_upload():
    """Read an uploaded list; create the batch, or show what is wrong and store nothing."""
    limit = current_app.config["BULK_MAX_BYTES"]
    # Exempt from the app-wide CSRF check (which would read the body under the app's
    # smaller limit); the form checks its own token once the limit below applies.
    request.max_content_length = limit + _FORM_OVERHEAD
    request._get_file_stream = _in_memory
    try:
        form = CsvBatchForm(prefix="csv")
        valid = form.validate_on_submit()
    except RequestEntityTooLarge:
        return _new_page(
            error=f"The file is larger than the limit of {limit} bytes (LETHE_BULK_MAX_BYTES). "
            "Split it into smaller files.",
            status=413,
        )
    if not valid:
        if form.csrf_token.errors:
            return _new_page(error="The form had expired. Choose the file again.", status=400)
        return _new_page(csv_form=form, error="Not uploaded: correct the form below.", status=400)
    try:
        report = read_addresses(
            form.file.data.read(),
            max_bytes=limit,
            max_rows=current_app.config["BULK_MAX_ROWS"],
        )
    except CsvError as exc:
        return _new_page(csv_form=form, error=str(exc), status=400)
    if report.invalid_count and not form.skip_invalid.data:
        # The batch is not created until the DPO has seen which lines would be left out.
        return _new_page(csv_form=form, report=report)
    try:
        batch = create_csv_batch(db.session, current_user, form.name.data, report)
    except DomainError as exc:
        db.session.rollback()
        return _new_page(csv_form=form, error=f"Not created: {exc}.", report=report, status=400)
    db.session.commit()
    flash(f"Batch {batch.reference} prepared: {batch.total} people. Review it below.")
    return redirect(url_for("admin.bulk_batch", reference=batch.reference))


csrf.exempt(bulk_upload)


@bp.route("/bulk/new/segment", methods=["POST"])
@roles_required(*PREPARERS)
def bulk_segment():
    """Create a batch of the people a system lists in one of its segments."""
    segments = _segment_choices()
    form = SegmentBatchForm(prefix="segment")
    form.segment.choices = [(value, value) for value in segments]
    if not form.validate_on_submit():
        return _new_page(segment_form=form, error="Not created: correct the form.", status=400)
    system, info = segments[form.segment.data]
    params = {}
    if info.parameter == "before":
        if form.before.data is None:
            form.before.errors = ["Enter the date, e.g. 2025-01-01."]
            return _new_page(segment_form=form, error="Not created: give the date.", status=400)
        params["before"] = form.before.data
    try:
        batch = create_segment_batch(
            db.session, _systems(), current_user, form.name.data, system, info.name, params
        )
    except (ConfigError, ConnectorError, DomainError) as exc:
        db.session.rollback()
        return _new_page(segment_form=form, error=f"Not created: {exc}.", status=400)
    db.session.commit()
    flash(f"Batch {batch.reference} prepared: {batch.total} people. Review it below.")
    return redirect(url_for("admin.bulk_batch", reference=batch.reference))


def _show_batch(
    batch: ErasureBatch, approve_form: ApproveBatchForm | None = None, status: int = 200
):
    review = problem = None
    if batch.status == BatchStatus.DRAFT:
        try:
            review = review_batch(db.session, _systems(), batch)
        except (ConfigError, ConnectorError, DomainError) as exc:
            problem = str(exc)
        if approve_form is None:
            approve_form = ApproveBatchForm(formdata=None)
        approve_form.digest.data = review.digest if review else ""
    requests = db.session.execute(
        sa.select(DataSubjectRequest.reference, DataSubjectRequest.status)
        .where(DataSubjectRequest.batch_id == batch.id)
        .order_by(DataSubjectRequest.reference)
        .limit(_LISTED)
    ).all()
    dpo = current_user.role in (Role.DPO, Role.ADMIN)
    return (
        render_template(
            "admin/bulk/batch.html",
            batch=batch,
            review=review,
            problem=problem,
            approve_form=approve_form if dpo else None,
            action_form=BatchActionForm(),
            progress=progress(db.session, batch),
            requests=requests,
            listed=_LISTED,
            can_prepare=current_user.role in (Role.DPO, Role.OPERATOR, Role.ADMIN),
            dpo=dpo,
        ),
        status,
    )


@bp.route("/bulk/<reference>")
@roles_required(*STAFF)
def bulk_batch(reference: str):
    """Show a batch: its count, report and sample plan, then its progress and summary."""
    return _show_batch(_get_batch(reference))


@bp.route("/bulk/<reference>/approve", methods=["POST"])
@roles_required(Role.DPO)
def bulk_approve(reference: str):
    """Approve the batch once, as reviewed, and start it."""
    batch = _get_batch(reference)
    form = ApproveBatchForm()
    if not form.validate_on_submit():
        flash("Not approved: correct the form below.")
        return _show_batch(batch, form, 400)
    if form.confirm_reference.data.strip().upper() != batch.reference:
        form.confirm_reference.errors.append(f"This is not {batch.reference}.")
        flash(f"Not approved: the reference you typed does not match {batch.reference}.")
        return _show_batch(batch, form, 400)
    try:
        approve_batch(
            db.session,
            _systems(),
            batch,
            current_user,
            form.confirm_reference.data,
            form.digest.data,
        )
    except (ConfigError, ConnectorError, DomainError) as exc:
        db.session.rollback()
        flash(f"Not approved: {exc}.")
        return _show_batch(batch, form, 400)
    db.session.commit()
    start_batch.delay(batch.id)
    flash(
        f"Approved: {batch.total} people are being erased, each with a proof of deletion. "
        "The batch summary appears here when all are done."
    )
    return redirect(url_for("admin.bulk_batch", reference=batch.reference))


@bp.route("/bulk/<reference>/discard", methods=["POST"])
@roles_required(*PREPARERS)
def bulk_discard(reference: str):
    """Drop a draft batch and forget the addresses only it brought in."""
    batch = _get_batch(reference)
    if not BatchActionForm().validate_on_submit():
        abort(400)
    try:
        forgotten = discard_batch(db.session, batch, current_user)
    except DomainError as exc:
        db.session.rollback()
        flash(f"Not discarded: {exc}.")
    else:
        db.session.commit()
        flash(f"Discarded {batch.reference}; {forgotten} addresses it alone held are forgotten.")
    return redirect(url_for("admin.bulk_batch", reference=batch.reference))


@bp.route("/bulk/<reference>/resume", methods=["POST"])
@roles_required(Role.DPO)
def bulk_resume(reference: str):
    """Start a batch again where its start stopped, once the problem is fixed."""
    batch = _get_batch(reference)
    if not BatchActionForm().validate_on_submit():
        abort(400)
    try:
        resume_batch(db.session, batch, current_user)
    except DomainError as exc:
        db.session.rollback()
        flash(f"Not resumed: {exc}.")
        return redirect(url_for("admin.bulk_batch", reference=batch.reference))
    db.session.commit()
    start_batch.delay(batch.id)
    flash("Resumed.")
    return redirect(url_for("admin.bulk_batch", reference=batch.reference))


@bp.route("/bulk/<reference>/summary.pdf")
@roles_required(*STAFF)
def bulk_summary(reference: str):
    """Download the signed summary of a finished batch."""
    batch = _get_batch(reference)
    if batch.summary_pdf is None:
        abort(404)
    record_event(
        db.session, f"staff:{current_user.email}", "batch.summary_downloaded", batch.reference
    )
    db.session.commit()
    return current_app.response_class(
        batch.summary_pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="summary-{batch.reference}.pdf"'},
    )
