"""Shared fixtures: an app on a real database (SQLite and PostgreSQL), a client, SMTP."""

from __future__ import annotations

import re
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade

from core import create_app
from core.demo import create_demo_crm, demo_systems_toml
from core.extensions import db
from core.models import Role, StaffUser
from core.security import hash_password
from tests.services import fresh_database

DPO_EMAIL, DPO_PASSWORD = "dpo@example.com", "correct horse battery staple"


#: Databases copied from a migrated template: the app fixture need not migrate them again.
MIGRATED: set[str] = set()


class MigratedTemplates:
    """Lethe's schema migrated once per test run, per database kind, then copied per test.

    Running every migration for each of several hundred tests cost most of the suite's
    time; a copy (a file for SQLite, ``CREATE DATABASE … TEMPLATE`` for PostgreSQL) is the
    same schema in a fraction of it.  tests/core/test_migrations.py still migrates step by
    step.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.made: dict[str, str] = {}
        self._cleanup = ExitStack()

    def url_for(self, kind: str) -> str:
        if kind not in self.made:
            if kind == "sqlite":
                url = f"sqlite:///{self.folder / 'template.sqlite'}"
            else:
                # Named, so that copies can be made of it; no connection stays open to it.
                url = self._cleanup.enter_context(fresh_database(kind))
            self._migrate(url)
            self.made[kind] = url
        return self.made[kind]

    def _migrate(self, url: str) -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("LETHE_INSTANCE_PATH", str(self.folder / "instance"))
            for name in ("SMTP_HOST", "DATABASE_URL", "BROKER_URL", "SYSTEMS_FILE", "ENV"):
                patch.delenv(f"LETHE_{name}", raising=False)
            app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url})
            with app.app_context():
                upgrade()
                db.session.remove()
                db.engine.dispose()

    def close(self) -> None:
        self._cleanup.close()


@pytest.fixture(scope="session")
def migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigratedTemplates]:
    templates = MigratedTemplates(tmp_path_factory.mktemp("templates"))
    yield templates
    templates.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_templates: MigratedTemplates
) -> Iterator[str]:
    """Yield the URL of a database of each kind the app supports, migrated to the newest."""
    if request.param == "sqlite":
        template = sa.engine.make_url(migrated_templates.url_for("sqlite")).database
        shutil.copyfile(template, tmp_path / "lethe.sqlite")
        url = f"sqlite:///{tmp_path / 'lethe.sqlite'}"
        MIGRATED.add(url)
        yield url
    else:
        template = sa.engine.make_url(migrated_templates.url_for("postgresql")).database
        with fresh_database("postgresql", template=template) as url:
            MIGRATED.add(url)
            yield url


@pytest.fixture
def crm_url(tmp_path: Path) -> str:
    """Return the URL of a freshly built demo CRM."""
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    create_demo_crm(url)
    return url


class Mailbox:
    """Messages caught by the loopback SMTP server."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._arrived = threading.Condition()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        message = message_from_bytes(envelope.content, policy=policy.default)
        with self._arrived:
            self.messages.append(message)
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float = 30) -> list[EmailMessage]:
        """Return the messages once at least ``count`` have arrived."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.messages) >= count, timeout)
        assert len(self.messages) >= count, f"expected {count} emails, got {len(self.messages)}"
        return list(self.messages)


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    """Run a real SMTP server on loopback and yield its mailbox and port."""
    mailbox = Mailbox()
    with socket.socket() as probe:  # aiosmtpd checks readiness by connecting: it needs a port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


@pytest.fixture
def app(
    database_url: str, crm_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Flask]:
    """Return an app on a migrated database with the demo CRM as its only system."""
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "systems.toml").write_text(demo_systems_toml(crm_url), encoding="utf-8")
    for name in ("SMTP_HOST", "DATABASE_URL", "BROKER_URL", "SYSTEMS_FILE", "ENV"):
        monkeypatch.delenv(f"LETHE_{name}", raising=False)
    monkeypatch.setenv("LETHE_INSTANCE_PATH", str(instance))
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": database_url,
            "RUN_JOBS_INLINE": True,
            "COOLING_OFF_MINUTES": 0,
        }
    )
    app.extensions["celery"].conf.task_always_eager = True
    with app.app_context():
        if database_url not in MIGRATED:
            upgrade()
        db.session.add(
            StaffUser(email=DPO_EMAIL, password_hash=hash_password(DPO_PASSWORD), role=Role.DPO)
        )
        db.session.commit()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Return a test client of the app."""
    return app.test_client()


def csrf_token(html: str) -> str:
    """Return the CSRF token of the first form in ``html``."""
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert match, "the page has no CSRF token"
    return match.group(1)


def outbox_messages(app: Flask) -> list[EmailMessage]:
    """Return the emails written to the app's outbox folder, oldest first."""
    folder = Path(app.config["OUTBOX"])
    return (
        [
            message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in sorted(folder.glob("*.eml"))
        ]
        if folder.exists()
        else []
    )


def link_in(message: EmailMessage, path: str) -> str:
    """Return the first link to ``path`` in the text part of ``message``."""
    text = message.get_body(("plain",)).get_content()
    match = re.search(rf"https?://\S+{re.escape(path)}\S+", text)
    assert match, f"no {path} link in the email"
    return match.group(0)


@pytest.fixture(scope="session", autouse=True)
def compiled_translations() -> None:
    """Compile the message catalogs, as `make install` does, for runs of pytest alone."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    for po in Path(__file__).resolve().parent.parent.glob("translations/*/LC_MESSAGES/*.po"):
        mo = po.with_suffix(".mo")
        if not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
            with open(po, "rb") as source, open(mo, "wb") as target:
                write_mo(target, read_po(source))
