"""A system that erases people together gets a bulk erasure one chunk at a time, while
each person keeps their own request, outcome and proof."""

from __future__ import annotations

import logging
from datetime import timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from core.audit import verify_chain
from core.bulk_run import progress
from core.extensions import db
from core.holds import place_hold
from core.jobs import run_system_batch, watchdog
from core.models import (
    AuditEvent,
    DataSubjectRequest,
    ErasureBatch,
    RunStatus,
    StaffUser,
    Status,
    SystemRun,
    utcnow,
)
from core.retries import claim_runs
from core.systems import SystemConfig, Systems
from tests.admin.test_bulk import approve, batch_reference, upload
from tests.fakes import BatchConnector, CountingConnector
from tests.flows import login

PEOPLE = [f"person{n}@example.org" for n in range(1, 6)]


@pytest.fixture
def fakes(app, monkeypatch):
    """Make the systems a batch-capable ``warehouse`` and a one-by-one ``ledger``, in
    chunks of two people; return a function that sets the warehouse's settings."""
    monkeypatch.setattr("core.bulk_run.CHUNK", 2)
    BatchConnector.calls, BatchConnector.erased = [], set()
    CountingConnector.erased = []
    app.config.update(RETRY_BASE_SECONDS=0, RETRY_MAX_SECONDS=0)

    def configure(**settings: object) -> None:
        configs = {
            "warehouse": SystemConfig("warehouse", "batch", "Warehouse", settings),
            "ledger": SystemConfig("ledger", "counting", "Ledger", {}),
        }
        classes = {"batch": BatchConnector, "counting": CountingConnector}
        app.extensions["lethe.systems"] = Systems(None, configs, classes)

    configure()
    return configure


def erase_everyone(client) -> str:
    login(client)
    reference = batch_reference(upload(client, ("email\n" + "\n".join(PEOPLE)).encode()))
    assert approve(client, reference).status_code == 302
    return reference


def members() -> list[DataSubjectRequest]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(DataSubjectRequest).order_by(DataSubjectRequest.id)))


def actions(name: str) -> list[AuditEvent]:
    return list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == name)))


def test_each_chunk_is_erased_at_once_and_each_person_has_their_own_proof(app, client, fakes):
    reference = erase_everyone(client)
    # Chunk by chunk: the warehouse plans two people, erases them and re-scans them at once.
    assert BatchConnector.calls[-9:] == [
        ("plan_many", 2),
        ("erase_many", 2),
        ("verify_many", 2),
        ("plan_many", 2),
        ("erase_many", 2),
        ("verify_many", 2),
        ("plan_many", 1),
        ("erase_many", 1),
        ("verify_many", 1),
    ]
    assert ("erase", 1) not in BatchConnector.calls
    assert BatchConnector.erased == set(PEOPLE)
    assert sorted(CountingConnector.erased) == PEOPLE  # the other system, run by run
    with app.app_context():
        batch = db.session.scalars(sa.select(ErasureBatch)).one()
        assert batch.status == "completed" and progress(db.session, batch) == {"completed": 5}
        for request in members():
            assert request.status == Status.COMPLETED and len(request.proofs) == 1
            for run in request.runs:
                assert (run.status, run.attempts, run.rows_affected) == (
                    RunStatus.COMPLETED,
                    1,
                    {"records": 1},
                )
                assert run.remaining == {"records": 0} and run.finished_at is not None
        assert len(actions("run.started")) == len(actions("run.completed")) == 10
        assert len(actions("status.completed")) == 5
        assert [e.reference for e in actions("batch.completed")] == [reference]
        assert verify_chain(db.session).ok


