"""Faults a real deployment meets, played against a real Celery worker on a real Redis.

Each test runs ``lethe worker`` and ``lethe scheduler`` as processes of their own, as in
production, with our database and the target CRM on PostgreSQL, then breaks something in
the middle of an erasure: the worker is killed with SIGKILL, the CRM's database server
stops, or the broker restarts and forgets its queues.  Every request must still
complete, every row must have been changed exactly once, and the audit chain must verify.

The CRM's tables carry a trigger that logs each row change into ``change_log`` (inside the
erasing transaction, so a rolled-back attempt leaves no line) and sleeps a little, so that
an erasure lasts long enough to be interrupted.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import upgrade

from core import create_app
from core.audit import verify_chain
from core.demo import create_demo_crm, demo_systems_toml
from core.extensions import db
from core.models import AuditEvent, DataSubjectRequest, Role, RunStatus, StaffUser, Status
from core.security import hash_password
from tests.conftest import DPO_EMAIL, DPO_PASSWORD
from tests.flows import approve, login, submit, verify_latest
from tests.services import POSTGRES_URL, fresh_database, require, services_required

#: Seconds without a heartbeat before the watchdog takes a worker for dead (short, for tests).
STALL_SECONDS = 3
#: How long each row change of the CRM takes, so an erasure can be caught in the middle.
ROW_DELAY = 0.4
#: Extra orders given to each person erased, so their erasure lasts a few seconds.
EXTRA_ORDERS = 6
#: Longest wait for anything the worker does.
PATIENCE = 90

SLOW_LOGGED_CHANGES = f"""
CREATE TABLE change_log (tbl text NOT NULL, row_id integer NOT NULL, op text NOT NULL);
CREATE FUNCTION log_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_log VALUES (TG_TABLE_NAME, OLD.id, TG_OP);
    PERFORM pg_sleep({ROW_DELAY});
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER log_change BEFORE UPDATE OR DELETE ON customers
    FOR EACH ROW EXECUTE FUNCTION log_change();
CREATE TRIGGER log_change BEFORE UPDATE OR DELETE ON orders
    FOR EACH ROW EXECUTE FUNCTION log_change();
CREATE TRIGGER log_change BEFORE UPDATE OR DELETE ON support_tickets
    FOR EACH ROW EXECUTE FUNCTION log_change();
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not come up on port {port}")
            time.sleep(0.1)


def needs(command: str, package: str) -> None:
    """Skip (or fail, when services are required) unless ``command`` is installed."""
    if subprocess.run(["sh", "-c", f"command -v {command}"], capture_output=True).returncode:
        message = f"{command} is not installed (Debian package {package})"
        if services_required():
            pytest.fail(f"{message}; LETHE_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(message)


class Broker:
    """A Redis server of our own on a free port, which a test may kill and start again."""

    def __init__(self, folder: Path) -> None:
        needs("redis-server", "redis-server")
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port, "Redis")

    def kill(self) -> None:
        """Kill Redis at once: everything queued in it is gone (it keeps nothing on disk)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class Process:
    """A ``lethe`` command (``worker``, ``scheduler``) in its own process group, logging
    to a file."""

    def __init__(self, command: str, env: dict[str, str], log: Path) -> None:
        self.command, self.env, self.log = command, env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        lethe = Path(sys.executable).with_name("lethe")
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(lethe), self.command],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL the worker and everything it started, as a crashed machine would."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None

    def tail(self) -> str:
        text = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        return f"--- {self.command} log:\n{text}"


@dataclass
class Stack:
    """Our database, a broker, a worker, the CRM, and an app to drive the staff side."""

    app: Flask
    worker: Process
    scheduler: Process
    broker: Broker
    crm: sa.Engine
    people: list[str]

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float = PATIENCE) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.app.app_context():
                db.session.expire_all()
                if check():
                    return
            if time.monotonic() > deadline:
                logs = f"{self.worker.tail()}\n{self.scheduler.tail()}"
                pytest.fail(f"{what}: not within {timeout} s\n{logs}")
            time.sleep(0.2)

    def erase(self, email: str) -> str:
        """Submit, verify and approve the erasure of ``email``; return its reference."""
        client = self.app.test_client()
        submit(client, email)
        verify_latest(self.app, client)
        staff = self.app.test_client()
        login(staff)
        with self.app.app_context():
            reference = db.session.scalars(
                sa.select(DataSubjectRequest.reference).order_by(DataSubjectRequest.id.desc())
            ).first()
        response = approve(staff, reference)
        assert response.status_code == 302, response.text
        return reference

    def request(self, reference: str) -> DataSubjectRequest:
        return db.session.scalars(
            sa.select(DataSubjectRequest).where(DataSubjectRequest.reference == reference)
        ).one()

    def completed(self, *references: str) -> Callable[[], bool]:
        def check() -> bool:
            return all(
                (r := self.request(ref)).status == Status.COMPLETED and r.proofs
                for ref in references
            )

        return check

    def crm_run(self, reference: str) -> Callable[[], bool]:
        """Return a check that the CRM's run of ``reference`` is running."""

        def check() -> bool:
            (run,) = self.request(reference).runs
            return run.status == RunStatus.RUNNING

        return check

    def erasing_now(self) -> bool:
        """Return whether a statement of the erasure is running in the CRM right now."""
        with self.crm.connect() as conn:
            return bool(
                conn.scalar(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid() AND state = 'active'"
                        " AND (query ILIKE 'UPDATE%' OR query ILIKE 'DELETE%')"
                    )
                )
            )

    def changes(self) -> dict[tuple[str, int], int]:
        """Return how many committed changes each CRM row has had."""
        with self.crm.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT tbl, row_id, count(*) FROM change_log GROUP BY tbl, row_id")
            )
            return {(table, row_id): n for table, row_id, n in rows}

    def rows_of(self, email: str) -> set[tuple[str, int]]:
        """Return the CRM rows that hold ``email``'s data (before erasure)."""
        with self.crm.connect() as conn:
            (customer,) = conn.execute(
                sa.text("SELECT id FROM customers WHERE email = :email"), {"email": email}
            ).one()
            rows = {("customers", customer)}
            for table in ("orders", "support_tickets"):
                ids = conn.scalars(
                    sa.text(f"SELECT id FROM {table} WHERE customer_id = :c"),  # noqa: S608
                    {"c": customer},
                )
                rows |= {(table, row_id) for row_id in ids}
            return rows

    def assert_erased_once(self, emails: list[str], rows: set[tuple[str, int]]) -> None:
        """Every row of the people was changed exactly once, and nothing else was."""
        assert self.changes() == dict.fromkeys(rows, 1)
        with self.crm.connect() as conn:
            left = conn.scalar(
                sa.text("SELECT count(*) FROM customers WHERE email = ANY(:emails)"),
                {"emails": emails},
            )
        assert left == 0

    def assert_chain_verifies(self) -> None:
        with self.app.app_context():
            check = verify_chain(db.session)
            assert check.ok, check


