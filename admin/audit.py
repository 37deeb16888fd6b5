"""The auditor's side: finished requests by period, their proofs, the audit log, the act.

Read only: every page is a GET, and the only thing written is the audit event that says
who downloaded what.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import replace

from flask import (
    abort,
    current_app,
    redirect,
    render_template,
    request,
    send_file,
    stream_with_context,
    url_for,
)
from flask_login import current_user

from admin import bp
from admin.dashboard import REPORT_READERS
from core.audit import chain_head, record_event
from core.audit_reports import (
    HASH_RECIPE,
    OUTCOMES,
    SPOOL_BYTES,
    EventFilter,
    PeriodError,
    RequestFilter,
    chain_status,
    count_events,
    events_csv,
    events_json,
    events_page,
    finished_requests,
    parse_period,
    proofs_of,
    write_proofs_zip,
)
from core.clock import today as local_today
from core.deadlines import RULES
from core.destruction_act import NothingDestroyed, act_content, act_csv, render_act_pdf
from core.extensions import db
from core.keyring import current_signing_key
from core.metrics import Period
from core.models import RequestType, utcnow
from core.operations import find_request
from core.security import roles_required

PER_PAGE = 50


def _actor() -> str:
    return f"staff:{current_user.email}"


def _page_number(args: Mapping[str, str]) -> int:
    raw = args.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < int(raw) <= 100_000 else 1


def _period(required: bool = True) -> tuple[Period | None, str | None]:
    """Return the period of the query's dates, or None and what is wrong with them."""
    try:
        return parse_period(request.args, local_today(), required=required), None
    except PeriodError as exc:
        return None, str(exc)


def _back_to(endpoint: str):
    """Send a download whose dates are wrong to its page, which explains what is wrong."""
    return redirect(url_for(endpoint, **request.args.to_dict()))


def _period_args(period: Period) -> dict[str, str]:
    return {"from": period.first.isoformat(), "to": period.last.isoformat()}


