"""Art. 19: the recipients of an erased system are told, by email or signed webhook, and answer."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from connectors.base import ConfigError
from core.demo import demo_systems_toml
from core.extensions import db
from core.models import AuditEvent, DataSubjectRequest, RecipientNotification
from core.recipients import RETRIES
from core.systems import load_systems
from tests.conftest import csrf_token, link_in, outbox_messages
from tests.flows import approve, login, path_of, submit, verify_latest

ALICE = "alice@example.com"
MAILER = "privacy@mailer.example"
SECRET = "partner-shared-secret"
SIGNED = 'secret_env = "PARTNER_WEBHOOK_SECRET"'


class Partner:
    """A recipient's webhook on loopback that checks our signature, as a real one would."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.status = 200
        self.answer: dict = {"acknowledged": True}
        partner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stamp = self.headers.get("X-Lethe-Timestamp", "")
                expected = (
                    "sha256="
                    + hmac.new(
                        SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256
                    ).hexdigest()
                )
                signed = hmac.compare_digest(expected, self.headers.get("X-Lethe-Signature", ""))
                fresh = stamp.isdigit() and abs(time.time() - int(stamp)) < 300
                partner.received.append({"signed": signed and fresh, "body": json.loads(body)})
                status, answer = (partner.status, partner.answer) if signed else (401, {})
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/gdpr/erasure"


@pytest.fixture
def partner():
    partner = Partner()
    thread = threading.Thread(target=partner.server.serve_forever, daemon=True)
    thread.start()
    yield partner
    partner.server.shutdown()
    partner.server.server_close()
    thread.join()


def recipients_toml(webhook: str) -> str:
    return f"""
[[systems.crm.recipients]]
name = "Mailing provider (processor)"
email = "{MAILER}"

[[systems.crm.recipients]]
name = "Analytics partner"
webhook = "{webhook}"
secret_env = "PARTNER_WEBHOOK_SECRET"
"""


@pytest.fixture
def with_recipients(app, tmp_path, crm_url, partner, monkeypatch):
    """Give the demo CRM a processor told by email and a partner told by webhook."""
    monkeypatch.setenv("PARTNER_WEBHOOK_SECRET", SECRET)
    file = tmp_path / "with-recipients.toml"
    file.write_text(demo_systems_toml(crm_url) + recipients_toml(partner.url), encoding="utf-8")
    app.extensions["lethe.systems"] = load_systems(file)


def erase(app, client, email: str = ALICE) -> str:
    """Submit, verify and approve an erasure of ``email``; return its reference."""
    submit(client, email)
    verify_latest(app, client)
    staff = app.test_client()
    login(staff)
    with app.app_context():
        reference = db.session.scalars(
            sa.select(DataSubjectRequest.reference).order_by(DataSubjectRequest.id.desc())
        ).first()
    assert approve(staff, reference).status_code == 302
    return reference


def notifications(app) -> dict[str, RecipientNotification]:
    with app.app_context():
        rows = db.session.scalars(sa.select(RecipientNotification)).all()
        db.session.expunge_all()
    return {row.recipient: row for row in rows}


def proof_text(app, reference: str) -> str:
    with app.app_context():
        request = db.session.scalars(
            sa.select(DataSubjectRequest).where(DataSubjectRequest.reference == reference)
        ).one()
        pdf = request.proofs[-1].pdf
    pages = PdfReader(io.BytesIO(pdf)).pages
    return " ".join(" ".join(page.extract_text().split()) for page in pages)


def audit(app) -> list[AuditEvent]:
    with app.app_context():
        events = db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.position)).all()
        db.session.expunge_all()
    return events


