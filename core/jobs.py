"""Background jobs on Celery: start approved requests, run each system, build exports.

Every task is safe to run twice: it reads the state persisted in our database first and
does nothing more to a system whose run has finished.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from celery import Celery, Task, shared_task
from celery.schedules import crontab
from flask import Flask, current_app

from connectors.base import ConfigError, ConnectorError
from core.bulk_execution import (
    close_requests,
    erase_together,
    erases_together,
    load_runs,
    sort_runs,
)
from core.bulk_run import can_start, lock_batch, note_start_problem, start_members
from core.bulk_run import close_if_finished as close_batch_if_finished
from core.callbacks import overdue_runs
from core.clock import today
from core.execution import (
    FINISHED,
    close_if_finished,
    confirm_run,
    execute_run,
    lock_request,
)
from core.exports import (
    ExportRetry,
    answer_export,
    build_export,
    check_renewable,
    purge_expired_exports,
)
from core.extensions import db
from core.manual_tasks import MAIL_ERRORS as MANUAL_MAIL_ERRORS
from core.manual_tasks import chase_waiting, send_task
from core.models import (
    Channel,
    DataSubjectRequest,
    ErasureBatch,
    RequestType,
    RunStatus,
    Status,
    SystemRun,
)
from core.notify import notify_subject, send_export_ready, send_verification
from core.operations import (
    DomainError,
    due_for_reminder,
    due_for_start,
    expire_unverified,
    start_erasure,
)
from core.proof_issue import issue_proof_for
from core.queue import refresh_paused_clocks
from core.recipients import RETRIES as RECIPIENT_RETRIES
from core.recipients import backoff_seconds, notify_run, recipients_to_notify
from core.reminders import send_dpo_reminders
from core.retention import purge_expired_personal_data
from core.retries import (
    Heartbeat,
    RetryPolicy,
    claim_run,
    claim_runs,
    heartbeat_every,
    lost_runs,
    requeue_lost,
    rescue_run,
    stalled_runs,
)

log = logging.getLogger(__name__)


def init_celery(app: Flask) -> Celery:
    """Create the Celery app bound to ``app`` and keep it in ``app.extensions``."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.import_name, task_cls=FlaskTask)
    celery.conf.update(
        broker_url=app.config["BROKER_URL"],
        task_ignore_result=True,
        # A task is acknowledged only once it has finished, so a worker that dies in the
        # middle of an erasure leaves it on the queue for the next worker.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        task_always_eager=app.config["RUN_JOBS_INLINE"],
        beat_schedule={
            "start-due-erasures": {"task": "core.jobs.start_due_erasures", "schedule": 15.0},
            "remind-and-expire": {"task": "core.jobs.remind_and_expire", "schedule": 600.0},
            "purge-exports": {"task": "core.jobs.purge_exports", "schedule": 3600.0},
            # Closed requests whose retention ended lose their personal data.
            "purge-personal-data": {
                "task": "core.jobs.purge_personal_data",
                "schedule": 3600.0,
            },
            # Systems that confirm by callback and did not within their timeout.
            "fail-overdue-callbacks": {
                "task": "core.jobs.fail_overdue_callbacks",
                "schedule": 3600.0,
            },
            # Owners of systems kept by hand: reminders, and the DPOs told after a while.
            "chase-manual-tasks": {"task": "core.jobs.chase_manual_tasks", "schedule": 3600.0},
            # Runs with no progress (a worker died): requeued or failed, never left running.
            "watchdog": {
                "task": "core.jobs.watchdog",
                "schedule": float(app.config["WATCHDOG_SECONDS"]),
            },
            # The DPO's digest at the configured hour; the later hours only catch up a day
            # whose digest has not gone out (the scheduler was down, or mail failed).
            # Webhook deliveries that are due and whose task was lost (core/webhooks.py).
            "retry-webhooks": {"task": "core.webhooks.retry_due_webhooks", "schedule": 60.0},
            "send-due-mail": {"task": "core.mail_queue.send_due_mail", "schedule": 60.0},
            "remind-dpos": {
                "task": "core.jobs.remind_dpos",
                "schedule": crontab(minute=0, hour=f"{app.config['REMINDER_HOUR']}-23"),
            },
        },
        # Crontab hours are the controller's, like every date the DPO sees.
        timezone=app.config["TIMEZONE"],
        beat_schedule_filename=str(app.config["INSTANCE"] / "celerybeat-schedule"),
        include=["core.jobs", "core.webhooks", "core.mail_queue"],
    )
    celery.set_default()
    app.extensions["celery"] = celery
    return celery


