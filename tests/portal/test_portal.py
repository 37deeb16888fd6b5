"""The customer portal: ask, prove the address with a single-use link, follow the request."""

import re

import sqlalchemy as sa

from core.extensions import db
from core.models import DataSubjectRequest, Status, SubjectIdentity
from tests.conftest import csrf_token, link_in, outbox_messages
from tests.flows import path_of, submit, verify_latest


def test_form_is_protected_against_cross_site_posts(client):
    response = client.post(
        "/", data={"email": "alice@example.com", "request_type": "erasure", "confirmed": "yes"}
    )
    assert response.status_code == 400


def test_invalid_address_is_explained_and_nothing_is_stored(app, client):
    page = client.get("/")
    response = client.post(
        "/",
        data={
            "email": "not-an-address",
            "request_type": "erasure",
            "confirmed": "yes",
            "csrf_token": csrf_token(page.text),
        },
    )
    assert response.status_code == 200
    assert 'class="error"' in response.text and 'aria-invalid="true"' in response.text
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(DataSubjectRequest)) == 0


def test_submission_stores_the_address_only_encrypted_and_sends_a_link(app, client):
    submit(client, "Alice@Example.com")
    [message] = outbox_messages(app)
    assert message["To"] == "Alice@Example.com"
    assert message.get_body(("html",)) is not None  # multipart text + HTML
    assert "/verify/" in link_in(message, "/verify/")
    with app.app_context():
        request = db.session.scalars(sa.select(DataSubjectRequest)).one()
        assert request.status == Status.SUBMITTED
        assert re.fullmatch(r"DSR-[0-9A-Z]{8}", request.reference)
        identity = db.session.scalars(sa.select(SubjectIdentity)).one()
        assert b"alice" not in identity.email_sealed.lower()


def test_the_answer_is_the_same_for_known_and_unknown_people(client):
    page = client.get("/")
    known = client.post(
        "/",
        data={
            "email": "alice@example.com",
            "request_type": "erasure",
            "confirmed": "yes",
            "csrf_token": csrf_token(page.text),
        },
        follow_redirects=True,
    )
    unknown = client.post(
        "/",
        data={
            "email": "nobody@nowhere.example",
            "request_type": "erasure",
            "confirmed": "yes",
            "csrf_token": csrf_token(page.text),
        },
        follow_redirects=True,
    )
    assert known.status_code == unknown.status_code == 200
    assert known.text == unknown.text


def test_link_confirms_once_and_leads_to_the_status_page(app, client):
    submit(client, "alice@example.com")
    link = path_of(link_in(outbox_messages(app)[-1], "/verify/"))
    # Opening the link (or a mail scanner prefetching it) changes nothing by itself.
    assert client.get(link).status_code == 200
    with app.app_context():
        assert db.session.scalars(sa.select(DataSubjectRequest.status)).one() == Status.SUBMITTED
    status_path = verify_latest(app, client)
    status = client.get(status_path)
    assert status.status_code == 200
    with app.app_context():
        request = db.session.scalars(sa.select(DataSubjectRequest)).one()
        assert request.status == Status.VERIFIED
        assert request.reference in status.text
        assert request.due_on.isoformat() in status.text
    assert "reviewing" in status.text
    assert status.headers["Referrer-Policy"] == "no-referrer"
    reused = client.get(link)
    assert reused.status_code == 410
    assert "already been used" in reused.text


def test_tampered_and_foreign_links_get_a_friendly_page(app, client):
    submit(client, "alice@example.com")
    link = path_of(link_in(outbox_messages(app)[-1], "/verify/"))
    tampered = client.get(link[:-3] + ("xyz" if not link.endswith("xyz") else "abc"))
    assert tampered.status_code == 400
    assert "Start a new request" in tampered.text
    # A verification token is no key to the status page, and the other way round.
    token = link.rsplit("/", 1)[1]
    assert client.get(f"/status/{token}").status_code == 400


def test_submissions_are_rate_limited_per_address_with_a_friendly_page(app, client):
    from tests.flows import submit

    for _ in range(5):
        submit(client, "alice@example.com")
    page = client.get("/")
    blocked = client.post(
        "/",
        data={
            "email": "Alice@Example.com",
            "request_type": "erasure",
            "confirmed": "yes",
            "csrf_token": csrf_token(page.text),
        },
    )
    assert blocked.status_code == 429
    assert "Too many attempts" in blocked.text and "Retry-After" in blocked.headers
    # Someone else from the same place is not blocked by Alice's limit.
    submit(client, "bob@example.com")
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(DataSubjectRequest)) == 2


def test_only_the_required_fields_are_marked_required(client):
    page = client.get("/").text
    fields = dict(re.findall(r'<(?:input|select|textarea)[^>]*name="(\w+)"([^>]*)>', page))
    assert '="None"' not in page
    required = {name for name, attrs in fields.items() if re.search(r"\brequired\b", attrs)}
    assert required == {"email", "request_type"}
