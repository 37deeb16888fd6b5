"""Run an approved bulk erasure: one request per person, started chunk by chunk, then closed.

Each chunk of people becomes requests that are verified, approved and running at once
(the controller decided; there is no cooling-off and nobody is emailed), with one run per
system queued like any other request's.  Memory stays bounded whatever the size of the
group: people are read, planned and committed a chunk at a time.

Each system plans a chunk with one ``plan_many``.  A system whose connector erases people
together (``batch_erase``) then gets the chunk's runs in one task, ``run_system_batch``
(``core.bulk_execution``), instead of one ``run_system`` per run; each run still ends with
its own outcome, audit events and, per request, its own proof.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from connectors.base import Plan, Subject
from core.audit import record_event
from core.bulk import (
    CHUNK,
    DONE,
    BatchStatus,
    chunks,
    find_identities,
    identity_for,
    iter_members,
    open_all,
    plan_all,
)
from core.bulk_summary import issue_summary
from core.clock import recompute_due_dates
from core.lifecycle import CLOSED, transition
from core.models import (
    Channel,
    DataSubjectRequest,
    ErasureBatch,
    Proof,
    RequestType,
    RunStatus,
    StaffUser,
    Status,
    SubjectIdentity,
    SystemRun,
    utcnow,
)
from core.operations import DomainError, new_reference, plan_digest
from core.systems import Systems

#: How a bulk request's identity was established: the controller decided, nobody asked.
IDENTITY_METHOD = "controller-decision"
#: Where a member request stops: the states a batch waits for.
FINISHED = frozenset({Status.COMPLETED, Status.PARTIALLY_COMPLETED, Status.FAILED})


def _record_member(
    session: Session,
    systems: Systems,
    batch: ErasureBatch,
    staff: StaffUser,
    identity: SubjectIdentity,
    plans: dict[str, Plan],
) -> list[SystemRun]:
    """Create one person's request, verified, approved and running, with its runs."""
    config, now, actor = current_app.config, utcnow(), f"staff:{staff.email}"
    request = DataSubjectRequest(
        reference=new_reference(),
        request_type=RequestType.ERASURE,
        status=Status.SUBMITTED,
        identity=identity,
        language="en",
        jurisdiction=config["JURISDICTION"],
        holiday_country=config["HOLIDAY_COUNTRY"],
        holiday_subdivision=config["HOLIDAY_SUBDIVISION"],
        received_at=now,
        status_changed_at=now,
        channel=Channel.BULK,
        created_by_id=batch.created_by_id,
        identity_method=IDENTITY_METHOD,
        batch_id=batch.id,
    )
    recompute_due_dates(request)
    session.add(request)
    session.flush()
    record_event(
        session,
        actor,
        "request.submitted",
        request.reference,
        type=str(RequestType.ERASURE),
        channel=str(Channel.BULK),
        batch=batch.reference,
        due_on=request.due_on.isoformat(),
    )
    request.verified_at = now
    transition(session, request, Status.VERIFIED, actor=actor, method=IDENTITY_METHOD)
    runs = []
    for system in systems:
        plan = plans[system.name]
        run = SystemRun(
            request=request,
            system=system.name,
            label=system.label,
            connector=system.connector,
            connector_version=systems.classes[system.connector].version,
            plan=plan.to_dict(),
            rows_before=plan.total_rows,
            status=RunStatus.PLANNED,
        )
        session.add(run)
        runs.append(run)
    # No cooling-off: it protects a person who may change their mind, and nobody asked.
    request.approved_at, request.approved_by, request.cooling_off_until = now, staff, now
    transition(
        session,
        request,
        Status.APPROVED,
        actor=actor,
        plan=plan_digest(plans),
        cooling_off_until=now.isoformat(),
        batch=batch.reference,
    )
    transition(session, request, Status.RUNNING, actor="worker", batch=batch.reference)
    return runs


def can_start(batch: ErasureBatch) -> bool:
    """Return whether the batch is approved and waits to be started (or resumed)."""
    return (
        batch.status in (BatchStatus.APPROVED, BatchStatus.RUNNING)
        and not batch.summary.get("started")
        and "start_problem" not in batch.summary
    )