def systems():
    """Return the systems of the current app."""
    return current_app.extensions["lethe.systems"]


@shared_task(name="core.jobs.start_due_erasures")
def start_due_erasures() -> int:
    """Start every approved request whose cooling-off period (if any) is over; return how many."""
    started = 0
    for request in due_for_start(db.session):
        runs = start_erasure(db.session, request)
        db.session.commit()
        if request.request_type.exports:
            export_request.delay(request.id)
        else:
            for run in runs:
                run_system.delay(run.id)
        started += 1
    return started


@shared_task(name="core.jobs.export_request")
def export_request(request_id: int) -> None:
    """Gather an access or portability request's data into its package; tell the person."""
    request = lock_request(db.session, request_id)
    if request.status != Status.RUNNING or request.runs_paused:
        db.session.rollback()
        return
    config = current_app.config
    runs = [run.id for run in request.runs]
    try:
        with Heartbeat(db.engine, runs, heartbeat_every(config["RUN_STALL_SECONDS"])):
            answer_export(db.session, systems(), request, RetryPolicy.from_config(config))
            db.session.commit()
    except ExportRetry as retry:  # a system failed for a passing reason: all again, later
        db.session.commit()
        export_request.apply_async((request_id,), countdown=retry.delay)
        return
    if request.status != Status.FAILED:  # a failed export waits for staff to retry it
        send_export_ready(request)


@shared_task(name="core.jobs.renew_export")
def renew_export(request_id: int) -> None:
    """Build a new package for a person whose package expired or was used up."""
    request = db.session.get(DataSubjectRequest, request_id)
    if request is None:
        return
    try:
        check_renewable(request)
    except DomainError:
        return  # a second click, or a package already rebuilt
    build_export(db.session, systems(), request, track_runs=False)
    db.session.commit()
    send_export_ready(request)


@shared_task(name="core.jobs.purge_exports")
def purge_exports() -> int:
    """Delete export files whose link has expired; return how many."""
    purged = purge_expired_exports(db.session)
    db.session.commit()
    return purged


@shared_task(name="core.jobs.purge_personal_data")
def purge_personal_data() -> dict[str, int]:
    """Purge the personal data of closed requests whose retention ended; say how many."""
    purged = purge_expired_personal_data(db.session, current_app.config["RETENTION_DAYS"])
    db.session.commit()
    return purged


@shared_task(name="core.jobs.run_system")
def run_system(run_id: int) -> None:
    """Erase one request's subject from one system, then close the request if all are done."""
    run = db.session.get(SystemRun, run_id)
    # Only a planned run is run: a task delivered twice finds it running or finished.
    if run is None or run.status != RunStatus.PLANNED or run.request.status != Status.RUNNING:
        return
    if run.request.runs_paused:  # staff paused the request: resuming it enqueues the run
        return
    if not claim_run(db.session, run):
        return  # another worker claimed it a moment ago
    db.session.commit()
    config = current_app.config
    with Heartbeat(db.engine, [run.id], heartbeat_every(config["RUN_STALL_SECONDS"])):
        delay = execute_run(db.session, systems(), run, RetryPolicy.from_config(config))
        db.session.commit()
    if delay is not None:  # a passing failure: the run is planned again, tried after delay
        run_system.apply_async((run.id,), countdown=delay)
        return
    if run.status == RunStatus.COMPLETED:  # Art. 19: before the proof, which names them
        notify_recipients.delay(run.id)
    request = lock_request(db.session, run.request_id)
    closed = close_if_finished(db.session, request)
    db.session.commit()
    if closed:
        announce_closed(request)
    if run.status == RunStatus.ACTION_REQUIRED and run.connector == "manual":
        send_manual_task.delay(run.id)


