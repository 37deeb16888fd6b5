"""Bulk erasure of a customer group: a batch of people, reviewed and approved once.

A batch comes from an uploaded list of addresses (each person kept at once as a
``SubjectIdentity``: keyed hash and sealed address) or from a segment a connector can
list (re-listed when the batch starts, so the source system stays the truth).  The DPO
reviews the count and a sample plan and approves once; the batch then becomes one
erasure request per person, each run, verified and proven like any other.  Nobody is
emailed: the controller decided, nobody asked.

::

    draft --(DPO approves)--> approved --(worker)--> running --> completed | partial | failed
      |
    discarded

This module prepares, reviews and approves a batch; ``core.bulk_run`` starts it in chunks
and closes it with a signed summary (``core.bulk_summary``).
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date
from itertools import islice
from typing import TypeVar

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from connectors.base import Connector, ConnectorError, Plan, SegmentInfo, Subject
from core.audit import record_event
from core.bulk_csv import CsvReport
from core.crypto import decrypt, encrypt
from core.models import (
    DataSubjectRequest,
    ErasureBatch,
    LegalHold,
    StaffUser,
    SubjectIdentity,
    utcnow,
)
from core.operations import (
    DomainError,
    hash_email,
    new_reference,
    plan_digest,
)
from core.systems import Systems

#: The people whose plans the DPO sees before approving.
SAMPLE_SIZE = 5
#: People created, planned and started per transaction.
CHUNK = 200

_T = TypeVar("_T")


class BatchStatus(enum.StrEnum):
    """Where a batch is; stored as plain text in ``ErasureBatch.status`` (16 characters)."""

    DRAFT = "draft"
    APPROVED = "approved"
    RUNNING = "running"
    COMPLETED = "completed"
    #: Some people erased, some not (``partially_completed`` does not fit the column).
    PARTIAL = "partial"
    FAILED = "failed"
    DISCARDED = "discarded"


#: States in which a batch may still get a new (or a re-issued) summary.
DONE = frozenset({BatchStatus.COMPLETED, BatchStatus.PARTIAL, BatchStatus.FAILED})


def chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """Yield ``items`` in lists of ``size``, reading no further ahead than one list."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _data_key() -> bytes:
    return bytes.fromhex(current_app.config["DATA_KEY"])


def new_batch_reference() -> str:
    """Return a fresh random reference such as ``BAT-7K3F9Q2M``."""
    return "BAT-" + new_reference().removeprefix("DSR-")


def find_batch(session: Session, reference: str) -> ErasureBatch | None:
    """Return the batch with ``reference``, or None."""
    return session.scalars(
        sa.select(ErasureBatch).where(ErasureBatch.reference == reference.strip().upper())
    ).first()


def check_name(name: str) -> str:
    """Return the batch's name, trimmed; refuse one that could name a person by address."""
    name = " ".join(name.split())
    if not name:
        raise DomainError("give the batch a name")
    if "@" in name:
        # The name is printed in the signed summary, which must hold no address.
        raise DomainError("a batch name must not contain an email address")
    return name[:128]


# -- creating a batch -----------------------------------------------------------------------


def find_identities(session: Session, hashes: list[str]) -> dict[str, SubjectIdentity]:
    """Return the known identities among keyed hashes, by hash."""
    return {
        identity.email_hash: identity
        for identity in session.scalars(
            sa.select(SubjectIdentity).where(SubjectIdentity.email_hash.in_(hashes))
        )
    }


def identity_for(
    session: Session, known: dict[str, SubjectIdentity], email: str, email_hash: str
) -> SubjectIdentity:
    """Return the person's identity from ``known``, created (address sealed) if needed."""
    identity = known.get(email_hash)
    if identity is None:
        identity = known[email_hash] = SubjectIdentity(email_hash=email_hash)
        session.add(identity)
    if identity.email_sealed is None:
        # As submit_request does: the address as typed, sealed to its own hash.
        identity.email_sealed = encrypt(_data_key(), email, email_hash.encode())
    return identity


def create_csv_batch(
    session: Session, staff: StaffUser, name: str, report: CsvReport
) -> ErasureBatch:
    """Record a draft batch of the people in an uploaded list; their addresses are sealed."""
    if not report.addresses:
        raise DomainError("the file holds no valid address: there is nobody to erase")
    members: list[int] = []
    for chunk in chunks(report.addresses, 500):
        typed = {hash_email(email): email for email in chunk}
        known = find_identities(session, list(typed))
        for email_hash, email in typed.items():
            identity_for(session, known, email, email_hash)
        session.flush()
        members.extend(known[email_hash].id for email_hash in typed)
    batch = ErasureBatch(
        reference=new_batch_reference(),
        name=check_name(name),
        source="csv",
        status=BatchStatus.DRAFT,
        created_by=staff,
        total=len(members),
        summary={"members": members, "report": report.to_dict()},
    )
    session.add(batch)
    session.flush()
    record_event(
        session,
        f"staff:{staff.email}",
        "batch.created",
        batch.reference,
        source="csv",
        people=len(members),
        rows=report.rows,
        duplicates=report.duplicates,
        invalid=report.invalid_count,
    )
    return batch


