"""Retry a system that failed for a passing reason, and never leave a run "running".

A connector marks a failure worth retrying with ``ConnectorError(transient=True)``
(connection refused, timeout, deadlock, HTTP 429/5xx).  Such a run goes back to planned
and is tried again after an exponential backoff with full jitter, a bounded number of
times in all; after the last attempt it fails with the connector's message.

A worker running a system beats a heartbeat into the run while the connector works.  The
watchdog finds runs marked running whose heartbeat stopped (the worker died) and requeues
them while attempts are left, or fails them with a message saying so.  It also finds
planned runs still waiting long after they were due (their task was lost, say by a broker
that restarted without keeping its queues) and puts them on the queue again.  A task that
arrives twice does no harm: a worker claims a planned run with one conditional update, so
only one of them runs it.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.audit import record_event
from core.models import DataSubjectRequest, RunStatus, Status, SystemRun, utcnow
from core.operations import DomainError

log = logging.getLogger(__name__)


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
    run.status, run.queued_at = RunStatus.PLANNED, utcnow() + timedelta(seconds=delay)
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


def stalled_runs(session: Session, stall_seconds: int) -> list[SystemRun]:
    """Return the runs marked running with no sign of life for ``stall_seconds``, locked."""
    limit = utcnow() - timedelta(seconds=stall_seconds)
    last_sign = sa.func.coalesce(SystemRun.heartbeat_at, SystemRun.started_at)
    return list(
        session.scalars(
            sa.select(SystemRun)
            .where(SystemRun.status == RunStatus.RUNNING, last_sign < limit)
            .order_by(SystemRun.id)
            .with_for_update()
        )
    )


def lost_runs(session: Session, stall_seconds: int) -> list[SystemRun]:
    """Return planned runs of running, unpaused requests still waiting ``stall_seconds``
    after they were due: their task was lost on the way to a worker."""
    limit = utcnow() - timedelta(seconds=stall_seconds)
    return list(
        session.scalars(
            sa.select(SystemRun)
            .join(SystemRun.request)
            .where(
                SystemRun.status == RunStatus.PLANNED,
                sa.or_(SystemRun.queued_at.is_(None), SystemRun.queued_at < limit),
                DataSubjectRequest.status == Status.RUNNING,
                DataSubjectRequest.runs_paused.is_(False),
            )
            .order_by(SystemRun.id)
        )
    )


def requeue_lost(
    session: Session, run: SystemRun, reason: str = "task lost", actor: str = "watchdog"
) -> None:
    """Put ``run`` on the queue again, as planned, and record why (its task was lost, its
    worker went silent, or the batch it was erased in failed)."""
    run.status, run.queued_at = RunStatus.PLANNED, utcnow()
    record_event(
        session,
        actor,
        "run.requeued",
        run.request.reference,
        system=run.system,
        attempt=run.attempts,
        reason=reason,
    )


def _claim(session: Session, run_id: int, now: datetime) -> bool:
    """Mark one run running if it is still planned, with one conditional update."""
    return bool(
        session.execute(
            sa.update(SystemRun)
            .where(SystemRun.id == run_id, SystemRun.status == RunStatus.PLANNED)
            .values(
                status=RunStatus.RUNNING,
                attempts=SystemRun.attempts + 1,
                started_at=now,
                heartbeat_at=now,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
    )


def claim_run(session: Session, run: SystemRun) -> bool:
    """Mark ``run`` running for this worker if it is still planned; return whether it was.

    One conditional update, so two workers handed the same run (a task delivered twice, or
    requeued by the watchdog while the first was still queued) never both run it.
    """
    if not _claim(session, run.id, utcnow()):
        session.rollback()
        return False
    session.refresh(run)
    from core.execution import record_start  # core.execution calls this module

    record_start(session, run)
    return True


def claim_runs(session: Session, runs: list[SystemRun]) -> list[SystemRun]:
    """Claim each of ``runs`` still planned, as :func:`claim_run` does; return those claimed.

    The runs are claimed in the order of their ids, so two workers claiming overlapping
    chunks wait for each other instead of deadlocking; each claim is its own conditional
    update, so a run another worker holds is simply left out.
    """
    now = utcnow()
    claimed = [run for run in sorted(runs, key=lambda r: r.id) if _claim(session, run.id, now)]
    if not claimed:
        return []
    # Read the claimed rows back at once (attempts went up in the database).
    session.scalars(
        sa.select(SystemRun)
        .where(SystemRun.id.in_([run.id for run in claimed]))
        .execution_options(populate_existing=True)
    ).all()
    from core.execution import record_start

    for run in claimed:
        record_start(session, run)
    return claimed


class Heartbeat:
    """Beat into runs every ``every`` seconds, from a thread, while a worker runs them.

    It writes through its own connection of ``engine``, so it neither waits for nor joins
    the transaction of the task, and stops as soon as the block ends.
    """

    def __init__(self, engine: sa.Engine, run_ids: list[int], every: float) -> None:
        self.engine, self.run_ids, self.every = engine, run_ids, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.update(SystemRun)
                        .where(
                            SystemRun.id.in_(self.run_ids), SystemRun.status == RunStatus.RUNNING
                        )
                        .values(heartbeat_at=utcnow())
                    )
            except sa.exc.SQLAlchemyError:
                # Our database is away for a moment; the next beat tries again, and a run
                # with no beat for long enough is the watchdog's to rescue.
                log.warning("runs %s: the heartbeat could not be written", self.run_ids)


def heartbeat_every(stall_seconds: int) -> float:
    """Return how often to beat so that a living worker is never taken for dead."""
    return max(0.5, min(60.0, stall_seconds / 5))


def rescue_run(session: Session, run: SystemRun, stall_seconds: int, policy: RetryPolicy) -> bool:
    """Requeue a stalled run while attempts are left (True), or fail it visibly (False)."""
    from core.execution import finish_run

    silence = _duration(stall_seconds)
    if run.attempts < policy.max_attempts:
        run.message = f"no sign of life from its worker for {silence}; requeued"
        requeue_lost(session, run, reason="worker silent")
        return True
    finish_run(
        session,
        run,
        RunStatus.FAILED,
        f"no sign of life from its worker for {silence} after {run.attempts} attempts; "
        "the worker may have died — retry this system",
        actor="watchdog",
    )
    return False


def _duration(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


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
        run.queued_at = utcnow()
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
    planned = [run for run in request.runs if run.status == RunStatus.PLANNED]
    for run in planned:
        run.queued_at = utcnow()
    return planned