def start_members(
    session: Session, systems: Systems, batch: ErasureBatch
) -> Iterator[dict[str, list[int]]]:
    """Create and start the batch's requests chunk by chunk; yield each chunk's run ids by
    system (a system that erases people together takes them in one task).

    Each system plans the whole chunk at once.  The caller commits after each chunk, then
    queues its runs.  Starting again after a failure skips the people whose request
    already exists, so it resumes where it stopped.
    """
    staff = batch.approved_by
    if batch.status not in (BatchStatus.APPROVED, BatchStatus.RUNNING) or staff is None:
        raise DomainError(f"{batch.reference} is not approved")
    if batch.status == BatchStatus.APPROVED:
        batch.status = BatchStatus.RUNNING
        record_event(session, "worker", "batch.started", batch.reference, people=batch.total)
    summary = {k: v for k, v in batch.summary.items() if k != "start_problem"}
    # A resumed start lists everyone again: those started before are not duplicates.
    started_before = _members_started(session, batch)
    skipped_open = skipped_again = 0
    with ExitStack() as stack:
        connectors = open_all(stack, systems)
        for chunk in chunks(iter_members(session, systems, batch), CHUNK):
            known = find_identities(session, [s.email_hash for s in chunk])
            ids = [i.id for i in known.values()]
            in_batch = set(
                session.scalars(
                    sa.select(DataSubjectRequest.identity_id).where(
                        DataSubjectRequest.batch_id == batch.id,
                        DataSubjectRequest.identity_id.in_(ids),
                    )
                )
            )
            open_elsewhere = set(
                session.scalars(
                    sa.select(DataSubjectRequest.identity_id).where(
                        DataSubjectRequest.identity_id.in_(ids),
                        DataSubjectRequest.request_type == RequestType.ERASURE,
                        DataSubjectRequest.status.not_in(CLOSED),
                        sa.or_(
                            DataSubjectRequest.batch_id.is_(None),
                            DataSubjectRequest.batch_id != batch.id,
                        ),
                    )
                )
            )
            people: list[tuple[SubjectIdentity, Subject]] = []
            chosen: set[str] = set()
            for subject in chunk:
                identity = identity_for(session, known, subject.email, subject.email_hash)
                # A new identity has no id until the chunk is flushed: go by its hash.
                if identity.id in in_batch or subject.email_hash in chosen:
                    skipped_again += 1  # listed twice, or started before a resume
                    continue
                if identity.id in open_elsewhere:
                    skipped_open += 1  # their own request goes on; erasing twice helps nobody
                    continue
                people.append((identity, subject))
                chosen.add(subject.email_hash)
            subjects = [subject for _, subject in people]
            plans = {name: plan_all(c, subjects) for name, c in connectors.items()}
            runs: dict[str, list[SystemRun]] = {name: [] for name in connectors}
            for n, (identity, _) in enumerate(people):
                mine = {name: plans[name][n] for name in connectors}
                for run in _record_member(session, systems, batch, staff, identity, mine):
                    runs[run.system].append(run)
            session.flush()
            yield {name: [run.id for run in chunk_runs] for name, chunk_runs in runs.items()}
    # Each pass goes through everyone, so its counts replace those of a pass that stopped.
    summary["skipped_open"] = skipped_open
    summary["skipped_again"] = max(0, skipped_again - started_before)
    summary["started"] = True
    batch.summary = summary
    batch.total = _members_started(session, batch)


def _members_started(session: Session, batch: ErasureBatch) -> int:
    return session.scalar(
        sa.select(sa.func.count())
        .select_from(DataSubjectRequest)
        .where(DataSubjectRequest.batch_id == batch.id)
    )


def note_start_problem(session: Session, batch: ErasureBatch, problem: str) -> None:
    """Keep why starting the batch stopped, for the DPO to fix and resume."""
    batch.summary = {**batch.summary, "start_problem": problem[:500]}
    record_event(session, "worker", "batch.start_failed", batch.reference, problem=problem[:500])


def resume_batch(session: Session, batch: ErasureBatch, staff: StaffUser) -> None:
    """Let a batch whose start stopped on a problem start again where it stopped."""
    session.refresh(batch, with_for_update=True)  # one resume, however many clicks
    if "start_problem" not in batch.summary:
        raise DomainError(f"{batch.reference} has not stopped; there is nothing to resume")
    batch.summary = {k: v for k, v in batch.summary.items() if k != "start_problem"}
    record_event(session, f"staff:{staff.email}", "batch.resumed", batch.reference)


# -- progress and the end -------------------------------------------------------------------


def progress(session: Session, batch: ErasureBatch) -> dict[str, int]:
    """Return how many of the batch's requests are in each state."""
    rows = session.execute(
        sa.select(DataSubjectRequest.status, sa.func.count())
        .where(DataSubjectRequest.batch_id == batch.id)
        .group_by(DataSubjectRequest.status)
    ).all()
    return {str(status): count for status, count in rows}


def lock_batch(session: Session, batch_id: int) -> ErasureBatch | None:
    """Return the batch, locked against another worker closing it at the same moment."""
    return session.scalars(
        sa.select(ErasureBatch).where(ErasureBatch.id == batch_id).with_for_update()
    ).first()


def _waiting(session: Session, batch: ErasureBatch) -> bool:
    """Return whether a member request is still running or still owes its proof."""
    members = sa.select(DataSubjectRequest.id).where(DataSubjectRequest.batch_id == batch.id)
    running = members.where(DataSubjectRequest.status.not_in(FINISHED))
    unproven = members.where(
        DataSubjectRequest.status != Status.FAILED,
        ~sa.exists().where(Proof.request_id == DataSubjectRequest.id),
    )
    return bool(session.scalar(sa.select(sa.exists(running) | sa.exists(unproven))))


def close_if_finished(session: Session, batch: ErasureBatch) -> bool:
    """Give a started batch its outcome and signed summary once every person is done.

    A batch already closed gets a new summary when a person's outcome changed since
    (a failed erasure retried later); return whether a summary was issued.
    """
    started = batch.status == BatchStatus.RUNNING and batch.summary.get("started")
    if not (started or batch.status in DONE) or _waiting(session, batch):
        return False
    outcomes = progress(session, batch)
    if batch.status in DONE and outcomes == batch.summary.get("outcomes"):
        return False
    erased = outcomes.get(Status.COMPLETED, 0) + outcomes.get(Status.PARTIALLY_COMPLETED, 0)
    if outcomes.get(Status.FAILED, 0) and erased:
        batch.status = BatchStatus.PARTIAL
    elif outcomes.get(Status.FAILED, 0):
        batch.status = BatchStatus.FAILED
    elif outcomes.get(Status.PARTIALLY_COMPLETED, 0):
        batch.status = BatchStatus.PARTIAL
    else:
        batch.status = BatchStatus.COMPLETED
    fingerprint = issue_summary(session, batch, outcomes)
    record_event(
        session,
        "worker",
        "batch.completed",
        batch.reference,
        status=str(batch.status),
        summary=fingerprint,
        **outcomes,
    )
    return True