def prepare_crm(url: str) -> list[str]:
    """Build the demo CRM at ``url`` with slow, logged row changes; return three people."""
    create_demo_crm(url)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            people = list(conn.scalars(sa.text("SELECT email FROM customers ORDER BY id LIMIT 3")))
            for email in people:
                for n in range(EXTRA_ORDERS):
                    conn.execute(
                        sa.text(
                            "INSERT INTO orders (customer_id, placed_at, total_cents,"
                            " shipping_address) SELECT id, now(), :n, 'Somewhere 1'"
                            " FROM customers WHERE email = :email"
                        ),
                        {"n": 1000 + n, "email": email},
                    )
            conn.exec_driver_sql(SLOW_LOGGED_CHANGES)
            # A killed worker's statement is cut short, not left to finish on its own.
            conn.exec_driver_sql(
                f"ALTER DATABASE {engine.url.database}"
                " SET client_connection_check_interval = '100ms'"
            )
    finally:
        engine.dispose()
    return people


@pytest.fixture
def stack_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Stack]]:
    """Return a function that sets up the whole stack around a CRM at the given URL."""
    with ExitStack() as cleanup:

        def build(crm_url: str) -> Stack:
            people = prepare_crm(crm_url)
            database_url = cleanup.enter_context(fresh_database("postgresql"))
            instance = tmp_path / "instance"
            instance.mkdir()
            (instance / "systems.toml").write_text(demo_systems_toml(crm_url), encoding="utf-8")
            broker = Broker(tmp_path)
            cleanup.callback(broker.kill)
            settings = {
                "INSTANCE_PATH": str(instance),
                "DATABASE_URL": database_url,
                "BROKER_URL": broker.url,
                "COOLING_OFF_MINUTES": "0",
                "RUN_STALL_SECONDS": str(STALL_SECONDS),
                "WATCHDOG_SECONDS": "1",
                "RETRY_BASE_SECONDS": "1",
                "RETRY_MAX_SECONDS": "2",
                "RETRY_MAX_ATTEMPTS": "30",
            }
            for name in ("SMTP_HOST", "SYSTEMS_FILE", "ENV", "RUN_JOBS_INLINE"):
                monkeypatch.delenv(f"LETHE_{name}", raising=False)
            for name, value in settings.items():
                monkeypatch.setenv(f"LETHE_{name}", value)
            app = create_app({"TESTING": True})
            with app.app_context():
                upgrade()
                db.session.add(
                    StaffUser(
                        email=DPO_EMAIL, password_hash=hash_password(DPO_PASSWORD), role=Role.DPO
                    )
                )
                db.session.commit()
            cleanup.callback(dispose, app)
            crm = sa.create_engine(crm_url)
            cleanup.callback(crm.dispose)
            # The worker runs the code of this checkout, whatever the virtualenv points at.
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
            worker = Process("worker", env, tmp_path / "worker.log")
            scheduler = Process("scheduler", env, tmp_path / "scheduler.log")
            for process in (worker, scheduler):
                cleanup.callback(process.stop)
                process.start()
            return Stack(app, worker, scheduler, broker, crm, people)

        yield build


