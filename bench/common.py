"""What the benchmarks share: where the databases are, the CRM's shape, Lethe's settings."""

from __future__ import annotations

import os
import random
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
SEED = 20260101
#: Customers at --scale 1 on the server databases; SQLite gets a tenth.
CUSTOMERS = 1_000_000
SQLITE_CUSTOMERS = 100_000
#: Rows per customer in each related table: 2 orders, 4 order lines, 1 ticket, 3 events.
PER_CUSTOMER = {"orders": 2, "order_lines": 4, "tickets": 1, "events": 3}
DIALECTS = ("postgresql", "mariadb", "sqlite")
DATABASE = os.environ.get("LETHE_BENCH_DB", "lethe_bench")


def sqlite_path() -> Path:
    """Return where the SQLite copy of the CRM lives."""
    return Path(os.environ.get("LETHE_BENCH_SQLITE", ROOT / "instance" / "bench" / "crm.sqlite"))


def url(dialect: str, database: str = DATABASE) -> str:
    """Return the SQLAlchemy URL of the benchmark database on ``dialect``."""
    if dialect == "postgresql":
        host = os.environ.get("LETHE_BENCH_PG", "postgres@127.0.0.1:5432")
        return f"postgresql+psycopg://{host}/{database}"
    if dialect == "mariadb":
        host = os.environ.get("LETHE_BENCH_MARIADB", "root@127.0.0.1:3306")
        return f"mysql+pymysql://{host}/{database}?charset=utf8mb4"
    if dialect == "sqlite":
        return f"sqlite:///{sqlite_path()}"
    raise ValueError(dialect)


def customers(dialect: str, scale: float) -> int:
    """Return how many customers the CRM holds on ``dialect`` at ``scale``."""
    base = SQLITE_CUSTOMERS if dialect == "sqlite" else CUSTOMERS
    return max(100, int(base * scale))


def email(customer_id: int) -> str:
    """Return the address of customer ``customer_id`` (the generator's rule)."""
    return f"customer{customer_id}@example.com"


def pick_subjects(engine: sa.Engine, total: int, count: int, salt: str) -> list[int]:
    """Return ``count`` distinct customers not yet erased, in a seeded random order.

    The order is the same for the same seed and salt; customers an earlier run erased are
    skipped, so that the benchmarks can be run again without generating the data again.
    """
    order = list(range(1, total + 1))
    random.Random(f"{SEED}:{salt}").shuffle(order)
    picked: list[int] = []
    with engine.connect() as conn:
        for start in range(0, total, 2000):
            chunk = order[start : start + 2000]
            ids = ",".join(map(str, chunk))
            fresh = set(
                conn.execute(
                    sa.text(f"SELECT id FROM customers WHERE id IN ({ids}) AND email LIKE 'cust%'")
                ).scalars()
            )
            picked += [c for c in chunk if c in fresh][: count - len(picked)]
            if len(picked) == count:
                return picked
    raise RuntimeError(f"only {len(picked)} customers left to erase; run bench.datagen again")


def lethe_settings(dialect: str) -> dict:
    """Return the ``systems.toml`` table Lethe's SQL connector gets for the CRM."""
    kept = {"action": "anonymise", "ground": "art17-3-b", "note": "kept under tax law"}
    return {
        "url": url(dialect),
        "subject": {"table": "customers", "columns": ["email"], "match": "exact"},
        "tables": {
            "order_lines": {"action": "delete"},
            "tickets": {"action": "delete"},
            "events": {"action": "delete"},
            "orders": {
                **kept,
                "columns": {"shipping_name": "null", "shipping_address": "null"},
            },
            "customers": {
                **kept,
                "columns": {
                    "email": "placeholder",
                    "full_name": "fixed:erased",
                    "phone": "null",
                    "city": "null",
                    "birth_date": "year",
                },
            },
        },
    }


def engine(dialect: str, database: str = DATABASE) -> sa.Engine:
    """Return an engine on the benchmark database."""
    return sa.create_engine(url(dialect, database))


@contextmanager
def timer() -> Iterator[list[float]]:
    """Measure the block's wall time in seconds, appended to the list yielded."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)


def median(values: list[float]) -> float:
    """Return the median of ``values``."""
    return statistics.median(values)


def timed(action: Callable[[], object]) -> float:
    """Run ``action`` and return how long it took, in seconds."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def free_port() -> int:
    """Return a loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(
    ready: Callable[[], bool], process: subprocess.Popen, what: str, timeout: float
) -> None:
    """Poll ``ready`` until it answers True; raise if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.1)


def drop_postgres_database(name: str) -> None:
    """Drop the PostgreSQL database ``name`` of the benchmarks, if it exists."""
    admin = sa.create_engine(url("postgresql", "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()
