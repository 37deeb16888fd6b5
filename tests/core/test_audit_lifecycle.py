"""The audit hash chain and the lifecycle's table of allowed moves, on each database."""

import pytest
import sqlalchemy as sa

from core.audit import ChainCache, record_event, verify_chain, verify_chain_cached
from core.extensions import db
from core.lifecycle import CLOSED, TRANSITIONS, TransitionError, transition
from core.models import AuditEvent, RequestType, Status
from core.operations import submit_request
from tests.portal.test_proof_check import rehash_chain


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


def _events(count: int) -> None:
    for n in range(count):
        record_event(db.session, "cli", "test.event", None, n=n)
    db.session.commit()


def test_a_cached_check_verifies_only_the_events_appended_since(app):
    with app.app_context():
        _events(4)
        cache = ChainCache()
        assert verify_chain_cached(db.session, cache).ok and cache.position == 4
        verified_at = cache.verified_at
        _events(3)
        check = verify_chain_cached(db.session, cache)
        assert check.ok and check.events == 7 and cache.position == 7
        assert check.head_hash == verify_chain(db.session).head_hash
        assert cache.verified_at == verified_at  # the prefix itself was not verified again
        # An appended event that does not follow the verified head is a break.
        db.session.execute(
            sa.update(AuditEvent).where(AuditEvent.position == 7).values(details={"n": 99})
        )
        db.session.commit()
        _events(1)
        cache.position, cache.hash = 6, verify_chain(db.session, through=6).head_hash
        check = verify_chain_cached(db.session, cache)
        assert not check.ok and "event 7 was altered" in check.problem
        assert cache.verified_at is None  # a break forgets the cache


def test_a_cached_check_sees_a_verified_event_edited_and_the_chain_rehashed(app):
    with app.app_context():
        _events(5)
        cache = ChainCache()
        assert verify_chain_cached(db.session, cache).ok
        # Edit event 2 and re-hash everything after it, as a careful forger would.
        db.session.scalars(sa.select(AuditEvent).where(AuditEvent.position == 2)).one().details = {
            "n": 99
        }
        rehash_chain(2)
        assert verify_chain(db.session).ok  # consistent in itself: only a checkpoint shows it
        # The verified head's hash changed, so the cached check verifies everything again
        # and finds what continuing from the head would not: event 3 edited as well.
        db.session.execute(
            sa.update(AuditEvent).where(AuditEvent.position == 3).values(details={"n": 77})
        )
        db.session.commit()
        check = verify_chain_cached(db.session, cache)
        assert not check.ok and "event 3 was altered" in check.problem


def test_a_stale_cache_verifies_the_whole_chain_again(app):
    with app.app_context():
        _events(5)
        cache = ChainCache(max_age=0)
        assert verify_chain_cached(db.session, cache).ok
        db.session.execute(
            sa.update(AuditEvent).where(AuditEvent.position == 2).values(details={"n": 99})
        )
        db.session.commit()
        check = verify_chain_cached(db.session, cache)
        assert not check.ok and "event 2 was altered" in check.problem


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
