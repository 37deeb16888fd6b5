"""A burst of portal submissions against gunicorn: every accepted one stored once, mailed once.

Starts gunicorn on a free loopback port against a fresh PostgreSQL database, with a real
SMTP server on loopback (a process of its own) catching the mail, and fires N submissions
(distinct addresses) from asyncio/httpx clients, C at a time, in P client processes.  Each
submission GETs the form for its CSRF token and session cookie, then POSTs it, as a browser
does.  Then it checks that accepted submissions == requests stored == verification emails
caught, with no address stored or mailed twice, and prints a table with the POST rate, the
latency and where the CPU went: gunicorn's workers, the client, the SMTP sink.

The load client is Python too and runs on the same machine: on 2 cores it takes a large
share of the CPU the server would otherwise have, which the table shows (client CPU).

The portal's rate limits (20 per hour per IP) would refuse a burst from one address, which
is their purpose, so this run switches them off (``RATELIMIT_ENABLED=False``, in this
benchmark only); any other answer than the "check your inbox" redirect counts as not
accepted.

    .venv/bin/python -m bench.intake_load [--requests 2000] [--concurrency 50] [--workers 2]
        [--worker-class sync|gthread] [--threads 4] [--client-processes 1]

Needs PostgreSQL (``LETHE_TEST_POSTGRES_URL``, default postgres@127.0.0.1:5432, trust).
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import signal
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
from typing import Any

import httpx
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from bench.common import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "LETHE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
CSRF = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')


class Catcher:
    """An SMTP handler that writes the recipient of every message it accepts, one a line."""

    def __init__(self, path: str) -> None:
        self.out = open(path, "a", encoding="utf-8")  # noqa: SIM115  (closed with the sink)
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        message = message_from_bytes(envelope.content, policy=policy.default)
        with self._lock:
            self.out.write(f"{message['To']}\n")
            self.out.flush()
        return "250 Message accepted for delivery"


def _serve_smtp(port: int, path: str, ready, stop, cpu) -> None:
    catcher = Catcher(path)
    controller = Controller(catcher, hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()
    catcher.out.close()
    cpu.value = time.process_time()


@contextmanager
def smtp_sink(port: int, path: str):
    """Run the SMTP server in a process of its own; yield a function returning its CPU s."""
    # Its own process, so that its CPU is neither the client's nor hidden behind its GIL.
    context = multiprocessing.get_context("fork")
    ready, stop, cpu = context.Event(), context.Event(), context.Value("d", 0.0)
    sink = context.Process(target=_serve_smtp, args=(port, path, ready, stop, cpu), daemon=True)
    sink.start()
    if not ready.wait(30):
        sink.kill()
        raise RuntimeError("the SMTP sink did not start")
    try:
        yield lambda: cpu.value
    finally:
        stop.set()
        sink.join(30)


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


def cpu_seconds(session: int) -> float:
    """Return the CPU seconds used so far by the processes of ``session`` (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[3]) == session:  # field 6 of stat(5): the session id
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / tick


