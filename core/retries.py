"""Retry a system that failed for a passing reason, and never leave a run "running".

A connector marks a failure worth retrying with ``ConnectorError(transient=True)``
(connection refused, timeout, deadlock, HTTP 429/5xx).  Such a run goes back to planned
and is tried again after an exponential backoff with full jitter, a bounded number of
times in all; after the last attempt it fails with the connector's message.

The watchdog finds runs that have been running for longer than a worker ever needs (the
worker died, or the task was lost) and requeues them while attempts are left, or fails
them with a message saying so.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.audit import record_event
from core.models import DataSubjectRequest, RunStatus, Status, SystemRun, utcnow
from core.operations import DomainError


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long apart a transient failure is tried again."""

    max_attempts: int = 5
    base_seconds: int = 30
    max_seconds: int = 3600

    @classmethod
    def from_config(cls, config: dict) -> RetryPolicy:
        return cls(
            max_attempts=config["RETRY_MAX_ATTEMPTS"],
            base_seconds=config["RETRY_BASE_SECONDS"],
            max_seconds=config["RETRY_MAX_SECONDS"],
        )

    def delay(self, attempts: int) -> int:
        """Return the wait in whole seconds before the attempt after ``attempts`` (full jitter)."""
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** max(attempts - 1, 0))
        return int(random.uniform(0, ceiling))  # noqa: S311 - jitter, not a secret


def schedule_retry(
    session: Session, run: SystemRun, message: str, policy: RetryPolicy
) -> int | None:
    """Put ``run`` back to planned after a transient failure; return the delay, or None.

    None means no attempt is left: the run then fails, saying how many attempts were made.
    """
    from core.execution import finish_run  # core.execution calls this module

    if run.attempts >= policy.max_attempts:
        finish_run(
            session,
            run,
            RunStatus.FAILED,
            f"{message} (gave up after {run.attempts} attempts)",
        )
        return None
    delay = policy.delay(run.attempts)
    run.status = RunStatus.PLANNED
    run.message = f"retrying in {delay} s: {message}"
    record_event(
        session,
        "worker",
        "run.retry_scheduled",
        run.request.reference,
        system=run.system,
        attempt=run.attempts,
        delay_seconds=delay,
    )
    return delay


def stalled_runs(session: Session, stall_minutes: int) -> list[SystemRun]:
    """Return the runs marked running longer ago than ``stall_minutes``, locked."""
    limit = utcnow() - timedelta(minutes=stall_minutes)
    return list(
        session.scalars(
            sa.select(SystemRun)
            .where(SystemRun.status == RunStatus.RUNNING, SystemRun.started_at < limit)
            .order_by(SystemRun.id)
            .with_for_update()
        )
    )


def rescue_run(session: Session, run: SystemRun, stall_minutes: int, policy: RetryPolicy) -> bool:
    """Requeue a stalled run while attempts are left (True), or fail it visibly (False)."""
    from core.execution import finish_run

    if run.attempts < policy.max_attempts:
        run.status = RunStatus.PLANNED
        run.message = f"no progress for {stall_minutes} minutes; requeued"
        record_event(
            session,
            "watchdog",
            "run.requeued",
            run.request.reference,
            system=run.system,
            attempt=run.attempts,
        )
        return True
    finish_run(
        session,
        run,
        RunStatus.FAILED,
        f"no progress for {stall_minutes} minutes; the worker may have died — retry this system",
        actor="watchdog",
    )
    return False


#: Request states from which staff may retry a failed system.
RETRYABLE_REQUESTS = frozenset({Status.RUNNING, Status.FAILED, Status.PARTIALLY_COMPLETED})


def retry_runs(
    session: Session, request: DataSubjectRequest, runs: list[SystemRun], actor: str
) -> list[SystemRun]:
    """Plan the failed ``runs`` of ``request`` again, at a person's word; return them.

    The request runs again (and closes again, with a new proof, once they finish).  Each
    retried run gets a fresh budget of attempts.  Raise ``DomainError`` when nothing can
    be retried.
    """
    from core.execution import lock_request
    from core.lifecycle import transition

    request = lock_request(session, request.id)
    if request.status not in RETRYABLE_REQUESTS:
        raise DomainError(f"a {request.status.replace('_', ' ')} request has nothing to retry")
    runs = [run for run in runs if run.status == RunStatus.FAILED]
    if not runs:
        raise DomainError("no failed system to retry")
    if request.status != Status.RUNNING:
        transition(
            session, request, Status.RUNNING, actor=actor, systems=[run.system for run in runs]
        )
    for run in runs:
        record_event(
            session,
            actor,
            "run.retry_requested",
            request.reference,
            system=run.system,
            previous_attempts=run.attempts,
        )
        run.status, run.attempts, run.finished_at = RunStatus.PLANNED, 0, None
        run.message = "retry requested"
    return runs


#: Request states whose systems may still run, so that pausing them means something.
PAUSABLE_REQUESTS = frozenset(
    {Status.APPROVED, Status.RUNNING, Status.FAILED, Status.PARTIALLY_COMPLETED}
)


def pause_runs(session: Session, request: DataSubjectRequest, actor: str) -> None:
    """Pause ``request``: no system of it starts until resumed; running ones finish."""
    if request.status not in PAUSABLE_REQUESTS:
        raise DomainError(f"a {request.status.replace('_', ' ')} request has no systems to pause")
    if request.runs_paused:
        raise DomainError("the request is already paused")
    request.runs_paused = True
    record_event(session, actor, "request.runs_paused", request.reference)


def resume_runs(session: Session, request: DataSubjectRequest, actor: str) -> list[SystemRun]:
    """Resume a paused request; return its planned runs, for the caller to enqueue."""
    if not request.runs_paused:
        raise DomainError("the request is not paused")
    request.runs_paused = False
    record_event(session, actor, "request.runs_resumed", request.reference)
    if request.status != Status.RUNNING:
        return []
    return [run for run in request.runs if run.status == RunStatus.PLANNED]
