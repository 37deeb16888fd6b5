"""What the person can do after asking: confirm erasure knowingly, resend, join, cancel."""

from datetime import timedelta

import sqlalchemy as sa

from core.extensions import db
from core.jobs import remind_and_expire
from core.models import DataSubjectRequest, Status, utcnow
from tests.conftest import csrf_token, link_in, outbox_messages
from tests.flows import approve, login, path_of, submit, verify_latest


def only_request(app) -> DataSubjectRequest:
    return db.session.scalars(sa.select(DataSubjectRequest)).one()


def test_erasure_is_explained_and_confirmed_before_anything_is_stored(app, client):
    page = client.get("/")
    explained = client.post(
        "/",
        data={
            "email": "alice@example.com",
            "request_type": "erasure",
            "csrf_token": csrf_token(page.text),
        },
    )
    assert explained.status_code == 200
    assert "cannot be undone" in explained.text and "tax law" in explained.text
    assert 'name="confirmed" value="yes"' in explained.text
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(DataSubjectRequest)) == 0
    assert outbox_messages(app) == []


def test_asking_again_joins_the_open_request(app, client):
    submit(client, "alice@example.com")
    submit(client, "ALICE@example.com")
    with app.app_context():
        request = only_request(app)  # still one request
        assert request.status == Status.SUBMITTED
    first, second = outbox_messages(app)
    # Still unconfirmed: the second email carries a working link for the same request.
    assert request.reference in second["Subject"]
    verify_latest(app, client)
    submit(client, "alice@example.com")
    third = outbox_messages(app)[-1]
    assert "already open" in third["Subject"] and request.reference in third["Subject"]
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(DataSubjectRequest)) == 1


def test_resend_sends_the_link_of_the_same_request(app, client):
    submit(client, "alice@example.com")
    status = path_of(link_in(outbox_messages(app)[-1], "/status/"))
    page = client.get(status)
    assert "Send the confirmation link again" in page.text
    resent = client.post(
        f"{status}/resend", data={"csrf_token": csrf_token(page.text)}, follow_redirects=True
    )
    assert "sent the confirmation link again" in resent.text
    assert len(outbox_messages(app)) == 2
    verify_latest(app, client)
    with app.app_context():
        assert only_request(app).status == Status.VERIFIED


def test_unconfirmed_requests_get_one_reminder_then_expire(app, client):
    submit(client, "alice@example.com")
    with app.app_context():
        request = only_request(app)
        request.verify_sent_at = utcnow() - timedelta(hours=25)
        db.session.commit()
        assert tuple(remind_and_expire.delay().get()) == (1, 0)
        assert tuple(remind_and_expire.delay().get()) == (0, 0)  # one reminder, not one per tick
        request = only_request(app)
        # A week after the last link went out (a resend gives the link a new week).
        request.received_at = request.verify_sent_at = utcnow() - timedelta(days=8)
        db.session.commit()
        assert tuple(remind_and_expire.delay().get()) == (0, 1)
        assert only_request(app).status == Status.EXPIRED
    reminder = outbox_messages(app)[1]
    assert reminder["Subject"].startswith("Reminder")
    expired_link = path_of(link_in(reminder, "/verify/"))
    assert client.get(expired_link).status_code == 410
    status = client.get(path_of(link_in(reminder, "/status/")))
    assert "never confirmed" in status.text


def test_cancel_during_cooling_off_stops_the_erasure(app, client):
    app.config["COOLING_OFF_MINUTES"] = 60
    submit(client, "alice@example.com")
    status = verify_latest(app, client)
    with app.app_context():
        reference = only_request(app).reference
    staff = app.test_client()
    login(staff)
    approve(staff, reference)
    assert "approved" in outbox_messages(app)[-1]["Subject"]
    page = client.get(status)
    assert "Cancel my request" in page.text
    cancelled = client.post(
        f"{status}/cancel", data={"csrf_token": csrf_token(page.text)}, follow_redirects=True
    )
    assert "Nothing was erased" in cancelled.text
    with app.app_context():
        assert only_request(app).status == Status.CANCELLED
    assert "cancelled" in outbox_messages(app)[-1]["Subject"]


def test_cancel_after_the_cooling_off_period_is_refused(app, client):
    app.config["COOLING_OFF_MINUTES"] = 60
    submit(client, "alice@example.com")
    status = verify_latest(app, client)
    with app.app_context():
        request = only_request(app)
        request.status = Status.APPROVED
        request.cooling_off_until = utcnow() - timedelta(seconds=1)
        db.session.commit()
    page = client.get(status)
    assert "Cancel my request" not in page.text
    # A cancel form left open in another tab since before the cooling-off ended:
    token = csrf_token(client.get("/").text)
    refused = client.post(f"{status}/cancel", data={"csrf_token": token}, follow_redirects=True)
    assert "can no longer be cancelled" in refused.text
    with app.app_context():
        assert only_request(app).status == Status.APPROVED
