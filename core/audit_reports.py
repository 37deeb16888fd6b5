"""What an auditor reads: finished requests by period, their proofs, and the audit log.

Nothing here holds a subject's personal data: requests are named by reference, proofs by
their digests, and audit events hold none by design (``core.audit``).  Every function takes
a session and writes nothing but the files it is asked for; recording that a download took
place is the caller's job, in the same transaction as nothing else.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import IO, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from core.audit import ChainCheck, current_chain_cache, verify_chain
from core.metrics import Period, csv_cell, effective_due, ended_at
from core.models import AuditEvent, DataSubjectRequest, Proof, RequestType, Status

DSR = DataSubjectRequest

#: The outcomes an auditor filters on, each with the state it stands for.
OUTCOMES = {
    "completed": Status.COMPLETED,
    "partially_completed": Status.PARTIALLY_COMPLETED,
    "failed": Status.FAILED,
}
#: The columns of a proof ZIP's ``manifest.csv``.
MANIFEST_COLUMNS = (
    "reference",
    "proof_id",
    "key_id",
    "fingerprint",
    "pdf_sha256",
    "issued_at",
    "file",
)
#: The columns of an audit log CSV export.
EVENT_COLUMNS = ("position", "occurred_at", "actor", "action", "reference", "details")
EVENT_COLUMNS_CHAINED = (*EVENT_COLUMNS, "prev_hash", "hash")
#: How an event's hash is computed, given with every JSON export so anyone can re-check it.
HASH_RECIPE = (
    "hash = sha256_hex(utf8(prev_hash + body)), body = JSON of "
    "[position, occurred_at, actor, action, reference, details] with sorted keys, "
    'separators (",", ":") and non-ASCII characters kept as they are; the first event\'s '
    "prev_hash is 64 zeros and each next one is the hash of the event before it"
)
#: Rows of a spooled ZIP kept in memory before it moves to a temporary file.
SPOOL_BYTES = 8 * 1024 * 1024


class PeriodError(ValueError):
    """The dates asked for do not make a period; the message says how to fix them."""


def _zone() -> ZoneInfo:
    return ZoneInfo(current_app.config["TIMEZONE"])


def last_calendar_month(today: date) -> Period:
    """Return the calendar month before the one ``today`` falls in."""
    last = today.replace(day=1) - timedelta(days=1)
    return Period("custom", f"{last:%B %Y}", last.replace(day=1), last)


def parse_day(raw: str, name: str) -> date | None:
    """Return the ISO date typed in field ``name`` (None if empty); raise PeriodError if not one."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise PeriodError(
            f"“{raw[:20]}” in “{name}” is not a date: write it as YYYY-MM-DD, e.g. 2026-03-31."
        ) from None


def parse_period(args: Mapping[str, str], today: date, *, required: bool = True) -> Period | None:
    """Return the period of the ``from`` and ``to`` arguments; raise PeriodError if wrong.

    Both empty: the last calendar month when ``required``, else None (no limit).  One
    empty: the period runs from or to the other, and a missing end is today.
    """
    first = parse_day(args.get("from", ""), "from")
    last = parse_day(args.get("to", ""), "to")
    if first is None and last is None:
        return last_calendar_month(today) if required else None
    if first is None:
        first = date(1970, 1, 1)
    if last is None:
        last = today
    if first > last:
        raise PeriodError(
            f"The period starts on {first.isoformat()}, after it ends on {last.isoformat()}: "
            "swap the dates."
        )
    return Period("custom", f"{first.isoformat()} to {last.isoformat()}", first, last)


# --- finished requests -----------------------------------------------------------------


@dataclass(frozen=True)
class RequestFilter:
    """Which finished requests an auditor asked to see."""

    jurisdiction: str | None = None
    request_type: str | None = None
    outcome: str | None = None
    #: ``on_time`` or ``late``.
    punctuality: str | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> RequestFilter:
        """Read the filter from query parameters, ignoring values that mean nothing."""
        return cls(
            jurisdiction=(args.get("jurisdiction") or "").strip()[:16] or None,
            request_type=args.get("type") if args.get("type") in set(RequestType) else None,
            outcome=args.get("outcome") if args.get("outcome") in OUTCOMES else None,
            punctuality=args.get("timing") if args.get("timing") in ("on_time", "late") else None,
        )

    def as_args(self) -> dict[str, str]:
        """Return the filter as query parameters (only those set)."""
        values = {
            "jurisdiction": self.jurisdiction,
            "type": self.request_type,
            "outcome": self.outcome,
            "timing": self.punctuality,
        }
        return {key: value for key, value in values.items() if value}


@dataclass(frozen=True)
class FinishedRequest:
    """A finished request as an auditor sees it: no personal data."""

    id: int
    reference: str
    request_type: str
    jurisdiction: str
    outcome: str
    received_on: date
    due_on: date
    completed_on: date
    on_time: bool