def test_an_erasure_tells_both_recipients_and_each_acknowledgement_is_kept(
    app, client, with_recipients, partner
):
    reference = erase(app, client)

    # The webhook got one signed message naming the person, and acknowledged it.
    assert len(partner.received) == 1
    delivery = partner.received[0]
    assert delivery["signed"]
    assert delivery["body"]["reference"] == reference
    assert delivery["body"]["system"] == "crm"
    assert delivery["body"]["subject"] == {"email": ALICE}
    assert "/recipients/" in delivery["body"]["acknowledge_url"]

    # The processor got an email with the address to find and a link to acknowledge.
    [mail] = [m for m in outbox_messages(app) if m["To"] == MAILER]
    assert reference in mail["Subject"]
    assert mail.get_body(("html",)) is not None
    assert ALICE in mail.get_body(("plain",)).get_content()
    link = path_of(link_in(mail, "/recipients/"))

    rows = notifications(app)
    webhook, email = rows["Analytics partner"], rows["Mailing provider (processor)"]
    assert (webhook.channel, email.channel) == ("webhook", "email")
    assert (
        webhook.sent_at
        and webhook.acknowledged_at
        and webhook.acknowledged_by == ("webhook response")
    )
    assert email.sent_at and email.acknowledged_at is None

    # The proof is issued before the processor answers: it says so, and names the partner's.
    text = proof_text(app, reference)
    assert "Recipients told of the erasure (GDPR Art. 19)" in text
    assert "Analytics partner by webhook: notified on" in text
    assert "acknowledged on" in text and "by webhook response" in text
    assert "Mailing provider (processor) by email: notified on" in text
    assert "acknowledgement pending" in text

    # The processor acknowledges once on the page behind the link.
    page = client.get(link)
    assert page.status_code == 200
    assert reference in page.text and "We have erased it" in page.text
    assert ALICE not in page.text
    response = client.post(link, data={"csrf_token": csrf_token(page.text), "name": "Mia Mailer"})
    assert response.status_code == 302
    assert "Thank you" in client.get(response.headers["Location"]).text
    again = client.get(link)
    assert again.status_code == 410 and "already been acknowledged" in again.text
    acknowledged = notifications(app)["Mailing provider (processor)"]
    assert acknowledged.acknowledged_at is not None
    assert acknowledged.acknowledged_by == "Mia Mailer (Mailing provider (processor))"

    # Staff see both on the request page.
    staff = app.test_client()
    login(staff)
    page = staff.get(f"/admin/requests/{reference}").text
    assert "Recipients told (GDPR Art. 19)" in page
    assert "Mia Mailer" in page and "webhook response" in page

    # The audit chain logs each send and acknowledgement, never the person's address.
    events = audit(app)
    actions = [e.action for e in events if e.action.startswith("recipient.")]
    assert actions.count("recipient.notified") == 2
    assert actions.count("recipient.acknowledged") == 2
    for event in events:
        assert ALICE not in json.dumps([event.actor, event.reference, event.details])


def test_a_failing_webhook_is_retried_then_left_with_its_error(
    app, client, with_recipients, partner
):
    partner.status = 503
    reference = erase(app, client)

    assert len(partner.received) == RETRIES + 1
    assert all(delivery["signed"] for delivery in partner.received)
    failed = notifications(app)["Analytics partner"]
    assert failed.sent_at is None and failed.acknowledged_at is None
    assert failed.attempts == RETRIES + 1
    assert failed.last_error == "the webhook answered HTTP 503"
    # The email recipient is not sent a second message by the webhook's retries.
    assert len([m for m in outbox_messages(app) if m["To"] == MAILER]) == 1

    [event] = [e for e in audit(app) if e.action == "recipient.failed"]
    assert event.details["recipient"] == "Analytics partner"
    assert "Analytics partner by webhook: COULD NOT BE NOTIFIED" in proof_text(app, reference)

    staff = app.test_client()
    login(staff)
    assert "the webhook answered HTTP 503" in staff.get(f"/admin/requests/{reference}").text


