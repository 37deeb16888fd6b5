"""A burst of portal submissions against gunicorn: every accepted one stored once, mailed once.

Starts gunicorn (2 workers) on a free loopback port against a fresh PostgreSQL database,
with a real SMTP server on loopback catching the mail, and fires N submissions (distinct
addresses) from an asyncio/httpx client, C at a time.  Each submission GETs the form for
its CSRF token and session cookie, then POSTs it, as a browser does.  Then it checks that
accepted submissions == requests stored == verification emails caught, with no address
stored or mailed twice, and prints a table with the POST rate and latency.

The portal's rate limits (20 per hour per IP) would refuse a burst from one address, which
is their purpose, so this run switches them off (``RATELIMIT_ENABLED=False``); any other
answer than the "check your inbox" redirect counts as not accepted.

    .venv/bin/python bench/intake_load.py [--requests 2000] [--concurrency 50] [--workers 2]

Needs PostgreSQL (``LETHE_TEST_POSTGRES_URL``, default postgres@127.0.0.1:5432, trust).
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from email import message_from_bytes, policy
from pathlib import Path

import httpx
import sqlalchemy as sa
from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "LETHE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
CSRF = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')


class Catcher:
    """An SMTP handler that keeps the recipients of every message it accepts."""

    def __init__(self) -> None:
        self.recipients: list[str] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        message = message_from_bytes(envelope.content, policy=policy.default)
        with self._lock:
            self.recipients.append(str(message["To"]))
        return "250 Message accepted for delivery"


def free_port() -> int:
    """Return a loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def fresh_postgres():
    """Create an empty PostgreSQL database, yield its URL and drop it afterwards."""
    name = f"lethe_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield sa.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def prepare(env: dict[str, str]) -> None:
    """Migrate the database and create the secrets once, before the workers race for them."""
    subprocess.run(
        [str(Path(sys.executable).parent / "lethe"), "db", "upgrade"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


@contextmanager
def gunicorn(env: dict[str, str], workers: int):
    """Run gunicorn on a free loopback port and yield its base URL once it answers."""
    port = free_port()
    app = "core:create_app({'RATELIMIT_ENABLED': False})"
    command = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        [*command, "--log-level", "warning", app],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


async def submit(url: str, email: str, tls: ssl.SSLContext) -> tuple[int, float]:
    """GET the form, POST one erasure request; return the POST's status and seconds."""
    # A client of its own, as each person has a browser: its cookie jar and connections.
    # (One TLS context for all: building one per client costs more CPU than the request.)
    async with httpx.AsyncClient(base_url=url, timeout=60, verify=tls) as client:
        form = await client.get("/")
        token = CSRF.search(form.text)
        if form.status_code != 200 or token is None:
            return form.status_code or -1, 0.0
        data = {
            "email": email,
            "request_type": "erasure",
            "confirmed": "yes",
            "csrf_token": token.group(1),
        }
        started = time.perf_counter()
        answer = await client.post("/", data=data)
        elapsed = time.perf_counter() - started
    accepted = answer.status_code == 302 and answer.headers.get("location", "").endswith(
        "/submitted"
    )
    return (302 if accepted else answer.status_code), elapsed


async def burst(url: str, emails: list[str], concurrency: int):
    """Send every submission, ``concurrency`` at a time; return (email, status, seconds)."""
    gate = asyncio.Semaphore(concurrency)
    tls = ssl.create_default_context()

    async def one(email: str):
        async with gate:
            try:
                status, seconds = await submit(url, email, tls)
            except httpx.HTTPError as exc:
                return email, type(exc).__name__, 0.0
            return email, status, seconds

    return await asyncio.gather(*(one(e) for e in emails))


def percentile(values: list[float], share: float) -> float:
    """Return the ``share`` percentile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def run(requests: int = 2000, concurrency: int = 50, workers: int = 2) -> dict:
    """Run the burst and return its counts, checks and timings."""
    catcher = Catcher()
    smtp_port = free_port()
    smtp = Controller(catcher, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        with fresh_postgres() as database_url, tempfile.TemporaryDirectory() as instance:
            env = {
                **os.environ,
                "LETHE_DATABASE_URL": database_url,
                "LETHE_INSTANCE_PATH": instance,
                "LETHE_SMTP_HOST": "127.0.0.1",
                "LETHE_SMTP_PORT": str(smtp_port),
                "LETHE_BROKER_URL": f"sqla+sqlite:///{instance}/broker.sqlite",
            }
            env.pop("LETHE_ENV", None)
            prepare(env)
            tag = uuid.uuid4().hex[:6]
            emails = [f"load-{tag}-{i}@example.com" for i in range(requests)]
            with gunicorn(env, workers) as url:
                started = time.perf_counter()
                results = asyncio.run(burst(url, emails, concurrency))
                wall = time.perf_counter() - started
            engine = sa.create_engine(database_url)
            with engine.connect() as conn:
                stored = conn.scalar(sa.text("SELECT count(*) FROM data_subject_request"))
                people = conn.scalar(sa.text("SELECT count(*) FROM subject_identity"))
                queued = conn.execute(
                    sa.text("SELECT count(*), count(sent_at), count(body_sealed) FROM mail_queue")
                ).one()
            engine.dispose()
    finally:
        smtp.stop()
    accepted = [e for e, status, _ in results if status == 302]
    mailed = Counter(catcher.recipients)
    post_times = [s for _, status, s in results if status == 302]
    report = {
        "submissions": requests,
        "concurrency": concurrency,
        "workers": workers,
        "accepted": len(accepted),
        "not_accepted": dict(Counter(str(s) for _, s, _ in results if s != 302)),
        "stored": stored,
        "people": people,
        "queued": queued[0],
        "sent": queued[1],
        "bodies_left": queued[2],
        "emails": sum(mailed.values()),
        "mailed_twice": sum(1 for n in mailed.values() if n > 1),
        "accepted_not_mailed": len(set(accepted) - set(mailed)),
        "wall_seconds": wall,
        "posts_per_second": len(post_times) / wall if wall else 0.0,
        "p50_ms": 1000 * statistics.median(post_times) if post_times else 0.0,
        "p99_ms": 1000 * percentile(post_times, 0.99) if post_times else 0.0,
    }
    report["ok"] = (
        report["accepted"] == report["stored"] == report["people"] == report["emails"]
        and report["queued"] == report["sent"] == report["accepted"]
        and report["bodies_left"] == 0
        and report["mailed_twice"] == 0
        and report["accepted_not_mailed"] == 0
    )
    return report


def print_table(report: dict) -> None:
    """Print the report as a two-column table."""
    rows = [
        ("submissions (GET form + POST)", report["submissions"]),
        ("concurrency / gunicorn workers", f"{report['concurrency']} / {report['workers']}"),
        ("accepted (302 to 'check your inbox')", report["accepted"]),
        ("not accepted, by answer", report["not_accepted"] or "none"),
        ("requests stored", report["stored"]),
        ("people stored", report["people"]),
        (
            "emails queued / sent / bodies left",
            f"{report['queued']} / {report['sent']} / {report['bodies_left']}",
        ),
        ("verification emails caught by SMTP", report["emails"]),
        ("addresses mailed twice", report["mailed_twice"]),
        ("accepted but not mailed", report["accepted_not_mailed"]),
        ("wall time, s", f"{report['wall_seconds']:.1f}"),
        ("accepted submissions/s", f"{report['posts_per_second']:.1f}"),
        ("POST latency p50 / p99, ms", f"{report['p50_ms']:.0f} / {report['p99_ms']:.0f}"),
        ("count in == count stored == emails", "yes" if report["ok"] else "NO"),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for label, value in rows:
        print(f"| {label.ljust(width)} | {value} |")


def main() -> int:
    """Parse the arguments, run the burst, print the table; exit 1 if a check failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    report = run(args.requests, args.concurrency, args.workers)
    print_table(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