def test_a_batch_task_delivered_twice_erases_nobody_twice(app, client, fakes, monkeypatch):
    queued: list[list[int]] = []
    monkeypatch.setattr("core.jobs.run_system_batch", SimpleNamespace(delay=queued.append))
    erase_everyone(client)
    assert [len(ids) for ids in queued] == [2, 2, 1] and not BatchConnector.erased
    with app.app_context():
        first, *rest = queued
        # Another worker has claimed one of the first chunk's runs a moment ago.
        taken = db.session.get(SystemRun, first[0])
        assert claim_runs(db.session, [taken]) == [taken]
        db.session.commit()
        run_system_batch(first)
        run_system_batch(first)  # delivered again
        for ids in rest:
            run_system_batch(ids)
        events = len(db.session.scalars(sa.select(AuditEvent)).all())
        for ids in queued:
            run_system_batch(ids)  # every task delivered once more: nothing happens
        assert len(db.session.scalars(sa.select(AuditEvent)).all()) == events
    assert [call for call in BatchConnector.calls if call[0] == "erase_many"] == [
        ("erase_many", 1),
        ("erase_many", 2),
        ("erase_many", 1),
    ]
    with app.app_context():
        assert db.session.get(SystemRun, first[0]).status == RunStatus.RUNNING  # its worker's
        assert [r.status for r in members()].count(Status.COMPLETED) == 4
        # That worker died: the watchdog hands its run to a single run, which erases them.
        long_ago = utcnow() - timedelta(hours=1)
        db.session.execute(
            sa.update(SystemRun)
            .where(SystemRun.id == first[0])
            .values(started_at=long_ago, heartbeat_at=long_ago)
        )
        db.session.commit()
        assert watchdog()["requeued"] == 1
        assert [r.status for r in members()].count(Status.COMPLETED) == 5
        assert db.session.get(SystemRun, first[0]).attempts == 2
    assert BatchConnector.calls.count(("erase", 1)) == 1 and BatchConnector.erased == set(PEOPLE)


def test_a_batch_the_system_fails_is_erased_person_by_person(app, client, fakes, caplog):
    fakes(fail_batch=True)
    caplog.set_level(logging.WARNING)
    erase_everyone(client)
    assert [call for call in BatchConnector.calls if call[0] == "erase_many"] == [
        ("erase_many", 2),
        ("erase_many", 2),
        ("erase_many", 1),
    ]
    assert BatchConnector.calls.count(("erase", 1)) == 5
    assert BatchConnector.erased == set(PEOPLE)
    with app.app_context():
        for request in members():
            assert request.status == Status.COMPLETED and len(request.proofs) == 1
            warehouse = next(run for run in request.runs if run.system == "warehouse")
            assert (warehouse.status, warehouse.attempts) == (RunStatus.COMPLETED, 2)
        requeued = actions("run.requeued")
        assert len(requeued) == 5 and {e.actor for e in requeued} == {"worker"}
        assert {e.details["reason"] for e in requeued} == {
            "batch failed: warehouse: the batch statement timed out"
        }
        assert verify_chain(db.session).ok
        batch = db.session.scalars(sa.select(ErasureBatch)).one()
        assert batch.status == "completed"
    assert "erasing 2 people together failed" in caplog.text
    assert not any(person in caplog.text for person in PEOPLE)


def test_a_held_person_is_kept_and_the_others_are_erased_together(app, client, fakes):
    with app.app_context():
        dpo = db.session.scalars(sa.select(StaffUser)).one()
        place_hold(
            db.session,
            dpo,
            ground="art17-3-e-legal-claims",
            reason="Case 12",
            email=PEOPLE[0],
            system="warehouse",
            known_systems=["warehouse", "ledger"],
        )
        db.session.commit()
    erase_everyone(client)
    assert PEOPLE[0] not in BatchConnector.erased
    assert BatchConnector.erased == set(PEOPLE[1:])
    assert [call for call in BatchConnector.calls if call[0] == "erase_many"] == [
        ("erase_many", 1),
        ("erase_many", 2),
        ("erase_many", 1),
    ]
    assert sorted(CountingConnector.erased) == PEOPLE  # the hold covers the warehouse only
    with app.app_context():
        held = members()[0]
        run = next(run for run in held.runs if run.system == "warehouse")
        assert (run.status, run.retained_ground) == (RunStatus.RETAINED, "art17-3-e-legal-claims")
        assert held.status == Status.COMPLETED and len(held.proofs) == 1
        assert verify_chain(db.session).ok