def available_segments(systems: Systems) -> list[tuple[str, SegmentInfo]]:
    """Return every segment of every system, as (system name, segment)."""
    found = []
    for system in systems:
        connector = systems.build(system.name)  # reads the configuration only
        try:
            found.extend((system.name, info) for info in connector.segments())
        finally:
            connector.close()
    return found


def _segment_info(systems: Systems, system: str, segment: str) -> SegmentInfo:
    for name, info in available_segments(systems):
        if (name, info.name) == (system, segment):
            return info
    raise DomainError(f"no segment {segment!r} in system {system!r}")


def create_segment_batch(
    session: Session,
    systems: Systems,
    staff: StaffUser,
    name: str,
    system: str,
    segment: str,
    params: dict[str, date],
) -> ErasureBatch:
    """Record a draft batch of the people a connector lists in one of its segments."""
    info = _segment_info(systems, system, segment)
    if info.parameter is not None and not isinstance(params.get(info.parameter), date):
        raise DomainError(f"the segment needs a date ({info.parameter})")
    batch = ErasureBatch(
        reference=new_batch_reference(),
        name=check_name(name),
        source="segment",
        segment=f"{system}.{segment}",
        status=BatchStatus.DRAFT,
        created_by=staff,
        summary={
            "system": system,
            "segment": segment,
            "label": info.label,
            "params": {key: value.isoformat() for key, value in params.items()},
        },
    )
    count, _digest = count_members(session, systems, batch)
    if not count:
        raise DomainError("nobody is in this group: there is nothing to erase")
    batch.total = count
    session.add(batch)
    session.flush()
    record_event(
        session,
        f"staff:{staff.email}",
        "batch.created",
        batch.reference,
        source="segment",
        system=system,
        segment=segment,
        people=count,
        **batch.summary["params"],
    )
    return batch


# -- the people of a batch ------------------------------------------------------------------


def _segment_params(batch: ErasureBatch) -> dict[str, date]:
    return {key: date.fromisoformat(value) for key, value in batch.summary["params"].items()}


def iter_members(session: Session, systems: Systems, batch: ErasureBatch) -> Iterator[Subject]:
    """Yield the people of the batch, streamed; each Subject carries its keyed hash."""
    if batch.source == "csv":
        for ids in chunks(batch.summary.get("members", []), CHUNK):
            identities = {
                identity.id: identity
                for identity in session.scalars(
                    sa.select(SubjectIdentity).where(SubjectIdentity.id.in_(ids))
                )
            }
            for identity_id in ids:
                identity = identities.get(identity_id)
                if identity is None or identity.email_sealed is None:
                    continue  # purged since the upload: nothing left to find them by
                email = decrypt(_data_key(), identity.email_sealed, identity.email_hash.encode())
                yield Subject(email=email, email_hash=identity.email_hash)
        return
    system, segment = batch.summary["system"], batch.summary["segment"]
    if system not in systems.configs:
        raise DomainError(f"system {system!r} is no longer in systems.toml")
    with systems.open(system) as connector:
        for subject in connector.list_segment(segment, _segment_params(batch)):
            yield Subject(email=subject.email, email_hash=hash_email(subject.email))


def count_members(session: Session, systems: Systems, batch: ErasureBatch) -> tuple[int, str]:
    """Return how many people the batch holds now, and a digest of who they are."""
    digest, count = hashlib.sha256(), 0
    for subject in iter_members(session, systems, batch):
        digest.update(f"{subject.email_hash}\n".encode())
        count += 1
    return count, digest.hexdigest()


def mask_email(email: str) -> str:
    """Return an address with its local part hidden but its first letter: ``a…@example.com``."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}…@{domain}"


@dataclass
class Review:
    """What the DPO sees before approving: the count, a sample of plans, and their digest."""

    count: int
    #: (masked address, {system: plan}) for the first SAMPLE_SIZE people.
    sample: list[tuple[str, dict[str, Plan]]] = field(default_factory=list)
    #: (system, table, action) -> rows across the sample.
    totals: dict[tuple[str, str, str], int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    digest: str = ""


def open_all(stack: ExitStack, systems: Systems) -> dict[str, Connector]:
    """Return a connector per system, each closed when ``stack`` closes."""
    return {system.name: stack.enter_context(systems.open(system.name)) for system in systems}


def plan_all(connector: Connector, subjects: list[Subject]) -> list[Plan]:
    """Return the connector's plan of each of ``subjects``, in order, planned together."""
    if not subjects:
        return []
    plans = connector.plan_many(subjects)
    if len(plans) != len(subjects):  # a plan given to the wrong person would erase them
        raise ConnectorError(
            f"{connector.system}: planned {len(plans)} of {len(subjects)} people; "
            "the connector's plan_many is wrong"
        )
    return plans


