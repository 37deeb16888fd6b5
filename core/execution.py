"""Carry out an approved request, one system at a time, and close it when all are done.

Erasure erases along the approved plan and re-scans; an objection to marketing stops
marketing use.  Exports are gathered into one package by ``core.exports``.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.orm import Session

from connectors.base import ConnectorError, EraseResult, Outcome, Plan, VerifyResult
from core.audit import record_event
from core.holds import active_holds, hold_note, hold_on
from core.lifecycle import transition
from core.links import callback_link
from core.models import DataSubjectRequest, RequestType, RunStatus, Status, SystemRun, utcnow
from core.operations import retain_plan, subject_of
from core.retries import RetryPolicy, schedule_retry
from core.systems import Systems

log = logging.getLogger(__name__)

#: Run states after which nothing more happens to that system without a person acting.
FINISHED = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.NOT_FOUND,
        RunStatus.RETAINED,
        RunStatus.FAILED,
        RunStatus.ACTION_REQUIRED,
    }
)
#: Run states that count as done in the proof.
SUCCESSFUL = frozenset({RunStatus.COMPLETED, RunStatus.NOT_FOUND, RunStatus.RETAINED})


def mark_running(session: Session, run: SystemRun) -> None:
    """Record that an attempt on ``run`` begins, before the connector touches anything."""
    run.status = RunStatus.RUNNING
    run.attempts += 1
    run.started_at = run.heartbeat_at = utcnow()
    record_start(session, run)


def record_start(session: Session, run: SystemRun) -> None:
    """Write the audit event of an attempt on ``run`` beginning."""
    record_event(
        session,
        "worker",
        "run.started",
        run.request.reference,
        system=run.system,
        attempt=run.attempts,
    )


def execute_run(
    session: Session, systems: Systems, run: SystemRun, retry: RetryPolicy | None = None
) -> int | None:
    """Erase the subject from one system along its approved plan, then re-scan it.

    With a ``retry`` policy, a transient connector failure puts the run back to planned
    while attempts are left: return the delay in seconds before trying again (else None).
    """
    request = run.request
    if run.system not in systems.configs:
        finish_run(
            session,
            run,
            RunStatus.FAILED,
            f"system {run.system!r} is no longer in systems.toml; restore it and retry",
        )
        return
    if request.request_type == RequestType.OBJECTION:
        return _stop_marketing(session, systems, run, retry)
    if run.retained_ground is None:
        # A hold placed after approval (during the cooling-off period) still keeps the data.
        hold = hold_on(active_holds(session, request.identity_id), run.system)
        if hold is not None:
            run.hold, run.retained_ground = hold, hold.ground
            run.plan = retain_plan(Plan.from_dict(run.plan), hold.ground, hold_note(hold)).to_dict()
    if run.retained_ground is not None:
        finish_run(session, run, RunStatus.RETAINED, f"kept under {run.retained_ground}")
        return
    plan = Plan.from_dict(run.plan)
    try:
        with systems.open(run.system) as connector:
            if connector.callback_timeout is not None:  # it confirms later, at this URL
                connector.callback_url = callback_link(run)
            result = connector.erase(subject_of(request), plan)
            check = connector.verify(subject_of(request))
    except ConnectorError as exc:
        # The connector's message is written to be acted on and holds no personal data.
        return _connector_failed(session, run, exc, retry)
    record_outcome(session, run, result, check)
    return None


def record_outcome(
    session: Session, run: SystemRun, result: EraseResult, check: VerifyResult
) -> None:
    """Finish ``run`` with what the connector did and what its re-scan still found."""
    run.rows_affected = result.rows_affected
    run.remaining = check.remaining
    if result.outcome == Outcome.ACTION_REQUIRED:
        # A person or a remote system acts later and confirms (core.execution.confirm_run);
        # until then what the re-scan still finds is expected, not a failure.
        finish_run(session, run, RunStatus.ACTION_REQUIRED, result.message)
    elif result.outcome == Outcome.FAILED:
        finish_run(
            session, run, RunStatus.FAILED, result.message or "the connector reported failure"
        )
    elif not check.clean:
        left = ", ".join(f"{table}: {n}" for table, n in sorted(check.remaining.items()) if n)
        finish_run(
            session,
            run,
            RunStatus.FAILED,
            f"verification found rows still matching after erasure ({left})",
        )
    else:
        finish_run(session, run, RunStatus(result.outcome.value), result.message)


def _connector_failed(
    session: Session, run: SystemRun, exc: ConnectorError, retry: RetryPolicy | None
) -> int | None:
    """Fail the run, or with a retry policy and a transient failure, plan it again."""
    if retry is not None and exc.transient:
        return schedule_retry(session, run, str(exc), retry)
    finish_run(session, run, RunStatus.FAILED, str(exc))
    return None


def _stop_marketing(
    session: Session, systems: Systems, run: SystemRun, retry: RetryPolicy | None
) -> int | None:
    try:
        with systems.open(run.system) as connector:
            result = connector.stop_marketing(subject_of(run.request))
    except ConnectorError as exc:
        return _connector_failed(session, run, exc, retry)
    run.rows_affected = result.rows_affected
    finish_run(session, run, RunStatus(result.outcome.value), result.message)
    return None


def finish_run(
    session: Session, run: SystemRun, status: RunStatus, message: str, actor: str = "worker"
) -> None:
    """Record the outcome of one system's run, in the run and in the audit log."""
    run.status, run.message, run.finished_at = status, message, utcnow()
    record_event(
        session,
        actor,
        f"run.{status}",
        run.request.reference,
        system=run.system,
        rows_affected=run.rows_affected or {},
        remaining=run.remaining or {},
    )


