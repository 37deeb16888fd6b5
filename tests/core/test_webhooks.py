"""Webhooks out: a real receiver on loopback gets every state change, signed, retried."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from core.api_keys import create_api_key
from core.extensions import db
from core.lifecycle import transition
from core.models import DataSubjectRequest, Role, Status, utcnow
from core.webhooks import REPLAY_WINDOW_SECONDS, WebhookDelivery, retry_due_webhooks
from tests.admin.test_api import intake

SECRET = "a webhook secret of some length"
ALICE = "alice@example.com"


def verify_signature(secret: str, headers, body: bytes, now: float) -> bool:
    """Check a delivery the way the README tells receivers to."""
    timestamp = headers["Lethe-Timestamp"]
    if abs(now - int(timestamp)) > REPLAY_WINDOW_SECONDS:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("v1=" + expected.hexdigest(), headers["Lethe-Signature"])


class Receiver:
    """A webhook endpoint that answers the scripted statuses first, then 204."""

    def __init__(self) -> None:
        self.script: list[int] = []
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        request = Request(environ)
        with self.lock:
            self.seen.append((dict(request.headers), request.get_data()))
            status = self.script.pop(0) if self.script else 204
        return Response(status=status)(environ, start_response)

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body in self.seen]


@contextmanager
def serving(receiver: Receiver) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, receiver, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}/hooks/lethe"
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture
def receiver(app) -> Iterator[Receiver]:
    receiver = Receiver()
    with serving(receiver) as url:
        app.config.update(WEBHOOK_URLS=[url], WEBHOOK_SECRET=SECRET, WEBHOOK_BASE_SECONDS=0)
        yield receiver


def api_key(app) -> dict[str, str]:
    with app.app_context():
        _, token = create_api_key(db.session, "hooks", Role.DPO, "test")
        db.session.commit()
    return {"Authorization": f"Bearer {token}"}


def deliveries(app) -> list[WebhookDelivery]:
    with app.app_context():
        rows = db.session.scalars(sa.select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        db.session.expunge_all()
        return rows


def test_every_state_change_is_posted_signed_and_without_personal_data(app, client, receiver):
    headers = api_key(app)
    created = client.post("/api/v1/requests", json=intake(), headers=headers)
    reference = created.get_json()["request"]["reference"]
    digest = client.get(f"/api/v1/requests/{reference}", headers=headers).get_json()["plan"][
        "digest"
    ]
    approved = client.post(
        f"/api/v1/requests/{reference}/approve",
        json={"plan_digest": digest, "confirm_reference": reference},
        headers=headers,
    )
    assert approved.status_code == 200
    moves = [(e["old_state"], e["new_state"]) for e in receiver.events()]
    assert moves == [
        ("submitted", "verified"),
        ("verified", "approved"),
        ("approved", "running"),
        ("running", "completed"),
    ]
    now = time.time()
    for sent_headers, body in receiver.seen:
        assert verify_signature(SECRET, sent_headers, body, now)
        assert not verify_signature("another secret", sent_headers, body, now)
        assert not verify_signature(SECRET, sent_headers, body + b" ", now)
        assert not verify_signature(SECRET, sent_headers, body, now + 3600)  # a replay
        event = json.loads(body)
        assert set(event) == {
            "id",
            "type",
            "reference",
            "request_type",
            "old_state",
            "new_state",
            "occurred_at",
        }
        assert event["reference"] == reference and sent_headers["Lethe-Event-Id"] == event["id"]
        assert b"alice" not in body.lower()
    assert len({e["id"] for e in receiver.events()}) == 4
    assert all(d.delivered_at is not None and d.attempts == 1 for d in deliveries(app))


def test_a_failing_receiver_gets_the_delivery_retried_until_it_takes_it(app, client, receiver):
    receiver.script = [500, 503, 500]
    client.post("/api/v1/requests", json=intake(), headers=api_key(app))
    [delivery] = deliveries(app)
    assert delivery.delivered_at is not None
    assert delivery.attempts == 4 and delivery.last_error is None
    bodies = [body for _, body in receiver.seen]
    assert len(bodies) == 4 and len(set(bodies)) == 1  # the same event, id and all


def test_a_receiver_that_never_answers_well_is_given_up_after_the_attempts(app, client, receiver):
    app.config["WEBHOOK_MAX_ATTEMPTS"] = 3
    receiver.script = [500] * 10
    client.post("/api/v1/requests", json=intake(), headers=api_key(app))
    [delivery] = deliveries(app)
    assert delivery.delivered_at is None and delivery.gave_up_at is not None
    assert delivery.attempts == 3 and delivery.last_error == "HTTP 500"
    assert len(receiver.seen) == 3


def test_a_delivery_whose_task_was_lost_is_sent_by_the_scheduler(app, client):
    celery = app.extensions["celery"]
    entry = celery.conf.beat_schedule["retry-webhooks"]
    assert entry["task"] == retry_due_webhooks.name and entry["task"] in celery.tasks
    receiver = Receiver()
    with serving(receiver) as url:
        pass  # the receiver is down: nothing listens on its port any more
    app.config.update(WEBHOOK_URLS=[url], WEBHOOK_SECRET=SECRET, WEBHOOK_BASE_SECONDS=3600)
    client.post("/api/v1/requests", json=intake(), headers=api_key(app))
    [delivery] = deliveries(app)
    assert delivery.delivered_at is None and delivery.attempts == 1
    assert "ConnectionError" in delivery.last_error
    with serving(receiver) as url, app.app_context():
        db.session.execute(
            sa.update(WebhookDelivery).values(
                url=url, next_attempt_at=utcnow() - timedelta(seconds=1)
            )
        )
        db.session.commit()
        assert retry_due_webhooks() == 1
        assert retry_due_webhooks() == 0
    [delivery] = deliveries(app)
    assert delivery.delivered_at is not None and delivery.attempts == 2
    assert len(receiver.seen) == 1


def test_a_change_rolled_back_sends_nothing(app, client, receiver):
    client.post(
        "/api/v1/requests",
        json=intake(identity_method=None, identity_note=None),
        headers=api_key(app),
    )
    with app.app_context():
        request = db.session.scalars(sa.select(DataSubjectRequest)).one()
        transition(db.session, request, Status.CANCELLED, actor="test")
        db.session.rollback()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 0
    assert receiver.seen == []


def test_webhook_urls_without_a_secret_refuse_to_start(tmp_path, monkeypatch):
    from core.config import ConfigurationError, load_config

    monkeypatch.setenv("LETHE_WEBHOOK_URLS", "https://hooks.example.com/a, https://b.example/x")
    monkeypatch.delenv("LETHE_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ConfigurationError, match="LETHE_WEBHOOK_SECRET"):
        load_config(tmp_path)
    monkeypatch.setenv("LETHE_WEBHOOK_SECRET", SECRET)
    config = load_config(tmp_path)
    assert config["WEBHOOK_URLS"] == ["https://hooks.example.com/a", "https://b.example/x"]
