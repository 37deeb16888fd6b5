"""Export: one person with 1,000,000 rows, through SqlConnector.export and PackageWriter.

The person is the only customer of a dedicated PostgreSQL database (lethe_bench_export,
recreated each time): 200,000 orders, 400,000 order lines, 100,000 tickets and 300,000
events.  Measured: the wall time of the whole export (database read, CSV and JSON files,
the readable index, the sealed ZIP), tracemalloc's peak of Python allocations during it,
and the process's peak resident set size (VmHWM) before and after; getrusage's ru_maxrss
is recorded too, but on Linux it includes the parent's size from before the exec.
WeasyPrint, which the export loads only to draw summary.pdf, is loaded after the app and
before tracing starts, so that tracemalloc's own bookkeeping does not swell the RSS.

    .venv/bin/python -m bench.export_memory --rows 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import sqlalchemy as sa

from bench import common, datagen
from connectors.base import Subject
from connectors.sql import SqlConnector

DATABASE = "lethe_bench_export"
SHARE = {"orders": 0.2, "order_lines": 0.4, "tickets": 0.1, "events": 0.3}


def generate(rows: int) -> None:
    """Recreate the export database: one customer owning ``rows`` related rows."""
    admin = sa.create_engine(common.url("postgresql", "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
    admin.dispose()
    engine = sa.create_engine(common.url("postgresql", DATABASE), isolation_level="AUTOCOMMIT")
    n = {t: int(rows * s) for t, s in SHARE.items()}
    with engine.connect() as conn:
        for statement in datagen._ddl("postgresql", inline_fks=False):
            conn.execute(sa.text(statement))
        for statement in [
            "INSERT INTO customers VALUES (1, 'whale@example.com', 'Wanda Whale',"
            " '+44 20 7946 0001', 'London', '1980-05-17', now(), true)",
            "INSERT INTO orders SELECT i, 1, TIMESTAMP '2021-01-01' + i * INTERVAL '1 minute',"
            " 'Wanda Whale', '1 High Street, London', (i % 50000) / 100.0"
            f" FROM generate_series(1, {n['orders']}) AS g(i)",
            f"INSERT INTO order_lines SELECT i, 1 + (i - 1) % {n['orders']}, 'kettle', 1 + i % 4,"
            f" (i % 20000) / 100.0 FROM generate_series(1, {n['order_lines']}) AS g(i)",
            "INSERT INTO tickets SELECT i, 1, 'Question about order ' || i, 'Hello, я Ванда,"
            " 我需要帮助 with order ' || i, TIMESTAMP '2022-01-01' + i * INTERVAL '1 minute'"
            f" FROM generate_series(1, {n['tickets']}) AS g(i)",
            "INSERT INTO events SELECT i, 1, 'page_view', TIMESTAMP '2023-01-01' +"
            " i * INTERVAL '1 second', '/shop/item/' || i"
            f" FROM generate_series(1, {n['events']}) AS g(i)",
            *datagen._indexes("postgresql"),
            *datagen._foreign_keys(),
            "VACUUM ANALYZE",
        ]:
            conn.execute(sa.text(statement))
    engine.dispose()


def peak_rss_mib() -> float:
    """Return this process's peak resident set size (VmHWM), in MiB.

    Unlike getrusage's ru_maxrss, which Linux carries over an exec from the forked copy of
    the parent, VmHWM belongs to this process image alone.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def export_once(rows: int) -> dict:
    """Export the person once into a temporary folder; return time and memory."""
    from core import create_app
    from core.export_package import PackageWriter

    with tempfile.TemporaryDirectory() as folder:
        os.environ["LETHE_INSTANCE_PATH"] = str(Path(folder) / "instance")
        app = create_app(
            {"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder}/lethe.sqlite"}
        )
        settings = common.lethe_settings("postgresql") | {"url": common.url("postgresql", DATABASE)}
        connector = SqlConnector("crm", settings)
        connector.schema()
        # The export loads WeasyPrint only to draw summary.pdf, at its end.  Load it now,
        # after the app (as a worker does) but before tracing starts: tracemalloc's own
        # record of the objects that import makes would add some 25 MiB to the peak RSS,
        # which no real export carries.  The peak comes at the end, with WeasyPrint and
        # the fonts loaded, whichever way.
        importlib.import_module("core.pdf")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        hwm_before = peak_rss_mib()
        with app.app_context():
            tracemalloc.start()
            start = time.perf_counter()
            with PackageWriter(
                Path(folder) / "package.zip",
                os.urandom(32),
                b"export:BENCH",
                reference="DSR-BENCH",
                language="en",
                generated_at=dt.datetime.now(dt.UTC),
                controller="Example Ltd",
            ) as package:
                counts = package.add_system(
                    "crm", "Customer accounts", {}, connector.export(Subject("whale@example.com"))
                )
            elapsed = time.perf_counter() - start
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        size = (Path(folder) / "package.zip").stat().st_size
        connector.close()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    exported = sum(counts.values())
    assert exported == rows + 1, counts
    return {
        "seconds": elapsed,
        "peak_mib": peak / 2**20,
        "rss_before_mib": before,
        "rss_max_mib": after,
        "hwm_before_mib": hwm_before,
        "hwm_mib": peak_rss_mib(),
        "rows": exported,
        "package_mib": size / 2**20,
    }


def run(args: argparse.Namespace) -> list[dict]:
    """Generate, export --runs times (each in a fresh process), return the result rows."""
    import json
    import subprocess
    import sys

    start = time.perf_counter()
    generate(args.rows)
    print(f"export database generated in {time.perf_counter() - start:.1f} s", flush=True)
    results = []
    for _ in range(args.runs):
        # A fresh process each time, so that its maximum RSS is this export's alone.
        out = subprocess.run(
            [sys.executable, "-m", "bench.export_memory", "--once", "--rows", str(args.rows)],
            check=True,
            capture_output=True,
            text=True,
            cwd=common.ROOT,
        ).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(f"export: {results[-1]}", flush=True)
    if not args.keep:
        common.drop_postgres_database(DATABASE)
    med = {k: common.median([r[k] for r in results]) for k in results[0]}
    added = max(med["peak_mib"], med["hwm_mib"] - med["hwm_before_mib"])
    return [
        {
            "benchmark": f"export of one person with {args.rows:,} rows",
            "database": "postgresql",
            "measure": f"{med['seconds']:.0f} s (with tracemalloc on);"
            f" tracemalloc peak {med['peak_mib']:.1f} MiB; process peak RSS (VmHWM)"
            f" {med['hwm_mib']:.0f} MiB, of which {med['hwm_before_mib']:.0f} MiB before the"
            " export began (interpreter, app, WeasyPrint); package"
            f" {med['package_mib']:.0f} MiB",
            "value": f"{med['hwm_mib']:.0f} MiB process peak; {added:.0f} MiB added by the export",
            "target": "< 200 MB peak",
            "met": med["hwm_mib"] * 1.048576 < 200,
            "runs": f"median of {args.runs} runs, each in a fresh process",
        }
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this benchmark's options to ``parser``."""
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows the person owns")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep lethe_bench_export")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run, print the result rows."""
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.once:
        print(json.dumps(export_once(args.rows)))
        return
    for row in run(args):
        print(row)


if __name__ == "__main__":
    main()
