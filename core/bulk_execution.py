"""Erase a chunk of a bulk erasure from one system together: one ``erase_many``, not N.

A system whose connector says ``batch_erase`` gets a chunk's runs in one task
(``core.jobs.run_system_batch``): the runs are claimed one by one as single runs are,
erased and re-scanned together, and each run's outcome is recorded exactly as a single
run's would be.  Runs that need a person's eye go the single way: a held person, a system
that confirms by callback or cannot erase in batches.  A paused request's runs are left
planned, for resuming to queue them.  When the system fails the batch as a whole, each
run is planned again and erased on its own, with the single run's retries; erasing a
person twice changes nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from connectors.base import ConnectorError, Plan
from core.execution import close_if_finished, record_outcome
from core.holds import active_holds, hold_on
from core.models import (
    DataSubjectRequest,
    RequestType,
    RunStatus,
    Status,
    SystemRun,
)
from core.operations import subject_of
from core.retries import requeue_lost
from core.systems import Systems

log = logging.getLogger(__name__)


def erases_together(systems: Systems, system: str) -> bool:
    """Return whether ``system`` erases a batch of people at once (and confirms no callback)."""
    if system not in systems.configs:
        return False
    with systems.open(system) as connector:  # reads the configuration only
        return connector.batch_erase and connector.callback_timeout is None


def load_runs(session: Session, run_ids: Sequence[int]) -> list[SystemRun]:
    """Return the runs with their requests and identities, in the order of their ids."""
    return list(
        session.scalars(
            sa.select(SystemRun)
            .where(SystemRun.id.in_(run_ids))
            .order_by(SystemRun.id)
            .options(selectinload(SystemRun.request).selectinload(DataSubjectRequest.identity))
        )
    )


def sort_runs(
    session: Session, systems: Systems, run_ids: Sequence[int]
) -> tuple[list[SystemRun], list[int]]:
    """Return the runs to erase together, and the ids of those to run one by one.

    Runs a single run would leave alone (finished, already running, of a request not
    running or paused) are in neither.
    """
    runs = [
        run
        for run in load_runs(session, run_ids)
        if run.status == RunStatus.PLANNED
        and run.request.status == Status.RUNNING
        and not run.request.runs_paused
    ]
    if not runs:
        return [], []
    system = runs[0].system
    together_ok = erases_together(systems, system)
    holds = active_holds(session)  # few: legal holds are the exception
    together, alone = [], []
    for run in runs:
        # A hold placed after approval keeps the data: the single run records it so.
        mine = [hold for hold in holds if hold.identity_id in (None, run.request.identity_id)]
        held = run.retained_ground is not None or hold_on(mine, run.system) is not None
        if (
            together_ok
            and run.system == system
            and run.request.request_type == RequestType.ERASURE
            and not held
        ):
            together.append(run)
        else:
            alone.append(run.id)
    return together, alone


def erase_together(session: Session, systems: Systems, run_ids: Sequence[int]) -> bool:
    """Erase the people of one system's claimed runs together; record each run's outcome.

    Return False when the system failed the batch as a whole: each run is then planned
    again, for the caller to queue as a single run.
    """
    runs = load_runs(session, run_ids)
    system = runs[0].system
    try:
        subjects = [subject_of(run.request) for run in runs]
        plans = [Plan.from_dict(run.plan) for run in runs]
        work = list(zip(subjects, plans, strict=True))
        with systems.open(system) as connector:
            results = _one_each(connector.erase_many(work), runs, "erased")
            checks = _one_each(connector.verify_many(subjects), runs, "re-scanned")
    except Exception as exc:  # whatever broke, each person is erased again on their own
        _fall_back(session, runs, exc)
        return False
    for run, result, check in zip(runs, results, checks, strict=True):
        record_outcome(session, run, result, check)
    return True


def _one_each(results: list, runs: list[SystemRun], verb: str) -> list:
    if len(results) != len(runs):
        raise ConnectorError(f"{runs[0].system}: {verb} {len(results)} of {len(runs)} people")
    return results


def _fall_back(session: Session, runs: list[SystemRun], exc: Exception) -> None:
    # A connector's message holds no personal data; anything else is named by its type
    # only, since a driver's message may quote the values it was given.
    why = str(exc) if isinstance(exc, ConnectorError) else type(exc).__name__
    log.warning(
        "%s: erasing %d people together failed (%s); each is erased on their own",
        runs[0].system,
        len(runs),
        why,
    )
    for run in runs:
        requeue_lost(session, run, reason=f"batch failed: {why}"[:200], actor="worker")


def close_requests(session: Session, request_ids: set[int]) -> list[DataSubjectRequest]:
    """Close each request whose systems have all finished; return those closed.

    The requests are locked in the order of their ids, as another chunk's worker does.
    """
    requests = session.scalars(
        sa.select(DataSubjectRequest)
        .where(DataSubjectRequest.id.in_(request_ids))
        .order_by(DataSubjectRequest.id)
        .with_for_update()
        .options(selectinload(DataSubjectRequest.runs))
    ).all()
    return [request for request in requests if close_if_finished(session, request)]
