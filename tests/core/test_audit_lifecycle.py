"""The audit hash chain and the lifecycle's table of allowed moves, on each database."""

import pytest
import sqlalchemy as sa

from core.audit import record_event, verify_chain
from core.extensions import db
from core.lifecycle import CLOSED, TRANSITIONS, TransitionError, transition
from core.models import AuditEvent, RequestType, Status
from core.operations import submit_request


def test_chain_verifies_and_detects_an_edited_row(app):
    with app.app_context():
        for n in range(5):
            record_event(db.session, "cli", "test.event", None, n=n)
        db.session.commit()
        assert verify_chain(db.session).ok
        # An edit made behind the application's back, straight in the database:
        db.session.execute(
            sa.update(AuditEvent).where(AuditEvent.position == 3).values(details={"n": 99})
        )
        db.session.commit()
        check = verify_chain(db.session)
        assert not check.ok
        assert "event 3 was altered" in check.problem


def test_chain_detects_a_deleted_row(app):
    with app.app_context():
        for n in range(4):
            record_event(db.session, "cli", "test.event", None, n=n)
        db.session.commit()
        db.session.execute(sa.delete(AuditEvent).where(AuditEvent.position == 2))
        db.session.commit()
        assert "event 2 is missing" in verify_chain(db.session).problem


def test_every_move_is_audited_in_the_same_transaction(app):
    with app.app_context():
        request, _ = submit_request(db.session, "Alice@Example.com", RequestType.ERASURE)
        transition(db.session, request, Status.VERIFIED, actor="subject")
        db.session.rollback()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == 0

        request, _ = submit_request(db.session, "alice@example.com", RequestType.ERASURE)
        transition(db.session, request, Status.VERIFIED, actor="subject")
        db.session.commit()
        actions = db.session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.position))
        assert list(actions) == ["request.submitted", "status.verified"]


def test_moves_outside_the_table_are_refused(app):
    with app.app_context():
        request, _ = submit_request(db.session, "bob@example.com", RequestType.ERASURE)
        refused = 0
        for start in Status:
            for target in set(Status) - TRANSITIONS[start]:
                request.status = start
                with pytest.raises(TransitionError):
                    transition(db.session, request, target, actor="test")
                assert request.status == start
                refused += 1
        assert refused == len(Status) ** 2 - sum(len(moves) for moves in TRANSITIONS.values())


def test_closed_states_are_final():
    assert {Status.COMPLETED, Status.EXPIRED, Status.DENIED, Status.CANCELLED} == CLOSED