def _finished_rows(
    session: Session, period: Period, wanted: RequestFilter
) -> Iterator[FinishedRequest]:
    """Yield the requests that finished in ``period`` and match ``wanted``, oldest first."""
    zone = _zone()
    start, end = period.bounds(zone)
    states = [OUTCOMES[wanted.outcome]] if wanted.outcome else list(OUTCOMES.values())
    where = [DSR.status.in_(states), ended_at() >= start, ended_at() < end]
    if wanted.jurisdiction:
        where.append(DSR.jurisdiction == wanted.jurisdiction)
    if wanted.request_type:
        where.append(DSR.request_type == wanted.request_type)
    query = (
        sa.select(
            DSR.id,
            DSR.reference,
            DSR.request_type,
            DSR.jurisdiction,
            DSR.status,
            DSR.received_at,
            effective_due(),
            ended_at(),
        )
        .where(*where)
        .order_by(ended_at(), DSR.reference)
        .execution_options(yield_per=1000)
    )
    rows = session.execute(query)
    try:
        for id_, reference, kind, jurisdiction, status, received_at, due, ended in rows:
            if ended.tzinfo is None:  # coalesce() loses the column type on some dialects
                ended = ended.replace(tzinfo=ZoneInfo("UTC"))
            completed_on = ended.astimezone(zone).date()
            on_time = completed_on <= due
            if wanted.punctuality and on_time != (wanted.punctuality == "on_time"):
                continue
            yield FinishedRequest(
                id=id_,
                reference=reference,
                request_type=str(RequestType(kind)),
                jurisdiction=jurisdiction,
                outcome=str(Status(status)),
                received_on=received_at.astimezone(zone).date(),
                due_on=due,
                completed_on=completed_on,
                on_time=on_time,
            )
    finally:
        rows.close()  # releases a server-side cursor on PostgreSQL


def finished_requests(
    session: Session, period: Period, wanted: RequestFilter, page: int, per_page: int
) -> tuple[int, list[FinishedRequest]]:
    """Return how many requests match, and those of page ``page`` (from 1).

    "On time" depends on the controller's time zone, so it is decided row by row; only the
    page asked for is kept in memory.
    """
    first = (page - 1) * per_page
    total, shown = 0, []
    for row in _finished_rows(session, period, wanted):
        if first <= total < first + per_page:
            shown.append(row)
        total += 1
    return total, shown


@dataclass(frozen=True)
class ProofEntry:
    """What identifies one issued proof, without its bytes."""

    id: int
    reference: str
    key_id: str
    fingerprint: str
    pdf_sha256: str
    issued_at: datetime


def proofs_of(session: Session, request_ids: list[int]) -> dict[int, list[ProofEntry]]:
    """Return the proofs of each of ``request_ids`` (oldest first), without their PDFs."""
    found: dict[int, list[ProofEntry]] = {}
    for chunk_start in range(0, len(request_ids), 500):
        chunk = request_ids[chunk_start : chunk_start + 500]
        rows = session.execute(
            sa.select(
                Proof.request_id,
                Proof.id,
                DSR.reference,
                Proof.key_id,
                Proof.fingerprint,
                Proof.pdf_sha256,
                Proof.issued_at,
            )
            .join(DSR, DSR.id == Proof.request_id)
            .where(Proof.request_id.in_(chunk))
            .order_by(Proof.id)
        )
        for request_id, *fields in rows:
            found.setdefault(request_id, []).append(ProofEntry(*fields))
    return found


def write_proofs_zip(
    session: Session, period: Period, wanted: RequestFilter, out: IO[bytes]
) -> int:
    """Write every proof of the matching requests, and a manifest, as a ZIP; return the count.

    One PDF is in memory at a time; ``out`` may be a spooled temporary file.
    """
    ids = [row.id for row in _finished_rows(session, period, wanted)]
    manifest = io.StringIO()
    writer = csv.writer(manifest)
    writer.writerow(MANIFEST_COLUMNS)
    count = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for entries in proofs_of(session, ids).values():
            for entry in entries:
                name = f"proofs/{entry.reference}-proof-{entry.id}.pdf"
                pdf = session.scalar(sa.select(Proof.pdf).where(Proof.id == entry.id))
                archive.writestr(name, pdf)
                writer.writerow(
                    [
                        csv_cell(cell)
                        for cell in (
                            entry.reference,
                            entry.id,
                            entry.key_id,
                            entry.fingerprint,
                            entry.pdf_sha256,
                            entry.issued_at.isoformat(timespec="seconds"),
                            name,
                        )
                    ]
                )
                count += 1
        archive.writestr("manifest.csv", manifest.getvalue())
    return count