def test_a_webhook_that_does_not_acknowledge_waits_for_its_link(
    app, client, with_recipients, partner
):
    partner.answer = {"received": True}
    erase(app, client)

    webhook = notifications(app)["Analytics partner"]
    assert webhook.sent_at is not None and webhook.acknowledged_at is None
    link = path_of(partner.received[0]["body"]["acknowledge_url"])
    page = client.get(link)
    response = client.post(link, data={"csrf_token": csrf_token(page.text), "name": "Pat"})
    assert response.status_code == 302
    assert notifications(app)["Analytics partner"].acknowledged_by == "Pat (Analytics partner)"


def test_nobody_is_told_when_the_system_held_nothing(app, client, with_recipients, partner):
    erase(app, client, "nobody-here@example.com")

    assert partner.received == []
    assert notifications(app) == {}
    assert not [m for m in outbox_messages(app) if m["To"] == MAILER]


def test_a_tampered_acknowledgement_link_changes_nothing(app, client, with_recipients, partner):
    partner.answer = {}
    erase(app, client)
    link = path_of(partner.received[0]["body"]["acknowledge_url"])

    page = client.get(link[:-3] + "xyz")
    assert page.status_code == 400 and "has been changed" in page.text
    assert notifications(app)["Analytics partner"].acknowledged_at is None


@pytest.mark.parametrize(
    ("entry", "key", "problem"),
    [
        (
            'name = "X"\nemail = "a@b.example"\nwebhook = "https://x.example"',
            "recipients[0]",
            "exactly one of email and webhook",
        ),
        ('email = "a@b.example"', "recipients[0].name", "missing"),
        ('name = "X"\nemail = "not-an-address"', "recipients[0].email", "not an email address"),
        (
            f'name = "X"\nwebhook = "http://partner.example/hook"\n{SIGNED}',
            "recipients[0].webhook",
            "https://",
        ),
        (
            'name = "X"\nwebhook = "https://partner.example/hook"',
            "recipients[0].secret_env",
            "missing",
        ),
        (
            'name = "X"\nwebhook = "https://partner.example/h"\nsecret_env = "LETHE_NO_SUCH_VAR"',
            "recipients[0].secret_env",
            "LETHE_NO_SUCH_VAR is not set",
        ),
        ('name = "X"\nemail = "a@b.example"\nphone = "123"', "recipients[0].phone", "unknown"),
    ],
)
def test_a_wrong_recipient_stops_the_app_naming_file_system_and_key(
    tmp_path, crm_url, monkeypatch, entry, key, problem
):
    monkeypatch.setenv("PARTNER_WEBHOOK_SECRET", SECRET)
    monkeypatch.delenv("LETHE_NO_SUCH_VAR", raising=False)
    file = tmp_path / "systems.toml"
    file.write_text(
        demo_systems_toml(crm_url) + f"\n[[systems.crm.recipients]]\n{entry}\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError) as caught:
        load_systems(file)
    message = str(caught.value)
    assert str(file) in message and "'crm'" in message and f"'{key}'" in message
    assert problem in message


def test_a_recipient_listed_twice_is_refused(tmp_path, crm_url):
    file = tmp_path / "systems.toml"
    twice = '\n[[systems.crm.recipients]]\nname = "X"\nemail = "a@b.example"\n'
    file.write_text(demo_systems_toml(crm_url) + twice + twice, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"recipients\[1\]\.name.*listed twice"):
        load_systems(file)


def test_recipients_are_read_with_their_channel(tmp_path, crm_url, monkeypatch):
    monkeypatch.setenv("PARTNER_WEBHOOK_SECRET", SECRET)
    file = tmp_path / "systems.toml"
    file.write_text(
        demo_systems_toml(crm_url) + recipients_toml("https://partner.example/gdpr"),
        encoding="utf-8",
    )
    recipients = load_systems(file).configs["crm"].recipients
    assert [(r.name, r.channel) for r in recipients] == [
        ("Mailing provider (processor)", "email"),
        ("Analytics partner", "webhook"),
    ]