@contextmanager
def gunicorn(env: dict[str, str], workers: int, worker_class: str = "sync", threads: int = 1):
    """Run gunicorn on a free loopback port; yield its URL and a function giving its CPU s."""
    port = free_port()
    app = "core:create_app({'RATELIMIT_ENABLED': False})"
    command = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}"]
    command += ["-k", worker_class, "--threads", str(threads)]
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

        def answers() -> bool:
            try:
                return httpx.get(url + "/", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until_ready(answers, server, "gunicorn", timeout=60)
        for _ in range(4 * workers):  # every worker imports its lazy parts before the clock
            httpx.get(url + "/", timeout=10)
        yield url, lambda: cpu_seconds(server.pid)
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


def _client(url: str, emails: list[str], concurrency: int) -> tuple[list, float]:
    """Run one client's share of the burst; return its results and its CPU seconds."""
    started = time.process_time()
    results = asyncio.run(burst(url, emails, concurrency))
    return results, time.process_time() - started


def fire(url: str, emails: list[str], concurrency: int, processes: int) -> tuple[list, float]:
    """Send the burst from ``processes`` client processes; return results and client CPU s."""
    if processes <= 1:
        return _client(url, emails, concurrency)
    shares = [emails[i::processes] for i in range(processes)]
    per = max(1, concurrency // processes)
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        parts = pool.starmap(_client, [(url, share, per) for share in shares])
    return [r for results, _ in parts for r in results], sum(cpu for _, cpu in parts)


def percentile(values: list[float], share: float) -> float:
    """Return the ``share`` percentile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def run(
    requests: int = 2000,
    concurrency: int = 50,
    workers: int = 2,
    worker_class: str = "sync",
    threads: int = 1,
    client_processes: int = 1,
) -> dict[str, Any]:
    """Run the burst and return its counts, checks, timings and CPU shares."""
    smtp_port = free_port()
    measured: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as instance:
        mailed_file = Path(instance) / "mailed.txt"
        with smtp_sink(smtp_port, str(mailed_file)) as smtp_cpu, fresh_postgres() as database:
            env = {
                **os.environ,
                "LETHE_DATABASE_URL": database,
                "LETHE_INSTANCE_PATH": instance,
                "LETHE_SMTP_HOST": "127.0.0.1",
                "LETHE_SMTP_PORT": str(smtp_port),
                "LETHE_BROKER_URL": f"sqla+sqlite:///{instance}/broker.sqlite",
            }
            env.pop("LETHE_ENV", None)
            prepare(env)
            tag = uuid.uuid4().hex[:6]
            emails = [f"load-{tag}-{i}@example.com" for i in range(requests)]
            with gunicorn(env, workers, worker_class, threads) as (url, server_cpu):
                before = server_cpu()
                started = time.perf_counter()
                results, measured["cpu_client"] = fire(url, emails, concurrency, client_processes)
                measured["wall"] = time.perf_counter() - started
                measured["cpu_server"] = server_cpu() - before
                measured["load_after"] = os.getloadavg()[0]
            measured.update(_count_stored(database))
        # The sink has stopped and flushed; its CPU covers the warm-up and the burst.
        measured["cpu_smtp"] = smtp_cpu()
        mailed = Counter(mailed_file.read_text().split()) if mailed_file.exists() else Counter()
    setup = {
        "submissions": requests,
        "concurrency": concurrency,
        "workers": workers,
        "worker_class": worker_class,
        "threads": threads,
        "client_processes": client_processes,
    }
    return _report(setup, measured, results, mailed)


def _count_stored(database: str) -> dict[str, int]:
    engine = sa.create_engine(database)
    with engine.connect() as conn:
        stored = conn.scalar(sa.text("SELECT count(*) FROM data_subject_request"))
        people = conn.scalar(sa.text("SELECT count(*) FROM subject_identity"))
        queued = conn.execute(
            sa.text("SELECT count(*), count(sent_at), count(body_sealed) FROM mail_queue")
        ).one()
    engine.dispose()
    return {
        "stored": stored,
        "people": people,
        "queued": queued[0],
        "sent": queued[1],
        "bodies_left": queued[2],
    }


def _report(setup: dict, measured: dict, results: list, mailed: Counter) -> dict[str, Any]:
    wall = measured["wall"]
    accepted = [e for e, status, _ in results if status == 302]
    post_times = [s for _, status, s in results if status == 302]
    done = max(1, len(results))
    report = {
        **setup,
        "cores": os.cpu_count(),
        "load_before": measured["load_before"],
        "load_after": measured["load_after"],
        "accepted": len(accepted),
        "not_accepted": dict(Counter(str(s) for _, s, _ in results if s != 302)),
        **{k: measured[k] for k in ("stored", "people", "queued", "sent", "bodies_left")},
        "emails": sum(mailed.values()),
        "mailed_twice": sum(1 for n in mailed.values() if n > 1),
        "accepted_not_mailed": len(set(accepted) - set(mailed)),
        "wall_seconds": wall,
        "posts_per_second": len(post_times) / wall if wall else 0.0,
        "http_requests_per_second": 2 * len(results) / wall if wall else 0.0,
        "p50_ms": 1000 * statistics.median(post_times) if post_times else 0.0,
        "p99_ms": 1000 * percentile(post_times, 0.99) if post_times else 0.0,
        "server_cpu_ms": 1000 * measured["cpu_server"] / done,
        "client_cpu_ms": 1000 * measured["cpu_client"] / done,
        "smtp_cpu_ms": 1000 * measured["cpu_smtp"] / done,
        "server_cores": measured["cpu_server"] / wall if wall else 0.0,
        "client_cores": measured["cpu_client"] / wall if wall else 0.0,
    }
    report["ok"] = (
        report["accepted"] == report["stored"] == report["people"] == report["emails"]
        and report["queued"] == report["sent"] == report["accepted"]
        and report["bodies_left"] == 0
        and report["mailed_twice"] == 0
        and report["accepted_not_mailed"] == 0
    )
    return report


def print_table(report: dict[str, Any]) -> None:
    """Print the report as a two-column table."""
    server = f"{report['workers']} {report['worker_class']} worker(s)"
    if report["worker_class"] == "gthread":
        server += f" x {report['threads']} threads"
    rows = [
        ("submissions (GET form + POST)", report["submissions"]),
        ("machine cores (os.cpu_count)", report["cores"]),
        (
            "load average before / after",
            f"{report['load_before']:.1f} / {report['load_after']:.1f}",
        ),
        ("gunicorn", server),
        (
            "load client",
            f"httpx AsyncClient, {report['client_processes']} process(es), "
            f"{report['concurrency']} at a time, on the same cores",
        ),
        ("portal rate limits", "off for this benchmark (RATELIMIT_ENABLED=False)"),
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
        ("HTTP requests/s (GET + POST)", f"{report['http_requests_per_second']:.1f}"),
        ("POST latency p50 / p99, ms", f"{report['p50_ms']:.0f} / {report['p99_ms']:.0f}"),
        (
            "CPU per submission, ms: gunicorn / client / SMTP sink",
            f"{report['server_cpu_ms']:.1f} / {report['client_cpu_ms']:.1f}"
            f" / {report['smtp_cpu_ms']:.1f}",
        ),
        (
            "cores busy: gunicorn / client",
            f"{report['server_cores']:.2f} / {report['client_cores']:.2f}",
        ),
        ("count in == count stored == emails", "yes" if report["ok"] else "NO"),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for label, value in rows:
        print(f"| {label.ljust(width)} | {value} |")


def results(report: dict[str, Any]) -> list[dict]:
    """Return the burst as a row of docs/benchmarks.md."""
    met = report["ok"] and report["posts_per_second"] >= 300 and report["p99_ms"] < 100
    server = f"gunicorn, {report['workers']} {report['worker_class']} workers"
    if report["worker_class"] == "gthread":
        server += f" × {report['threads']} threads"
    return [
        {
            "benchmark": "portal intake under load",
            "database": "postgresql",
            "value": f"{report['posts_per_second']:.1f} submissions/s"
            f" ({report['http_requests_per_second']:.1f} HTTP requests/s);"
            f" POST p50 {report['p50_ms']:,.0f} ms, p99 {report['p99_ms']:,.0f} ms",
            "measure": f"{report['submissions']:,} submissions (each a GET of the form, then the"
            f" POST), {report['concurrency']} at a time, from {report['client_processes']}"
            f" httpx client process(es) on the same {report['cores']} cores; {server};"
            f" {report['accepted']:,} accepted = {report['stored']:,} stored ="
            f" {report['emails']:,} mailed, {report['mailed_twice']} twice;"
            f" server CPU {report['server_cpu_ms']:.1f} ms, client"
            f" {report['client_cpu_ms']:.1f} ms and SMTP sink {report['smtp_cpu_ms']:.1f} ms"
            f" per submission; load average {report['load_before']:.1f} before,"
            f" {report['load_after']:.1f} after; rate limits off for this run only",
            "target": "≥ 300 requests/s, p99 < 100 ms",
            "met": met,
            "runs": "1 run",
        }
    ]


def main() -> int:
    """Parse the arguments, run the burst, print the table; exit 1 if a check failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--worker-class", choices=("sync", "gthread"), default="sync")
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    parser.add_argument(
        "--client-processes", type=int, default=1, help="load client processes (each asyncio)"
    )
    args = parser.parse_args()
    report = run(
        args.requests,
        args.concurrency,
        args.workers,
        args.worker_class,
        args.threads if args.worker_class == "gthread" else 1,
        args.client_processes,
    )
    print_table(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