def lock_request(session: Session, request_id: int) -> DataSubjectRequest:
    """Return the request, locked against other workers finishing it at the same moment."""
    return session.scalars(
        sa.select(DataSubjectRequest).where(DataSubjectRequest.id == request_id).with_for_update()
    ).one()


def close_if_finished(session: Session, request: DataSubjectRequest) -> bool:
    """Give the request its final state once every system has finished; return whether it did."""
    if request.status != Status.RUNNING:
        return False
    statuses = {RunStatus(run.status) for run in request.runs}
    if not statuses <= FINISHED:
        return False
    if statuses <= SUCCESSFUL:
        final = Status.COMPLETED
    elif statuses & SUCCESSFUL:
        final = Status.PARTIALLY_COMPLETED
    else:
        final = Status.FAILED
    if final != Status.FAILED:
        request.completed_at = utcnow()
    transition(
        session,
        request,
        final,
        actor="worker",
        systems={run.system: str(run.status) for run in request.runs},
    )
    return True


#: What a person or a remote system may confirm about a run that waited for them.
CONFIRMABLE = frozenset(
    {RunStatus.COMPLETED, RunStatus.NOT_FOUND, RunStatus.RETAINED, RunStatus.FAILED}
)


def confirm_run(
    session: Session,
    run: SystemRun,
    status: RunStatus,
    message: str,
    *,
    actor: str,
    rows_affected: dict[str, int] | None = None,
) -> bool:
    """Record what was done in a system that waited for a person or a callback.

    The run must be waiting (``action_required``).  Its request, which closed as partly
    done while it waited, runs again and closes with the new outcome; return whether it
    closed, so the caller can issue the proof.
    """
    if run.status != RunStatus.ACTION_REQUIRED:
        raise ValueError(f"{run.system} of {run.request.reference} is not waiting for anyone")
    if status not in CONFIRMABLE:
        raise ValueError(f"{status} is not an outcome one can confirm")
    request = lock_request(session, run.request_id)
    if request.status in (Status.PARTIALLY_COMPLETED, Status.FAILED):
        transition(session, request, Status.RUNNING, actor=actor, system=run.system)
    if rows_affected is not None:
        run.rows_affected = rows_affected
    finish_run(session, run, status, message, actor=actor)
    return close_if_finished(session, request)