@shared_task(name="core.jobs.run_system_batch")
def run_system_batch(run_ids: list[int]) -> None:
    """Erase a chunk of people from one system together, then close their requests.

    Runs that cannot go together are handed to ``run_system``; if the system fails the
    batch as a whole, every run it held is too.
    """
    together, alone = sort_runs(db.session, systems(), run_ids)
    claimed = [run.id for run in claim_runs(db.session, together)] if together else []
    db.session.commit()
    for run_id in alone:
        run_system.delay(run_id)
    if not claimed:
        return  # a task delivered twice, or runs another worker took
    config = current_app.config
    with Heartbeat(db.engine, claimed, heartbeat_every(config["RUN_STALL_SECONDS"])):
        erased = erase_together(db.session, systems(), claimed)
        db.session.commit()
    if not erased:  # each run is planned again, with the single run's retries
        for run_id in claimed:
            run_system.delay(run_id)
        return
    runs = load_runs(db.session, claimed)
    for run in runs:
        if recipients_to_notify(systems(), run):  # Art. 19: before the proof, which names them
            notify_recipients.delay(run.id)
    closed = close_requests(db.session, {run.request_id for run in runs})
    db.session.commit()
    for request in closed:
        announce_closed(request)


@shared_task(name="core.jobs.send_manual_task")
def send_manual_task(run_id: int) -> bool:
    """Email the owner of a system kept by hand the task of a waiting run, once."""
    run = db.session.get(SystemRun, run_id)
    if run is None:
        return False
    try:
        sent = send_task(db.session, systems(), run)
    except MANUAL_MAIL_ERRORS:
        # chase_manual_tasks sends it at its next run.
        log.exception("the manual task email could not be sent")
        db.session.rollback()
        return False
    db.session.commit()
    return sent


@shared_task(name="core.jobs.chase_manual_tasks")
def chase_manual_tasks() -> dict:
    """Remind owners of systems kept by hand and escalate to the DPOs, as configured."""
    return chase_waiting(db.session, systems())


@shared_task(name="core.jobs.notify_recipients", bind=True, max_retries=RECIPIENT_RETRIES)
def notify_recipients(self: Task, run_id: int) -> int:
    """Tell the recipients of a system that erased someone (Art. 19); retry failures later."""
    run = db.session.get(SystemRun, run_id)
    if run is None:
        return 0
    retries = self.request.retries or 0
    failed = notify_run(db.session, systems(), run, last_try=retries >= RECIPIENT_RETRIES)
    if failed and retries < RECIPIENT_RETRIES:
        raise self.retry(countdown=backoff_seconds(retries))
    return failed


@shared_task(name="core.jobs.confirm_pending")
def confirm_pending(
    run_id: int,
    status: str,
    message: str,
    actor: str,
    rows_affected: dict[str, int] | None = None,
) -> bool:
    """Record what a person or a callback confirms about a waiting run; close its request.

    Return whether the request closed (its proof is then issued).
    """
    run = db.session.get(SystemRun, run_id)
    closed = confirm_run(
        db.session, run, RunStatus(status), message, actor=actor, rows_affected=rows_affected
    )
    db.session.commit()
    if run.status == RunStatus.COMPLETED:
        notify_recipients.delay(run.id)
    if closed:
        announce_closed(run.request)
    return closed


def announce_closed(request: DataSubjectRequest) -> None:
    """After a request closed: issue its proof or tell the person; close its batch."""
    if request.status == Status.FAILED:
        if request.batch_id is not None:
            close_batch.delay(request.batch_id)  # a failed erasure owes no proof
        return
    if request.request_type == RequestType.ERASURE:
        issue_proof.delay(request.id)
    else:
        notify_subject(request, "marketing_stopped")


@shared_task(name="core.jobs.issue_proof")
def issue_proof(request_id: int) -> None:
    """Issue the signed proof of deletion of a finished request and tell the subject."""
    request = db.session.get(DataSubjectRequest, request_id)
    if request is None or request.completed_at is None:
        return
    if any(proof.issued_at >= request.completed_at for proof in request.proofs):
        return  # already proven; a request that closed again later gets a new proof
    issue_proof_for(db.session, request)
    db.session.commit()
    if request.channel == Channel.BULK:
        # The controller decided on a bulk erasure: nobody asked, so nobody is emailed.
        close_batch.delay(request.batch_id)
        return
    # A request closes partly done while a system waits for a person: it closes again,
    # with a new proof and this email, once they confirm.
    done = request.status == Status.COMPLETED
    notify_subject(request, "completed" if done else "partly_done")


