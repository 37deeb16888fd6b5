"""The whole path over real HTTP: portal, email over SMTP, staff approval, a Celery worker
on Redis erasing from the CRM, and a signed proof that the CLI verifies."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from celery.contrib.testing.worker import start_worker
from flask_migrate import upgrade
from werkzeug.serving import make_server

from core import create_app
from core.cli import cli
from core.demo import demo_systems_toml
from core.extensions import db
from core.models import Role, StaffUser
from core.security import hash_password
from tests.conftest import DPO_EMAIL, DPO_PASSWORD, link_in
from tests.services import require_redis

pytestmark = pytest.mark.e2e


@pytest.fixture
def live(database_url, crm_url, smtp, tmp_path: Path, monkeypatch) -> Iterator[tuple]:
    """Serve the app over HTTP with a real worker on Redis and mail to the loopback server."""
    broker = require_redis()
    mailbox, smtp_port = smtp
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "systems.toml").write_text(demo_systems_toml(crm_url), encoding="utf-8")
    monkeypatch.setenv("LETHE_INSTANCE_PATH", str(instance))
    server_holder: dict = {}
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": database_url,
            "BROKER_URL": broker,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": smtp_port,
            "COOLING_OFF_MINUTES": 0,
        }
    )
    # Tasks of this test go to a queue of its own, so no other worker on the broker takes them.
    queue = f"lethe-e2e-{tmp_path.name}"
    app.extensions["celery"].conf.task_default_queue = queue
    with app.app_context():
        upgrade()
        db.session.add(
            StaffUser(email=DPO_EMAIL, password_hash=hash_password(DPO_PASSWORD), role=Role.DPO)
        )
        db.session.commit()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    app.config["BASE_URL"] = f"http://127.0.0.1:{server.server_port}"
    server_holder["thread"] = threading.Thread(target=server.serve_forever, daemon=True)
    server_holder["thread"].start()
    with start_worker(
        app.extensions["celery"],
        pool="solo",
        perform_ping_check=False,
        queues=[queue],
        shutdown_timeout=30,
    ):
        yield app, app.config["BASE_URL"], mailbox
    server.shutdown()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def form_token(html: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)[1]


def test_a_person_is_erased_end_to_end_with_a_verifiable_proof(live, crm_url, tmp_path):
    app, base, mailbox = live
    person = requests.Session()
    form = person.get(f"{base}/")
    submitted = person.post(
        f"{base}/",
        data={
            "email": "ivan.petrov@example.ru",
            "request_type": "erasure",
            "confirmed": "yes",
            "csrf_token": form_token(form.text),
        },
    )
    assert submitted.url.endswith("/submitted") and "Check your inbox" in submitted.text

    [verify_mail] = mailbox.wait_for(1)
    assert verify_mail["To"] == "ivan.petrov@example.ru"
    link = link_in(verify_mail, "/verify/")
    confirm = person.get(link)
    status = person.post(link, data={"csrf_token": form_token(confirm.text)})
    reference = re.search(r"DSR-[0-9A-Z]{8}", status.text)[0]
    assert "reviewing" in status.text

    staff = requests.Session()
    login = staff.get(f"{base}/admin/login")
    queue = staff.post(
        f"{base}/admin/login",
        data={"email": DPO_EMAIL, "password": DPO_PASSWORD, "csrf_token": form_token(login.text)},
    )
    assert reference in queue.text
    page = staff.get(f"{base}/admin/requests/{reference}")
    assert "support_tickets" in page.text
    digest = re.search(r'name="plan_digest" type="hidden" value="([0-9a-f]+)"', page.text)[1]
    approved = staff.post(
        f"{base}/admin/requests/{reference}/approve",
        data={
            "csrf_token": form_token(page.text),
            "plan_digest": digest,
            "confirm_reference": reference,
        },
    )
    assert "Approved" in approved.text

    deadline = time.monotonic() + 60
    while "Done" not in (status_page := person.get(status.url).text):
        assert time.monotonic() < deadline, "the erasure did not finish within a minute"
        time.sleep(0.5)
    assert "Erased" in status_page

    engine = sa.create_engine(crm_url)
    with engine.connect() as conn:
        left = conn.execute(
            sa.text("SELECT count(*) FROM customers WHERE email = :e OR full_name = :n"),
            {"e": "ivan.petrov@example.ru", "n": "Иван Петров"},
        ).scalar_one()
    engine.dispose()
    assert left == 0

    # Confirmation link, approval, completion: the last comes once the proof is issued.
    done_mail = mailbox.wait_for(3)[2]
    assert reference in done_mail["Subject"] and "complete" in done_mail["Subject"]
    page = staff.get(f"{base}/admin/requests/{reference}")
    proof_url = re.search(r'href="(/admin/proofs/\d+\.pdf)"', page.text)[1]
    pdf = staff.get(f"{base}{proof_url}").content
    proof_file = tmp_path / "proof.pdf"
    proof_file.write_bytes(pdf)

    runner = app.test_cli_runner()
    verified = runner.invoke(cli, ["proof", "verify", str(proof_file)])
    assert verified.exit_code == 0, verified.output
    assert f"authentic: {reference}" in verified.output
    tampered = bytearray(pdf)
    tampered[len(pdf) // 2] ^= 0x01
    proof_file.write_bytes(bytes(tampered))
    assert runner.invoke(cli, ["proof", "verify", str(proof_file)]).exit_code == 1
    audit = runner.invoke(cli, ["audit", "verify"])
    assert audit.exit_code == 0 and "audit chain intact" in audit.output
