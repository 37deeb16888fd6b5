"""A system where a person or a remote service acts later: the request waits, then closes
with what they confirm, and its proof is issued then."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from connectors.base import (
    EraseResult,
    Outcome,
    Plan,
    Subject,
    VerifyResult,
)
from core.extensions import db
from core.jobs import confirm_pending
from core.models import DataSubjectRequest, RunStatus, Status
from core.systems import SystemConfig
from tests.conftest import outbox_messages
from tests.fakes import OneTableConnector
from tests.flows import approve, login, submit, verify_latest


class WaitingConnector(OneTableConnector):
    """A system in which a person does the erasure later."""

    name = "waiting"
    table = "files"

    def erase(self, subject: Subject, plan: Plan) -> EraseResult:
        return EraseResult(Outcome.ACTION_REQUIRED, message="waiting for the archive team")

    def verify(self, subject: Subject) -> VerifyResult:
        return VerifyResult(remaining={"files": 1})  # only a person can tell


@pytest.fixture
def waiting_system(app):
    systems = app.extensions["lethe.systems"]
    systems.classes["waiting"] = WaitingConnector
    systems.configs["archive"] = SystemConfig("archive", "waiting", "Paper archive")
    yield
    del systems.configs["archive"]


def only_request() -> DataSubjectRequest:
    db.session.expire_all()
    return db.session.scalars(sa.select(DataSubjectRequest)).one()


def test_a_request_waits_for_a_person_then_closes_with_a_new_proof(app, client, waiting_system):
    submit(client, "alice@example.com")
    verify_latest(app, client)
    staff = app.test_client()
    login(staff)
    with app.app_context():
        reference = only_request().reference
    approve(staff, reference)
    with app.app_context():
        request = only_request()
        runs = {run.system: run for run in request.runs}
        assert runs["crm"].status == RunStatus.COMPLETED
        # A dirty re-scan is expected while a person has not acted yet: not a failure.
        assert runs["archive"].status == RunStatus.ACTION_REQUIRED
        assert request.status == Status.PARTIALLY_COMPLETED
        first_proofs = len(request.proofs)
        run_id = runs["archive"].id
        closed = confirm_pending(
            run_id, "completed", "file shredded", "owner:archive@example.com", {"files": 1}
        )
        assert closed
        request = only_request()
        assert request.status == Status.COMPLETED
        archive = next(run for run in request.runs if run.system == "archive")
        assert archive.status == RunStatus.COMPLETED and archive.message == "file shredded"
        # The proof issued now states the whole erasure, including the person's confirmation.
        assert len(request.proofs) == first_proofs + 1
        with pytest.raises(ValueError, match="not waiting"):
            confirm_pending(run_id, "completed", "again", "owner:archive@example.com")
    subjects = [m["Subject"] for m in outbox_messages(app)]
    # The person hears that it is partly done while the archive waits, then that it is done.
    assert [s for s in subjects if "partly done" in s or "complete" in s] == [
        f"Your privacy request {reference} is partly done",
        f"Your privacy request {reference} is complete",
    ]


def test_only_a_final_outcome_can_be_confirmed(app, client, waiting_system):
    submit(client, "alice@example.com")
    verify_latest(app, client)
    staff = app.test_client()
    login(staff)
    with app.app_context():
        approve(staff, only_request().reference)
        run_id = next(r.id for r in only_request().runs if r.system == "archive")
        with pytest.raises(ValueError, match="not an outcome"):
            confirm_pending(run_id, "running", "", "owner:x")
        assert only_request().status == Status.PARTIALLY_COMPLETED