@shared_task(name="core.jobs.remind_and_expire")
def remind_and_expire() -> tuple[int, int]:
    """Remind people who have not confirmed after a day; expire links never used.

    Also moves the stored due dates of paused requests, so the queue sorts them right.
    """
    expired = expire_unverified(db.session)
    refresh_paused_clocks(db.session, today())
    db.session.commit()
    reminded = 0
    for request in due_for_reminder(db.session):
        send_verification(request, reminder=True)
        db.session.commit()  # one by one: a mail failure must not resend the others
        reminded += 1
    return reminded, len(expired)


@shared_task(name="core.jobs.remind_dpos")
def remind_dpos() -> str:
    """Email DPOs and admins today's digest of overdue and soon-due requests, once a day."""
    return str(send_dpo_reminders(db.session).outcome)


@shared_task(name="core.jobs.start_batch")
def start_batch(batch_id: int) -> None:
    """Create one erasure per person of an approved bulk erasure, chunk by chunk, and run them."""
    batch = db.session.get(ErasureBatch, batch_id)
    if batch is None or not can_start(batch):
        return
    try:
        for chunk in start_members(db.session, systems(), batch):
            db.session.commit()  # each chunk stands on its own: a later failure resumes here
            for system, run_ids in chunk.items():
                queue_chunk(system, run_ids)
    except (ConfigError, ConnectorError, DomainError) as exc:
        db.session.rollback()
        note_start_problem(db.session, batch, str(exc))
        db.session.commit()
        return
    db.session.commit()
    close_batch.delay(batch_id)  # every run may already have finished


def queue_chunk(system: str, run_ids: list[int]) -> None:
    """Queue one system's runs of a chunk: in one task if it erases people together."""
    if erases_together(systems(), system):
        run_system_batch.delay(run_ids)
        return
    for run_id in run_ids:
        run_system.delay(run_id)


@shared_task(name="core.jobs.close_batch")
def close_batch(batch_id: int) -> None:
    """Give a bulk erasure its outcome and signed summary once every person is done."""
    batch = lock_batch(db.session, batch_id)
    if batch is not None:
        close_batch_if_finished(db.session, batch)
    db.session.commit()


@shared_task(name="core.jobs.fail_overdue_callbacks")
def fail_overdue_callbacks() -> int:
    """Fail the runs whose system did not call back within its timeout; return how many."""
    overdue = overdue_runs(db.session, systems())
    db.session.rollback()  # only read: each confirmation has its own transaction
    for run_id, message in overdue:
        confirm_pending.delay(run_id, "failed", message, actor="scheduler")
    return len(overdue)


@shared_task(name="core.jobs.watchdog")
def watchdog() -> dict[str, int]:
    """Requeue or fail the runs with no progress for too long; close requests left running.

    Return how many runs were requeued and failed, and how many requests it closed.
    """
    stall = current_app.config["RUN_STALL_SECONDS"]
    policy = RetryPolicy.from_config(current_app.config)
    requeued: list[SystemRun] = []
    failed = 0
    for run in stalled_runs(db.session, stall):
        if rescue_run(db.session, run, stall, policy):
            requeued.append(run)
        else:
            failed += 1
    db.session.commit()
    for run in lost_runs(db.session, stall):
        requeue_lost(db.session, run)
        requeued.append(run)
    db.session.commit()
    exports: set[int] = set()
    for run in requeued:
        if run.request.request_type.exports:  # an export gathers all its systems again
            exports.add(run.request_id)
        else:
            run_system.delay(run.id)
    for request_id in sorted(exports):
        export_request.delay(request_id)
    # A request still running whose systems have all finished (its last worker died
    # between finishing a run and closing the request) is closed now.
    db.session.expire_all()
    running = db.session.scalars(
        sa.select(DataSubjectRequest).where(DataSubjectRequest.status == Status.RUNNING)
    ).all()
    stuck = []
    for request in running:
        if not {RunStatus(run.status) for run in request.runs} <= FINISHED:
            continue
        if request.request_type.exports:  # its package was never made: make it now
            if request.id not in exports:
                export_request.delay(request.id)
            continue
        stuck.append(request.id)
    db.session.rollback()  # read again under the lock: a worker may be closing it now
    closed = 0
    for request_id in stuck:
        request = lock_request(db.session, request_id)
        done = close_if_finished(db.session, request)
        db.session.commit()
        if done:
            closed += 1
            announce_closed(request)
    return {"requeued": len(requeued), "failed": failed, "closed": closed}