# --- the audit log ---------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilter:
    """Which audit events an auditor asked to see."""

    period: Period | None = None
    reference: str | None = None
    action: str | None = None
    actor: str | None = None
    #: Events written after this position are left out (an export's own event, for one).
    up_to: int | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, str], period: Period | None) -> EventFilter:
        """Read the filter from query parameters; the period is parsed by the caller."""
        reference = (args.get("reference") or "").strip().upper()[:16]
        if reference and not reference.startswith("DSR-") and len(reference) == 8:
            reference = "DSR-" + reference  # "7K3F9Q2M" is enough, as in the queue
        return cls(
            period=period,
            reference=reference or None,
            action=(args.get("action") or "").strip()[:64] or None,
            actor=(args.get("actor") or "").strip()[:128] or None,
        )

    def as_args(self) -> dict[str, str]:
        """Return the filter as query parameters (only those set)."""
        values = {
            "from": self.period and self.period.first.isoformat(),
            "to": self.period and self.period.last.isoformat(),
            "reference": self.reference,
            "action": self.action,
            "actor": self.actor,
        }
        return {key: value for key, value in values.items() if value}


def _event_conditions(wanted: EventFilter) -> list[Any]:
    where: list[Any] = []
    if wanted.period:
        start, end = wanted.period.bounds(_zone())
        where += [AuditEvent.occurred_at >= start, AuditEvent.occurred_at < end]
    if wanted.reference:
        where.append(AuditEvent.reference == wanted.reference)
    if wanted.action:
        where.append(AuditEvent.action.startswith(wanted.action, autoescape=True))
    if wanted.actor:
        where.append(AuditEvent.actor.contains(wanted.actor, autoescape=True))
    if wanted.up_to is not None:
        where.append(AuditEvent.position <= wanted.up_to)
    return where


def count_events(session: Session, wanted: EventFilter) -> int:
    """Return how many events match ``wanted``."""
    return session.scalar(
        sa.select(sa.func.count()).select_from(AuditEvent).where(*_event_conditions(wanted))
    )


def events_page(
    session: Session, wanted: EventFilter, page: int, per_page: int
) -> list[AuditEvent]:
    """Return page ``page`` (from 1) of the matching events, newest first."""
    return list(
        session.scalars(
            sa.select(AuditEvent)
            .where(*_event_conditions(wanted))
            .order_by(AuditEvent.position.desc())
            .offset((page - 1) * per_page)
            .limit(per_page)
        )
    )


def iter_events(session: Session, wanted: EventFilter) -> Iterator[AuditEvent]:
    """Yield the matching events in chain order, a thousand rows at a time."""
    result = session.scalars(
        sa.select(AuditEvent)
        .where(*_event_conditions(wanted))
        .order_by(AuditEvent.position)
        .execution_options(yield_per=1000)
    )
    try:
        yield from result
    finally:
        result.close()


def event_record(event: AuditEvent) -> dict[str, Any]:
    """Return an event as plain data, ``occurred_at`` exactly as its hash was computed."""
    return {
        "position": event.position,
        "occurred_at": event.occurred_at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "reference": event.reference,
        "details": event.details,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def _csv_line(cells: list[object]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow([csv_cell(cell) for cell in cells])
    return out.getvalue()


def events_csv(session: Session, wanted: EventFilter) -> Iterator[str]:
    """Yield the matching events as CSV lines, header first; no cell runs as a formula."""
    yield _csv_line(list(EVENT_COLUMNS_CHAINED))
    for event in iter_events(session, wanted):
        record = event_record(event)
        record["details"] = json.dumps(record["details"], sort_keys=True, ensure_ascii=False)
        yield _csv_line([record[column] for column in EVENT_COLUMNS_CHAINED])


@dataclass(frozen=True)
class ChainStatus:
    """The chain's verification, put the way the audit page says it."""

    ok: bool
    #: Verified up to this position (ok), or broken at it (not ok).
    position: int
    head_hash: str
    problem: str

    @classmethod
    def of(cls, check: ChainCheck) -> ChainStatus:
        """Return the status a full re-computation of the chain found."""
        return cls(check.ok, check.events, check.head_hash, check.problem)


def chain_status(session: Session) -> ChainStatus:
    """Recompute the whole chain and say up to where it holds.

    Always the whole chain, never from a cached head: an event edited without re-hashing
    is only found by recomputing it, and this is the auditor's check.  The result
    refreshes the cache that proof uploads start from.
    """
    check = verify_chain(session)
    current_chain_cache().remember(check)
    return ChainStatus.of(check)


def events_json(
    session: Session, wanted: EventFilter, chain: ChainStatus, exported_at: datetime
) -> Iterator[str]:
    """Yield a JSON document of the matching events with what re-checking them needs."""
    head = {
        "format": "lethe-audit-extract/1",
        "exported_at": exported_at.isoformat(timespec="seconds"),
        "filters": wanted.as_args(),
        "up_to_position": wanted.up_to,
        "chain": asdict(chain),
        "hash_recipe": HASH_RECIPE,
        "genesis_prev_hash": "0" * 64,
    }
    opening = json.dumps(head, ensure_ascii=False, indent=1)
    yield opening[:-2] + ',\n "events": ['
    for number, event in enumerate(iter_events(session, wanted)):
        yield ("," if number else "") + "\n  " + json.dumps(event_record(event), ensure_ascii=False)
    yield "\n ]\n}\n"
