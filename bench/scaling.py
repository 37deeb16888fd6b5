"""Scaling out: a bulk erasure on 1, 2 and 4 Celery workers on Redis — people per second.

For each worker count: a fresh Lethe database on PostgreSQL, a bulk erasure batch of N
people of the benchmark CRM (PostgreSQL, built by ``bench.datagen``; each round takes N
customers nobody erased before) made and approved through the app's own code, as staff
do it (a CSV of addresses, ``create_csv_batch``, ``review_batch``, ``approve_batch``,
then ``start_batch`` queued), and that many ``lethe worker --concurrency 1`` processes
on a Redis of our own (a free loopback port, no persistence).  Measured: the time from
the approval to every member's request being finished (erased and verified in the CRM)
and to the batch being closed (every member's signed proof issued, the batch's signed
summary written), and people per second for each.  Afterwards every member is checked:
request completed, proof issued, and in the CRM no ticket or event left and the customer
anonymised.

    .venv/bin/python -m bench.scaling [--people 50] [--workers 1 2 4]

Needs PostgreSQL (``LETHE_BENCH_PG``, default postgres@127.0.0.1:5432) and redis-server.
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa

from bench import common, datagen
from bench.common import free_port, wait_until_ready
from bench.intake_load import cpu_seconds, fresh_postgres, prepare

LETHE = str(Path(sys.executable).parent / "lethe")
BOTTLENECK = (
    "The machine has {cores} cores: for CPU-bound work, workers beyond the number of cores"
    " cannot add throughput, and here they share the cores with PostgreSQL and whatever"
    " else runs (compare the cores the workers kept busy with the load average). Per person"
    " the bulk path creates a request (audit events, a run per system), erases and verifies"
    " them in the CRM, then renders and signs a PDF proof of deletion (WeasyPrint), one task"
    " per person: the proofs are most of the time from approval to closed, and they spread"
    " over the workers. The erasure itself goes a chunk ({chunk} people) per task and"
    " system, and the batch is started by one task, chunk after chunk: a batch smaller than"
    " a chunk is erased by one worker however many there are."
)


@contextmanager
def redis_of_our_own() -> Iterator[str]:
    """Run a throwaway redis-server on a free loopback port; yield its URL (without a DB)."""
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        + ["--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            try:
                return bool(redis.Redis.from_url(url).ping())
            except redis.ConnectionError:
                return False

        wait_until_ready(answers, server, "redis-server", timeout=20)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextmanager
def crm(customers: int) -> Iterator[str]:
    """Build a CRM of ``customers`` in a fresh PostgreSQL database; yield its URL, then drop."""
    name = f"lethe_scaling_crm_{uuid.uuid4().hex[:8]}"
    datagen.generate_server("postgresql", customers, common.SEED, name)
    try:
        yield common.url("postgresql", name)
    finally:
        common.drop_postgres_database(name)


def _toml(table: dict[str, Any], prefix: str = "") -> list[str]:
    """Return ``table`` as TOML lines: plain values first, then each sub-table."""
    lines = [f"[{prefix}]"] if prefix else []
    lines += [f"{key} = {json.dumps(v)}" for key, v in table.items() if not isinstance(v, dict)]
    for key, value in table.items():
        if isinstance(value, dict):
            lines += ["", *_toml(value, f"{prefix}.{key}" if prefix else key)]
    return lines


def systems_toml(crm_url: str) -> str:
    """Return the ``systems.toml`` that connects the benchmark CRM (the bench's settings)."""
    crm_table = {
        "connector": "sql",
        "label": "Benchmark CRM",
        **common.lethe_settings("postgresql"),
    }
    crm_table["url"] = crm_url
    return "\n".join(_toml({"systems": {"crm": crm_table}})) + "\n"


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (``create_app`` reads its configuration there)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def workers(env: dict[str, str], count: int, logs: Path) -> Iterator[list[subprocess.Popen]]:
    """Start ``count`` ``lethe worker --concurrency 1`` processes; stop them afterwards."""
    started = []
    try:
        for n in range(count):
            with open(logs / f"worker-{n}.log", "wb") as log:
                started.append(
                    subprocess.Popen(
                        [LETHE, "worker", "--concurrency", "1"],
                        cwd=common.ROOT,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_for_workers(celery, processes: list[subprocess.Popen], logs: Path) -> None:
    deadline = time.monotonic() + 300  # a loaded machine takes its time to import WeasyPrint
    while len(celery.control.ping(timeout=1.0) or []) < len(processes):
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            tail = (logs / "worker-0.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the workers did not all start; worker-0.log ends:\n{tail}")


def approve(app, emails: list[str]) -> int:
    """Create a CSV batch of ``emails`` and approve it as a DPO does; return its id."""
    from core.bulk import approve_batch, create_csv_batch, review_batch
    from core.bulk_csv import read_addresses
    from core.extensions import db
    from core.models import Role
    from core.staff import create_staff

    systems = app.extensions["lethe.systems"]
    with app.app_context():
        staff, _password = create_staff(db.session, "bench", "dpo@example.com", Role.DPO)
        data = ("email\n" + "\n".join(emails) + "\n").encode()
        report = read_addresses(data, max_bytes=len(data) + 1, max_rows=len(emails) + 1)
        batch = create_csv_batch(db.session, staff, "scaling benchmark", report)
        db.session.commit()
        review = review_batch(db.session, systems, batch)
        approve_batch(db.session, systems, batch, staff, batch.reference, review.digest)
        db.session.commit()
        return batch.id


def watch(app, batch_id: int, people: int, timeout: float) -> dict[str, float | None]:
    """Poll until the batch is closed; return seconds to 'all erased' and to 'closed'."""
    from core.bulk import DONE
    from core.bulk_run import FINISHED
    from core.extensions import db
    from core.models import DataSubjectRequest, ErasureBatch

    started, erased_after = time.perf_counter(), None
    with app.app_context():
        while True:
            elapsed = time.perf_counter() - started
            finished = db.session.scalar(
                sa.select(sa.func.count())
                .select_from(DataSubjectRequest)
                .where(
                    DataSubjectRequest.batch_id == batch_id,
                    DataSubjectRequest.status.in_(FINISHED),
                )
            )
            status = db.session.scalar(
                sa.select(ErasureBatch.status).where(ErasureBatch.id == batch_id)
            )
            db.session.rollback()  # a fresh snapshot on the next look
            if erased_after is None and finished >= people:
                erased_after = elapsed
            if status in DONE:
                return {"erased": erased_after or elapsed, "closed": elapsed, "status": status}
            if elapsed > timeout:
                return {"erased": erased_after, "closed": None, "status": status}
            time.sleep(0.25)


def check(app, batch_id: int, crm_url: str, customer_ids: list[int]) -> dict[str, int]:
    """Count what is wrong afterwards: members not completed or unproven, CRM rows left."""
    from core.extensions import db
    from core.models import DataSubjectRequest, Proof, Status

    with app.app_context():
        members = sa.select(DataSubjectRequest.id).where(DataSubjectRequest.batch_id == batch_id)
        not_completed = db.session.scalar(
            sa.select(sa.func.count()).select_from(
                members.where(DataSubjectRequest.status != Status.COMPLETED).subquery()
            )
        )
        proven = db.session.scalar(
            sa.select(sa.func.count(sa.distinct(Proof.request_id))).where(
                Proof.request_id.in_(members)
            )
        )
        total = db.session.scalar(sa.select(sa.func.count()).select_from(members.subquery()))
        db.session.rollback()
    ids = ",".join(map(str, customer_ids))
    engine = sa.create_engine(crm_url)
    with engine.connect() as conn:
        left = {
            table: conn.scalar(
                sa.text(f"SELECT count(*) FROM {table} WHERE customer_id IN ({ids})")  # noqa: S608
            )
            for table in ("tickets", "events")
        }
        left["customers"] = conn.scalar(
            sa.text(f"SELECT count(*) FROM customers WHERE id IN ({ids}) AND email LIKE 'cust%'")  # noqa: S608
        )
    engine.dispose()
    return {
        "members": total,
        "not_completed": not_completed,
        "unproven": total - proven,
        "crm_rows_left": sum(left.values()),
    }


def measure(count: int, emails: list[str], ids: list[int], crm_url: str, broker: str) -> dict:
    """Run one round: fresh Lethe database, batch approved, ``count`` workers; return it."""
    from core import create_app

    with fresh_postgres() as database, tempfile.TemporaryDirectory() as instance:
        systems_file = Path(instance) / "systems.toml"
        systems_file.write_text(systems_toml(crm_url), encoding="utf-8")
        env = {
            **os.environ,
            "LETHE_DATABASE_URL": database,
            "LETHE_INSTANCE_PATH": instance,
            "LETHE_BROKER_URL": broker,
            "LETHE_SYSTEMS_FILE": str(systems_file),
            "LETHE_RUN_JOBS_INLINE": "0",
        }
        for name in ("LETHE_ENV", "LETHE_SMTP_HOST"):  # bulk erasure emails nobody
            env.pop(name, None)
        prepare(env)
        with environment({k: v for k, v in env.items() if k.startswith("LETHE_")}):
            app = create_app()
        with workers(env, count, Path(instance)) as processes:
            _wait_for_workers(app.extensions["celery"], processes, Path(instance))
            batch_id = approve(app, emails)
            before = sum(cpu_seconds(p.pid) for p in processes)
            load_before = os.getloadavg()[0]
            from core.jobs import start_batch

            with app.app_context():
                start_batch.delay(batch_id)  # what the approve view does after its commit
            times = watch(app, batch_id, len(emails), timeout=max(300, 20 * len(emails)))
            cpu = sum(cpu_seconds(p.pid) for p in processes) - before
            load_after = os.getloadavg()[0]
        result = check(app, batch_id, crm_url, ids)
        with app.app_context():
            from core.extensions import db

            db.engine.dispose()
    closed = times["closed"]
    return {
        "workers": count,
        "people": len(emails),
        **times,
        **result,
        "erased_per_second": len(emails) / times["erased"] if times["erased"] else 0.0,
        "closed_per_second": len(emails) / closed if closed else 0.0,
        "worker_cpu_seconds": cpu,
        "worker_cores_busy": cpu / closed if closed else 0.0,
        "load": f"{load_before:.1f} / {load_after:.1f}",
        "ok": closed is not None
        and result["members"] == len(emails)
        and result["not_completed"] == result["unproven"] == result["crm_rows_left"] == 0,
    }


def run(people: int = 50, counts: tuple[int, ...] = (1, 2, 4)) -> list[dict]:
    """Run a round per worker count, each on ``people`` customers nobody erased before."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    customers = max(100, people * len(counts))
    rounds = []
    with crm(customers) as crm_url, redis_of_our_own() as redis_url:
        for n, count in enumerate(counts):
            ids = list(range(n * people + 1, (n + 1) * people + 1))
            emails = [common.email(i) for i in ids]
            # A Redis database per round: nothing left queued by one round reaches the next.
            rounds.append(measure(count, emails, ids, crm_url, f"{redis_url}/{n + 1}"))
            print_table(rounds[-1:], header=n == 0)
    return rounds


def bottleneck() -> str:
    """Return what limits the scaling, with this machine's cores and the bulk path's chunk."""
    from core.bulk import CHUNK

    return BOTTLENECK.format(cores=os.cpu_count(), chunk=CHUNK)


def print_table(rounds: list[dict], header: bool = True) -> None:
    """Print one line per worker count."""
    if header:
        print(
            "| workers | people | erased after, s | people/s erased | closed after, s "
            "| people/s closed | worker CPU s (cores busy) | load before / after | checks |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
    for r in rounds:
        erased = f"{r['erased']:.1f}" if r["erased"] is not None else "timed out"
        closed = f"{r['closed']:.1f}" if r["closed"] is not None else "timed out"
        problems = {k: r[k] for k in ("not_completed", "unproven", "crm_rows_left") if r[k]}
        verdict = "ok" if r["ok"] else f"**FAILED** {problems or r['status']}"
        print(
            f"| {r['workers']} | {r['people']} | {erased} | {r['erased_per_second']:.2f} "
            f"| {closed} | {r['closed_per_second']:.2f} "
            f"| {r['worker_cpu_seconds']:.0f} ({r['worker_cores_busy']:.2f}) | {r['load']} "
            f"| {verdict} |",
            flush=True,
        )


def results(rounds: list[dict]) -> list[dict]:
    """Return the rounds as rows of bench/run.py's table."""
    cores = os.cpu_count()
    return [
        {
            "benchmark": f"scaling out: bulk erasure, {r['workers']} Celery worker(s) on Redis",
            "database": "postgresql",
            "value": f"{r['closed_per_second']:.2f} people/s to batch closed",
            "measure": (
                f"{r['people']} people, approval to batch closed in "
                + (f"{r['closed']:.0f} s" if r["closed"] is not None else "— (timed out)")
                + (
                    f" (all erased after {r['erased']:.0f} s, {r['erased_per_second']:.2f}"
                    " people/s)"
                    if r["erased"] is not None
                    else ""
                )
                + f"; workers used {r['worker_cores_busy']:.2f} of {cores} cores"
                + ("" if r["ok"] else "; **a check failed**")
            ),
            "target": "throughput per worker count",
            "met": None,
            "runs": "1 run",
        }
        for r in rounds
    ]


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run every worker count, print the table; 1 if a check failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=50, help="members of each batch")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores; broker: a redis-server of our own", flush=True)
    rounds = run(args.people, tuple(args.workers))
    print()
    print(bottleneck())
    return 0 if all(r["ok"] for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