def dispose(app: Flask) -> None:
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def crm_on_postgres() -> Iterator[str]:
    with fresh_database("postgresql") as url:
        yield url


def events(app: Flask, action: str) -> list[AuditEvent]:
    with app.app_context():
        return list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action)))


def test_a_worker_killed_mid_erasure_leaves_the_rows_untouched_and_another_finishes(
    stack_for, crm_on_postgres
):
    stack = stack_for(crm_on_postgres)
    person = stack.people[0]
    rows = stack.rows_of(person)
    reference = stack.erase(person)
    stack.wait_until(stack.crm_run(reference), "the erasure started")
    stack.wait_until(stack.erasing_now, "the CRM is being changed")
    stack.worker.kill()
    # The killed worker's transaction is rolled back: no row was changed, none half-way.
    stack.wait_until(lambda: not stack.erasing_now(), "the killed worker's statement ended")
    assert stack.changes() == {}
    with stack.app.app_context():
        (run,) = stack.request(reference).runs
        assert run.status == RunStatus.RUNNING and run.attempts == 1
    stack.worker.start()
    stack.wait_until(stack.completed(reference), "the request completed after the restart")
    stack.assert_erased_once([person], rows)
    with stack.app.app_context():
        (run,) = stack.request(reference).runs
        assert run.status == RunStatus.COMPLETED and run.attempts == 2
    (requeued,) = events(stack.app, "run.requeued")
    assert requeued.details["reason"] == "worker silent"
    stack.assert_chain_verifies()


@contextmanager
def own_postgres_cluster() -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """Create a PostgreSQL cluster of our own; yield its URL and functions to stop and start it.

    The machine's main cluster serves our own database; this one is the CRM's server,
    which the test stops in the middle of an erasure.
    """
    require("PostgreSQL", "127.0.0.1", sa.engine.make_url(POSTGRES_URL).port or 5432)
    needs("pg_createcluster", "postgresql-common")
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True)
    version = sorted(line.split()[0] for line in listing.stdout.splitlines())[-1]
    name, port = f"lethe_fault_{uuid.uuid4().hex[:8]}", free_port()
    ctl = ["pg_ctlcluster", "--skip-systemctl-redirect", version, name]
    subprocess.run(
        ["pg_createcluster", "--start", "-p", str(port), version, name, "--", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    try:
        wait_for_port(port, "the CRM's PostgreSQL")
        admin = sa.create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE crm")
        admin.dispose()

        def stop() -> None:
            subprocess.run([*ctl, "stop", "-m", "fast"], check=True, capture_output=True)

        def start() -> None:
            subprocess.run([*ctl, "start"], check=True, capture_output=True)

        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/crm", stop, start
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True)


def test_the_crm_database_stopping_mid_erasure_is_retried_until_it_is_back(stack_for):
    with own_postgres_cluster() as (crm_url, stop_crm, start_crm):
        stack = stack_for(crm_url)
        person = stack.people[0]
        rows = stack.rows_of(person)
        reference = stack.erase(person)
        stack.wait_until(stack.erasing_now, "the CRM is being changed")
        stop_crm()
        stack.crm.dispose()  # its pooled connections died with the server

        def retried_while_down() -> bool:
            (run,) = stack.request(reference).runs
            return run.attempts >= 3 and run.status == RunStatus.PLANNED

        stack.wait_until(retried_while_down, "the erasure retried while the CRM was down")
        start_crm()
        stack.wait_until(stack.completed(reference), "the request completed once the CRM was back")
        stack.assert_erased_once([person], rows)
        with stack.app.app_context():
            (run,) = stack.request(reference).runs
            assert run.status == RunStatus.COMPLETED
        assert len(events(stack.app, "run.retry_scheduled")) >= 2
        stack.assert_chain_verifies()


def test_a_broker_restarted_mid_run_loses_nothing(stack_for, crm_on_postgres):
    stack = stack_for(crm_on_postgres)
    stack.worker.stop()  # the queue fills while no worker listens
    rows = set().union(*(stack.rows_of(person) for person in stack.people))
    references = [stack.erase(person) for person in stack.people]
    stack.worker.start()
    stack.wait_until(stack.erasing_now, "the first erasure is under way")
    # Redis restarts and forgets its queue: the other erasures' tasks are gone.
    stack.broker.kill()
    stack.broker.start()
    stack.wait_until(
        stack.completed(*references), "every request completed after the broker restarted"
    )
    stack.assert_erased_once(stack.people, rows)
    reasons = {event.details["reason"] for event in events(stack.app, "run.requeued")}
    assert "task lost" in reasons
    stack.assert_chain_verifies()