def review_batch(session: Session, systems: Systems, batch: ErasureBatch) -> Review:
    """Count the batch and plan its sample; raise ConnectorError if a system cannot plan."""
    if batch.source == "csv":
        count, members = batch.total, hashlib.sha256(json.dumps(batch.summary["members"]).encode())
        members_digest = members.hexdigest()
    else:
        count, members_digest = count_members(session, systems, batch)
    review, digests = Review(count=count), [members_digest]
    with ExitStack() as stack:
        connectors = open_all(stack, systems)
        sample = list(islice(iter_members(session, systems, batch), SAMPLE_SIZE))
        planned = {name: plan_all(c, sample) for name, c in connectors.items()}
        for n, subject in enumerate(sample):
            plans = {name: planned[name][n] for name in connectors}
            review.sample.append((mask_email(subject.email), plans))
            digests.append(f"{subject.email_hash}:{plan_digest(plans)}")
            for name, plan in plans.items():
                review.warnings.extend(f"{name}: {w}" for w in plan.warnings)
                for step in plan.steps:
                    key = (name, step.table, str(step.action))
                    review.totals[key] = review.totals.get(key, 0) + step.rows
    review.digest = hashlib.sha256("\n".join(digests).encode()).hexdigest()
    return review


# -- approving -----------------------------------------------------------------------------


def approve_batch(
    session: Session,
    systems: Systems,
    batch: ErasureBatch,
    staff: StaffUser,
    typed_reference: str,
    reviewed_digest: str,
) -> Review:
    """Approve the batch if the DPO typed its reference and it is still what they reviewed."""
    session.refresh(batch, with_for_update=True)  # two DPOs approving at once start it once
    if batch.status != BatchStatus.DRAFT:
        raise DomainError(f"{batch.reference} is {batch.status}, not a draft")
    if typed_reference.strip().upper() != batch.reference:
        raise DomainError(f"the reference you typed does not match {batch.reference}")
    if not len(systems):
        raise DomainError("no systems are configured: there is nothing to erase from")
    review = review_batch(session, systems, batch)
    if review.digest != reviewed_digest:
        raise DomainError(
            "the group or its plan changed since you reviewed it; review it again and approve"
        )
    batch.status, batch.total = BatchStatus.APPROVED, review.count
    batch.approved_at, batch.approved_by = utcnow(), staff
    record_event(
        session,
        f"staff:{staff.email}",
        "batch.approved",
        batch.reference,
        people=review.count,
        reviewed=review.digest,
    )
    return review


def discard_batch(session: Session, batch: ErasureBatch, staff: StaffUser) -> int:
    """Drop a draft; forget the addresses it alone brought in; return how many."""
    if batch.status != BatchStatus.DRAFT:
        raise DomainError(f"{batch.reference} is {batch.status}; only a draft can be discarded")
    members = batch.summary.get("members", [])
    elsewhere = {
        member
        for other in session.scalars(
            sa.select(ErasureBatch).where(
                ErasureBatch.id != batch.id,
                ErasureBatch.source == "csv",
                ErasureBatch.status.in_(
                    (BatchStatus.DRAFT, BatchStatus.APPROVED, BatchStatus.RUNNING)
                ),
            )
        )
        for member in other.summary.get("members", [])
    }
    forgotten = 0
    for ids in chunks((m for m in members if m not in elsewhere), 500):
        used = set(
            session.scalars(
                sa.select(DataSubjectRequest.identity_id).where(
                    DataSubjectRequest.identity_id.in_(ids)
                )
            )
        )
        used |= set(
            session.scalars(sa.select(LegalHold.identity_id).where(LegalHold.identity_id.in_(ids)))
        )
        unused = [i for i in ids if i not in used]
        if unused:
            forgotten += session.execute(
                sa.delete(SubjectIdentity).where(SubjectIdentity.id.in_(unused))
            ).rowcount
    batch.status = BatchStatus.DISCARDED
    batch.summary = {k: v for k, v in batch.summary.items() if k != "members"}
    record_event(
        session, f"staff:{staff.email}", "batch.discarded", batch.reference, forgotten=forgotten
    )
    return forgotten