@bp.route("/audit/")
@roles_required(*REPORT_READERS)
def audit_requests():
    """List the requests that finished in a period, with their proofs, as the filters ask."""
    wanted = RequestFilter.from_args(request.args)
    period, error = _period()
    total, rows, proofs = 0, [], {}
    page = _page_number(request.args)
    if period:
        total, rows = finished_requests(db.session, period, wanted, page, PER_PAGE)
        proofs = proofs_of(db.session, [row.id for row in rows])
    pages = max(1, -(-total // PER_PAGE))
    query = {**(_period_args(period) if period else {}), **wanted.as_args()}
    return render_template(
        "admin/audit/requests.html",
        error=error,
        period=period,
        raw={key: request.args.get(key, "") for key in ("from", "to")},
        wanted=wanted,
        rows=rows,
        proofs=proofs,
        total=total,
        page=min(page, pages),
        pages=pages,
        query=query,
        outcomes=list(OUTCOMES),
        types=list(RequestType),
        jurisdictions=sorted(RULES),
    ), (400 if error else 200)


@bp.route("/audit/proofs.zip")
@roles_required(*REPORT_READERS)
def audit_proofs_zip():
    """Download every proof of the period's finished requests, with a manifest, as a ZIP."""
    period, error = _period()
    if error:
        return _back_to("admin.audit_requests")
    wanted = RequestFilter.from_args(request.args)
    # Spooled: small archives stay in memory, large ones go to a temporary file.
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (send_file closes it)
    count = write_proofs_zip(db.session, period, wanted, spool)
    spool.seek(0)
    record_event(
        db.session,
        _actor(),
        "audit.proofs_downloaded",
        None,
        **_period_args(period),
        filters=wanted.as_args(),
        count=count,
    )
    db.session.commit()
    return send_file(
        spool,
        mimetype="application/zip",
        as_attachment=True,
        download_name=f"lethe-proofs-{period.first.isoformat()}-{period.last.isoformat()}.zip",
    )


def _event_filter() -> tuple[EventFilter | None, str | None]:
    period, error = _period(required=False)
    if error:
        return None, error
    return EventFilter.from_args(request.args, period), None


@bp.route("/audit/log")
@roles_required(*REPORT_READERS)
def audit_log():
    """Show the audit log as the filters ask, with the verification of the whole chain."""
    wanted, error = _event_filter()
    page = _page_number(request.args)
    total, events = 0, []
    if wanted:
        total = count_events(db.session, wanted)
        events = events_page(db.session, wanted, page, PER_PAGE)
    pages = max(1, -(-total // PER_PAGE))
    return render_template(
        "admin/audit/log.html",
        error=error,
        raw={
            key: request.args.get(key, "") for key in ("from", "to", "reference", "action", "actor")
        },
        wanted=wanted,
        events=events,
        total=total,
        page=min(page, pages),
        pages=pages,
        query=wanted.as_args() if wanted else {},
        chain=chain_status(db.session),
        recipe=HASH_RECIPE,
    ), (400 if error else 200)


def _export(kind: str):
    """Record an export of the filtered events, then stream them; the export's own event
    (and any written later) is left out, so the file holds exactly what was filtered."""
    wanted, error = _event_filter()
    if error:
        return None, None
    position, _head = chain_head(db.session)
    wanted = replace(wanted, up_to=position)
    count = count_events(db.session, wanted)
    record_event(
        db.session,
        _actor(),
        "audit.log_exported",
        None,
        format=kind,
        filters=wanted.as_args(),
        up_to_position=position,
        count=count,
    )
    db.session.commit()
    return wanted, count


@bp.route("/audit/log.csv")
@roles_required(*REPORT_READERS)
def audit_log_csv():
    """Download the filtered audit events as CSV, each cell safe for a spreadsheet."""
    wanted, _count = _export("csv")
    if wanted is None:
        return _back_to("admin.audit_log")
    return current_app.response_class(
        stream_with_context(events_csv(db.session, wanted)),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="lethe-audit-log.csv"'},
    )


@bp.route("/audit/log.json")
@roles_required(*REPORT_READERS)
def audit_log_json():
    """Download the filtered audit events as JSON, with what re-checking their hashes needs."""
    wanted, _count = _export("json")
    if wanted is None:
        return _back_to("admin.audit_log")
    chain = chain_status(db.session)
    return current_app.response_class(
        stream_with_context(events_json(db.session, wanted, chain, utcnow())),
        mimetype="application/json",
        headers={"Content-Disposition": 'attachment; filename="lethe-audit-log.json"'},
    )


def _act():
    """Return the act the query asks for (a request's, or a period's), or a response."""
    reference = (request.args.get("reference") or "").strip().upper()[:16] or None
    period = None
    if reference:
        if find_request(db.session, reference) is None:
            abort(404)
    else:
        period, error = _period()
        if error:
            return None, _back_to("admin.audit_requests")
    try:
        act = act_content(db.session, period=period, reference=reference, issued_by=_actor())
    except NothingDestroyed as exc:
        return None, (
            render_template("admin/audit/no_act.html", message=str(exc), period=period),
            404,
        )
    return act, None


def _record_act(act, kind: str) -> None:
    record_event(
        db.session,
        _actor(),
        "audit.act_downloaded",
        act["scope"]["reference"],
        act=act["number"],
        format=kind,
        requests=len(act["entries"]),
    )
    db.session.commit()


@bp.route("/audit/act.pdf")
@roles_required(*REPORT_READERS)
def audit_act_pdf():
    """Download the signed act of destruction (Order 179) of a period or of one request."""
    act, response = _act()
    if act is None:
        return response
    pdf = render_act_pdf(act, current_signing_key())
    _record_act(act, "pdf")
    return current_app.response_class(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{act["number"]}.pdf"'},
    )


@bp.route("/audit/act.csv")
@roles_required(*REPORT_READERS)
def audit_act_csv():
    """Download the rows of the act of destruction of a period or of one request as CSV."""
    act, response = _act()
    if act is None:
        return response
    text = act_csv(act)
    _record_act(act, "csv")
    return current_app.response_class(
        text,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{act["number"]}.csv"'},
    )
