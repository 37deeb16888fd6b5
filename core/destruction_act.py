"""The act of destruction of personal data and its event-log extract (Roskomnadzor Order 179).

Order No. 179 of 28 October 2022 asks, for data processed by automated means, for an act
naming the operator (and a processor, if one acted), the person whose data was destroyed,
the people who destroyed it, the list of data destroyed, the information system it was
destroyed in, the method, the reason and the date; plus an extract from the system's event
log giving the person, the data, the system, the reason and the date.

We keep no name once a person's data is erased, so the act identifies each person by the
request's reference and the keyed hash of their address, and says so.  The content is plain
data, signed and embedded like a proof (``core.proofs.write_signed_pdf``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session, selectinload

from core.audit import chain_head
from core.metrics import Period, csv_cell, ended_at
from core.models import AuditEvent, DataSubjectRequest, RequestType, RunStatus, Status, utcnow
from core.proof_issue import LEGAL_BASIS
from core.proofs import render_signed_document
from core.signing import SigningKey

FORMAT = "lethe-destruction-act/1"
DSR = DataSubjectRequest
#: How each step of a plan destroyed data, in the act's two languages.
METHODS = {
    "delete": "удаление записей / records deleted",
    "anonymise": "обезличивание / anonymised",
}
#: Why data was destroyed, per request type, in the act's two languages.
REASONS = {
    RequestType.ERASURE: "требование субъекта об уничтожении / the subject's erasure request",
}
#: The columns of the act's CSV: one row per system and table destroyed.
ACT_COLUMNS = (
    "act",
    "reference",
    "subject_hash",
    "information_system",
    "system",
    "table",
    "data_destroyed",
    "method",
    "rows",
    "reason",
    "legal_basis",
    "destroyed_at",
    "approved_by",
    "performed_by",
)
#: Of the request's audit events, those the log extract gives.
EXTRACT_ACTIONS = ("request.", "status.", "run.", "proof.issued")


class NothingDestroyed(LookupError):
    """No personal data was destroyed in what the act was asked for."""


def _requests(session: Session, period: Period | None, reference: str | None) -> list[DSR]:
    query = (
        sa.select(DSR)
        .where(
            DSR.request_type == RequestType.ERASURE,
            DSR.status.in_([Status.COMPLETED, Status.PARTIALLY_COMPLETED]),
        )
        .options(selectinload(DSR.runs), selectinload(DSR.identity))
        .order_by(ended_at(), DSR.reference)
    )
    if reference:
        query = query.where(DSR.reference == reference)
    if period:
        start, end = period.bounds(_zone())
        query = query.where(ended_at() >= start, ended_at() < end)
    return list(session.scalars(query))


def _zone() -> ZoneInfo:
    return ZoneInfo(current_app.config["TIMEZONE"])


def _data_destroyed(step: Mapping[str, Any]) -> str:
    if step["action"] == "anonymise" and step.get("columns"):
        return ", ".join(f"{column} ({how})" for column, how in step["columns"].items())
    return "все поля записи / every field of the record"


def _events(session: Session, references: list[str]) -> list[AuditEvent]:
    events: list[AuditEvent] = []
    for start in range(0, len(references), 500):
        chunk = references[start : start + 500]
        events += session.scalars(
            sa.select(AuditEvent)
            .where(
                AuditEvent.reference.in_(chunk),
                sa.or_(*(AuditEvent.action.startswith(a) for a in EXTRACT_ACTIONS)),
            )
            .order_by(AuditEvent.position)
        )
    return sorted(events, key=lambda event: event.position)


def act_content(
    session: Session,
    *,
    period: Period | None = None,
    reference: str | None = None,
    issued_by: str,
) -> dict[str, Any]:
    """Return the act for the erasures finished in ``period`` (or of one ``reference``).

    Raise NothingDestroyed if no data was destroyed there.
    """
    requests = _requests(session, period, reference)
    events = _events(session, [dsr.reference for dsr in requests])
    performers: dict[tuple[str, str], str] = {}
    for event in events:
        if event.action.startswith("run.") and isinstance(event.details, dict):
            performers[(event.reference, str(event.details.get("system")))] = event.actor
    config = current_app.config
    entries = []
    for dsr in requests:
        systems = []
        for run in dsr.runs:
            if RunStatus(run.status) != RunStatus.COMPLETED:
                continue  # nothing destroyed there: not found, retained, failed or pending
            affected = run.rows_affected or {}
            steps = [
                {
                    "table": step["table"],
                    "action": step["action"],
                    "method": METHODS[step["action"]],
                    "data": _data_destroyed(step),
                    "rows": affected.get(step["table"], step.get("rows", 0)),
                }
                for step in run.plan.get("steps", [])
                if step["action"] in METHODS and affected.get(step["table"], step.get("rows", 0))
            ]
            if not steps:
                continue
            systems.append(
                {
                    "system": run.system,
                    "label": run.label,
                    "connector": f"{run.connector} {run.connector_version}",
                    "finished_at": run.finished_at
                    and run.finished_at.isoformat(timespec="seconds"),
                    "performed_by": performers.get((dsr.reference, run.system), "worker"),
                    "steps": steps,
                }
            )
        if not systems:
            continue
        completed = dsr.completed_at or dsr.status_changed_at
        entries.append(
            {
                "reference": dsr.reference,
                "subject_hash": dsr.identity.email_hash,
                "request_type": str(dsr.request_type),
                "reason": REASONS[RequestType(dsr.request_type)],
                "legal_basis": LEGAL_BASIS.get(dsr.jurisdiction, dsr.jurisdiction),
                "jurisdiction": dsr.jurisdiction,
                "approved_by": dsr.approved_by.email if dsr.approved_by else None,
                "approved_at": dsr.approved_at and dsr.approved_at.isoformat(timespec="seconds"),
                "destroyed_at": completed.isoformat(timespec="seconds"),
                "outcome": str(dsr.status),
                "systems": systems,
            }
        )
    if not entries:
        raise NothingDestroyed(
            "No personal data was destroyed "
            + (f"for {reference}" if reference else "in this period")
            + ": there is nothing to draw up an act for."
        )
    kept = {entry["reference"] for entry in entries}
    position, head_hash = chain_head(session)
    number = reference or (f"{period.first:%Y%m%d}-{period.last:%Y%m%d}" if period else "all")
    return {
        "format": FORMAT,
        "number": f"ACT-{number}",
        # Printed on the page, so ``core.proofs.verify_proof_pdf`` checks an act like a proof.
        "reference": f"ACT-{number}",
        "controller": {
            "name": config["CONTROLLER_NAME"],
            "address": config.get("CONTROLLER_ADDRESS") or None,
        },
        "processor": None,
        "scope": {
            "reference": reference,
            "from": period and period.first.isoformat(),
            "to": period and period.last.isoformat(),
        },
        "information_system": "Lethe",
        "entries": entries,
        "log_extract": [
            {
                "position": event.position,
                "occurred_at": event.occurred_at.isoformat(),
                "actor": event.actor,
                "action": event.action,
                "reference": event.reference,
                "details": event.details,
                "hash": event.hash,
            }
            for event in events
            if event.reference in kept
        ],
        "audit_checkpoint": {"position": position, "hash": head_hash},
        "issued_at": utcnow().replace(microsecond=0).isoformat(),
        "issued_by": issued_by,
    }


def act_rows(act: Mapping[str, Any]) -> Iterable[list[object]]:
    """Yield the act's rows in the order of ``ACT_COLUMNS``."""
    for entry in act["entries"]:
        for system in entry["systems"]:
            for step in system["steps"]:
                yield [
                    act["number"],
                    entry["reference"],
                    entry["subject_hash"],
                    system["label"],
                    system["system"],
                    step["table"],
                    step["data"],
                    step["method"],
                    step["rows"],
                    entry["reason"],
                    entry["legal_basis"],
                    system["finished_at"] or entry["destroyed_at"],
                    entry["approved_by"] or "",
                    system["performed_by"],
                ]


def act_csv(act: Mapping[str, Any]) -> str:
    """Return the act's rows as CSV text, header first; no cell runs as a formula."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(ACT_COLUMNS)
    for row in act_rows(act):
        writer.writerow([csv_cell(cell) for cell in row])
    return out.getvalue()


def render_act_pdf(act: Mapping[str, Any], key: SigningKey) -> bytes:
    """Return the signed PDF of the act, in Russian with English."""
    return render_signed_document("pdf/destruction_act.html", act, key, "this act of destruction")
