"""A system that fails for a passing reason is tried again, a bounded number of times; the
watchdog leaves no run and no request "running" once a worker has died."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from connectors.base import (
    ConnectorError,
    EraseResult,
    Outcome,
    Plan,
    Record,
    Subject,
)
from core.config import ConfigurationError, load_config
from core.extensions import db
from core.jobs import run_system, watchdog
from core.models import AuditEvent, DataSubjectRequest, RunStatus, Status, SystemRun, utcnow
from core.retries import Heartbeat, RetryPolicy, claim_run
from core.systems import SystemConfig
from tests.fakes import OneTableConnector
from tests.flows import approve, login, submit, verify_latest


class FlakyConnector(OneTableConnector):
    """A system that fails ``transient_failures`` times, then erases (a real subclass).

    ``transient_failures = -1`` fails for a passing reason every time; ``permanent`` fails
    for good.  Every erase call is counted in ``calls``, across instances.
    """

    name = "flaky"
    table = "tickets"
    calls: list[str] = []

    def erase(self, subject: Subject, plan: Plan) -> EraseResult:
        FlakyConnector.calls.append(self.system)
        if self.settings.get("permanent"):
            raise ConnectorError(f"{self.system}: the API key was refused; set a new one")
        failures = self.settings["transient_failures"]
        if failures < 0 or FlakyConnector.calls.count(self.system) <= failures:
            raise ConnectorError(f"{self.system}: connection refused", transient=True)
        return EraseResult(Outcome.COMPLETED, rows_affected={"tickets": 1})


@pytest.fixture
def flaky(app):
    """Return a function that adds the system ``helpdesk`` with the given settings."""
    systems = app.extensions["lethe.systems"]
    systems.classes["flaky"] = FlakyConnector
    FlakyConnector.calls = []
    # No waiting between attempts in tests: eager tasks run at once anyway.
    app.config.update(RETRY_BASE_SECONDS=0, RETRY_MAX_SECONDS=0)

    def add(**settings: object) -> None:
        systems.configs["helpdesk"] = SystemConfig("helpdesk", "flaky", "Helpdesk", settings)

    yield add
    systems.configs.pop("helpdesk", None)


def only_request() -> DataSubjectRequest:
    db.session.expire_all()
    return db.session.scalars(sa.select(DataSubjectRequest)).one()


def helpdesk_run() -> SystemRun:
    return next(run for run in only_request().runs if run.system == "helpdesk")


def events(action: str) -> list[AuditEvent]:
    return list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action)))


def erase_one(app, client) -> str:
    """Submit, verify and approve one erasure; return its reference."""
    submit(client, "alice@example.com")
    verify_latest(app, client)
    staff = app.test_client()
    login(staff)
    with app.app_context():
        reference = only_request().reference
    response = approve(staff, reference)
    assert response.status_code == 302, response.text
    return reference


def test_a_passing_failure_is_retried_until_the_system_answers(app, client, flaky):
    flaky(transient_failures=2)
    erase_one(app, client)
    with app.app_context():
        run = helpdesk_run()
        assert run.status == RunStatus.COMPLETED
        assert run.attempts == 3
        assert FlakyConnector.calls == ["helpdesk"] * 3
        request = only_request()
        assert request.status == Status.COMPLETED
        assert len(request.proofs) == 1
        scheduled = events("run.retry_scheduled")
        assert [e.details["attempt"] for e in scheduled] == [1, 2]
        assert {e.details["system"] for e in scheduled} == {"helpdesk"}


def test_a_system_that_never_answers_fails_after_the_last_attempt(app, client, flaky):
    app.config["RETRY_MAX_ATTEMPTS"] = 4
    flaky(transient_failures=-1)
    erase_one(app, client)
    with app.app_context():
        run = helpdesk_run()
        assert run.status == RunStatus.FAILED
        assert run.attempts == 4
        assert len(FlakyConnector.calls) == 4
        assert "connection refused" in run.message
        assert "gave up after 4 attempts" in run.message
        assert len(events("run.retry_scheduled")) == 3
        # The demo CRM erased; the helpdesk did not: the request says so and stops running.
        assert only_request().status == Status.PARTIALLY_COMPLETED


def test_a_permanent_failure_stops_the_system_at_once(app, client, flaky):
    flaky(permanent=True)
    erase_one(app, client)
    with app.app_context():
        run = helpdesk_run()
        assert run.status == RunStatus.FAILED
        assert run.attempts == 1
        assert run.message == "helpdesk: the API key was refused; set a new one"
        assert events("run.retry_scheduled") == []
        assert only_request().status == Status.PARTIALLY_COMPLETED


def test_the_backoff_grows_with_full_jitter_and_a_cap():
    policy = RetryPolicy(max_attempts=5, base_seconds=30, max_seconds=100)
    for attempts, ceiling in [(1, 30), (2, 60), (3, 100), (9, 100)]:
        delays = {policy.delay(attempts) for _ in range(300)}
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert len(delays) > 5  # jittered, not one fixed wait
    assert max(policy.delay(3) for _ in range(300)) > 60  # the wait grows


def test_retry_settings_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("LETHE_RETRY_MAX_ATTEMPTS", "0")
    with pytest.raises(ConfigurationError, match="LETHE_RETRY_MAX_ATTEMPTS must be at least 1"):
        load_config(tmp_path)
    monkeypatch.setenv("LETHE_RETRY_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("LETHE_RUN_STALL_SECONDS", "soon")
    with pytest.raises(ConfigurationError, match="LETHE_RUN_STALL_SECONDS must be a whole"):
        load_config(tmp_path)
    monkeypatch.setenv("LETHE_RUN_STALL_SECONDS", "0")
    with pytest.raises(ConfigurationError, match="LETHE_RUN_STALL_SECONDS must be at least 1"):
        load_config(tmp_path)


def crash_during(run_id: int, *, minutes_ago: int, attempts: int) -> None:
    """Leave the state a worker killed in the middle of ``run_id`` leaves behind: its last
    heartbeat ``minutes_ago``."""
    run = db.session.get(SystemRun, run_id)
    run.status, run.attempts, run.finished_at = RunStatus.RUNNING, attempts, None
    run.started_at = utcnow() - timedelta(minutes=minutes_ago + 5)
    run.heartbeat_at = utcnow() - timedelta(minutes=minutes_ago)
    run.request.status = Status.RUNNING
    run.request.completed_at = None
    db.session.commit()


def test_the_watchdog_requeues_a_run_whose_worker_died(app, client, flaky):
    flaky(transient_failures=0)
    erase_one(app, client)
    with app.app_context():
        proofs = len(only_request().proofs)
        crash_during(helpdesk_run().id, minutes_ago=60, attempts=1)
        assert watchdog() == {"requeued": 1, "failed": 0, "closed": 0}
        run = helpdesk_run()
        assert run.status == RunStatus.COMPLETED and run.attempts == 2
        request = only_request()
        assert request.status == Status.COMPLETED
        assert len(request.proofs) == proofs + 1  # it closed again: a new proof
        (requeued,) = events("run.requeued")
        assert requeued.actor == "watchdog" and requeued.details["system"] == "helpdesk"


def test_the_watchdog_fails_a_stalled_run_without_attempts_left(app, client, flaky):
    app.config["RETRY_MAX_ATTEMPTS"] = 2
    flaky(transient_failures=0)
    erase_one(app, client)
    with app.app_context():
        crash_during(helpdesk_run().id, minutes_ago=11, attempts=2)
        assert watchdog() == {"requeued": 0, "failed": 1, "closed": 1}
        run = helpdesk_run()
        assert run.status == RunStatus.FAILED
        assert run.message == (
            "no sign of life from its worker for 10 min after 2 attempts; "
            "the worker may have died — retry this system"
        )
        assert only_request().status == Status.PARTIALLY_COMPLETED


def test_no_request_stays_running_past_the_watchdog_limit(app, client, flaky):
    flaky(transient_failures=0)
    erase_one(app, client)
    with app.app_context():
        # A run whose worker beat a minute ago is left to its worker, however long ago
        # it started.
        crash_during(helpdesk_run().id, minutes_ago=1, attempts=1)
        assert watchdog() == {"requeued": 0, "failed": 0, "closed": 0}
        assert helpdesk_run().status == RunStatus.RUNNING
        # Past the limit, whatever happens, nothing is left running.
        crash_during(helpdesk_run().id, minutes_ago=11, attempts=5)
        watchdog()
        db.session.expire_all()
        running_runs = db.session.scalars(
            sa.select(SystemRun).where(SystemRun.status == RunStatus.RUNNING)
        ).all()
        assert running_runs == []
        assert only_request().status != Status.RUNNING


def test_the_watchdog_closes_a_request_whose_systems_all_finished(app, client, flaky):
    flaky(transient_failures=0)
    erase_one(app, client)
    with app.app_context():
        request = only_request()
        proofs = len(request.proofs)
        # The worker died after finishing the last run, before closing the request.
        request.status, request.completed_at = Status.RUNNING, None
        db.session.commit()
        assert watchdog() == {"requeued": 0, "failed": 0, "closed": 1}
        request = only_request()
        assert request.status == Status.COMPLETED
        assert len(request.proofs) == proofs + 1


def lose_task_of(run_id: int, *, minutes_ago: int) -> None:
    """Leave the state a broker that lost the queued task of ``run_id`` leaves behind."""
    run = db.session.get(SystemRun, run_id)
    run.status, run.finished_at = RunStatus.PLANNED, None
    run.queued_at = utcnow() - timedelta(minutes=minutes_ago)
    run.request.status, run.request.completed_at = Status.RUNNING, None
    db.session.commit()


def test_a_planned_run_whose_task_was_lost_is_queued_again(app, client, flaky):
    flaky(transient_failures=0)
    erase_one(app, client)
    with app.app_context():
        proofs = len(only_request().proofs)
        # Queued a minute ago: its task may well still be on its way to a worker.
        lose_task_of(helpdesk_run().id, minutes_ago=1)
        assert watchdog() == {"requeued": 0, "failed": 0, "closed": 0}
        assert helpdesk_run().status == RunStatus.PLANNED
        # Ten minutes after it was due, nobody has it: it goes on the queue again.
        lose_task_of(helpdesk_run().id, minutes_ago=11)
        assert watchdog()["requeued"] == 1
        run = helpdesk_run()
        assert run.status == RunStatus.COMPLETED
        assert FlakyConnector.calls == ["helpdesk", "helpdesk"]
        request = only_request()
        assert request.status == Status.COMPLETED
        assert len(request.proofs) == proofs + 1
        (requeued,) = events("run.requeued")
        assert requeued.details == {
            "system": "helpdesk",
            "attempt": 1,
            "reason": "task lost",
        }


def test_a_paused_request_keeps_its_planned_runs_off_the_queue(app, client, flaky):
    flaky(transient_failures=0)
    erase_one(app, client)
    with app.app_context():
        lose_task_of(helpdesk_run().id, minutes_ago=60)
        only_request().runs_paused = True
        db.session.commit()
        assert watchdog()["requeued"] == 0
        assert helpdesk_run().status == RunStatus.PLANNED
        assert FlakyConnector.calls == ["helpdesk"]


def test_a_task_delivered_twice_runs_the_system_once(app, client, flaky):
    flaky(transient_failures=0)
    erase_one(app, client)
    with app.app_context():
        lose_task_of(helpdesk_run().id, minutes_ago=0)
        run_id = helpdesk_run().id
        # Two workers load the same planned run before either claims it.
        other = Session(db.engine)
        try:
            theirs = other.get(SystemRun, run_id)
            assert theirs.status == RunStatus.PLANNED
            assert claim_run(db.session, helpdesk_run())
            db.session.commit()
            assert not claim_run(other, theirs)
        finally:
            other.close()
        run = helpdesk_run()
        assert run.status == RunStatus.RUNNING and run.attempts == 2
        started = [e for e in events("run.started") if e.details["system"] == "helpdesk"]
        assert len(started) == 2  # the first run's start, and this one: not a third


def test_a_task_arriving_for_a_run_already_running_leaves_it_alone(app, client, flaky):
    flaky(transient_failures=0)
    erase_one(app, client)
    with app.app_context():
        crash_during(helpdesk_run().id, minutes_ago=0, attempts=1)
        run_system(helpdesk_run().id)  # redelivered while its first worker still works
        run = helpdesk_run()
        assert run.status == RunStatus.RUNNING and run.attempts == 1
        assert FlakyConnector.calls == ["helpdesk"]


def test_the_heartbeat_keeps_a_long_run_from_being_taken_for_dead(app, client, flaky):
    flaky(transient_failures=0)
    erase_one(app, client)
    with app.app_context():
        crash_during(helpdesk_run().id, minutes_ago=60, attempts=1)
        run_id = helpdesk_run().id
        with Heartbeat(db.engine, [run_id], every=0.05):
            deadline = time.monotonic() + 10
            while helpdesk_run().heartbeat_at < utcnow() - timedelta(minutes=1):
                assert time.monotonic() < deadline, "no heartbeat was written"
                time.sleep(0.05)
        db.session.rollback()
        assert watchdog() == {"requeued": 0, "failed": 0, "closed": 0}
        assert helpdesk_run().status == RunStatus.RUNNING


class FlakyExports(FlakyConnector):
    """A system whose export fails for a passing reason ``transient_failures`` times."""

    name = "flaky-exports"
    exported: list[str] = []

    def export(self, subject: Subject) -> Iterator[Record]:
        FlakyExports.exported.append(self.system)
        if FlakyExports.exported.count(self.system) <= self.settings["transient_failures"]:
            raise ConnectorError(f"{self.system}: timed out", transient=True)
        yield Record(table="tickets", data={"id": 7, "subject": "Refund"})


def test_an_export_that_fails_for_a_passing_reason_is_built_again(app, client, flaky):
    app.extensions["lethe.systems"].classes["flaky-exports"] = FlakyExports
    FlakyExports.exported = []
    app.extensions["lethe.systems"].configs["helpdesk"] = SystemConfig(
        "helpdesk", "flaky-exports", "Helpdesk", {"transient_failures": 2}
    )
    submit(client, "alice@example.com", "access")
    verify_latest(app, client)
    staff = app.test_client()
    login(staff)
    with app.app_context():
        reference = only_request().reference
    assert approve(staff, reference).status_code == 302
    with app.app_context():
        request = only_request()
        assert request.status == Status.COMPLETED
        assert FlakyExports.exported == ["helpdesk"] * 3
        run = helpdesk_run()
        assert run.status == RunStatus.COMPLETED and run.attempts == 3
        assert run.rows_affected == {"tickets": 1}
        # One package, whole: no half package was left from the failed attempts.
        (package,) = request.exports
        assert package.summary["systems"]["helpdesk"]["tables"] == {"tickets": 1}
        assert len(list(app.config["EXPORT_DIR"].iterdir())) == 1
        assert [e.details["attempt"] for e in events("run.retry_scheduled")] == [1, 2]
