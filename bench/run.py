"""Run every benchmark, print the table and write docs/benchmarks.md.

make bench                                   # = .venv/bin/python -m bench.run
.venv/bin/python -m bench.run --scale 0.01   # a quick try at 1/100 of the size
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from bench import common, datagen, erasure, export_memory, intake_load, proof_pdf, scaling

DOC = common.ROOT / "docs" / "benchmarks.md"

#: What was measured exactly, and what limits the targets that are missed.
ANALYSIS = """## What was measured

- **Single-subject erasure**: *Lethe* is `SqlConnector.plan` + `erase` + `verify` on one
  connector whose schema was read beforehand (as in a long-running worker): the plan is
  one SELECT counting the person's rows in every table, the erasure one transaction with
  one statement per table, the verification one SELECT again; the statements are built
  once per connector and run with bound parameters, and a pooled connection is pinged
  only when it sat idle for 10 s. *Hand-written* is one transaction:
  look the customer up by address, delete their order lines, tickets and events, null the
  orders' shipping name and address, anonymise the customer (placeholder address, fixed
  name, NULL phone and city, birth date cut to the year); it neither plans nor verifies.
  Both go through SQLAlchemy on the same kind of engine. Before timing, both are run on
  one customer (the hand-written one rolled back) and must leave identical rows; then each
  run erases a different customer from a seeded list and commits. Lethe's configuration
  matches addresses exactly (`match = "exact"`): case-insensitive matching compares
  `lower(email)`, which the plain index on `email` cannot serve.
- **Bulk erasure**: *Lethe* is `plan_many` + `erase_many` + `verify_many` on batches of
  200 people, as the app's bulk erasure hands each chunk of a batch to them (one Celery
  task per chunk and system; 1,000 per batch measured about the same): the batch's
  addresses go into a temporary table, one statement per table changes everyone's rows,
  and the plan and the verification count each person's rows with one SELECT, so that
  every person still gets an outcome of their own. It covers the full 10,000 (the
  *measured* column says so, or how many people fit in the time budget when the time was
  scaled). The *set-based* script erases the 10,000 in one transaction: load their
  addresses into a temporary table, then one DELETE or UPDATE per table joined to it (on
  MariaDB, multi-table DELETE/UPDATE with JOINs, as a MariaDB DBA writes them). The
  *row-by-row* loop finds each row and deletes or updates it by key, one statement per
  row, one transaction per person; it runs on 200 people and is scaled to 10,000. Every
  bulk run is checked afterwards: no ticket or event left, every customer anonymised.
- **Portal intake** (`bench/intake_load.py`): a fresh PostgreSQL database, gunicorn with
  the production app, an SMTP sink in a process of its own and an httpx client on the same
  machine; each submission GETs the form (for its CSRF token) and POSTs it. Rate limits
  are switched off for this run only. Every accepted submission must be stored once and
  mailed once.
- **Proof PDF** (`bench/proof_pdf.py`): the sample proof of `core/demo.py` (three systems,
  recipients, a manual confirmation) rendered and signed in each language, median of the
  runs, wall time and CPU time.
- **Export** (`bench/export_memory.py`): one person with 1,000,000 rows on PostgreSQL,
  exported into the encrypted package, in a fresh process; tracemalloc's peak and the
  process's peak resident size (VmHWM, which includes the interpreter and the app).
- **Scaling out** (`bench/scaling.py`): a CSV batch of N customers approved through the
  app's own code (`create_csv_batch`, `review_batch`, `approve_batch`, `start_batch`), run
  by 1, 2 and 4 `lethe worker --concurrency 1` processes on a Redis of its own, each round
  on a fresh Lethe database and customers nobody erased before; timed from the approval
  to every member erased and to the batch closed (every proof issued), then every member
  checked.

## What limits the missed targets

- **Bulk erasure against the set-based script.** The set-based script never counts
  anything; Lethe counts each person's rows three times (plan, inside the erasure to
  prove each person's outcome and to detect rows shared by two people of the batch, and
  the re-scan), and commits a transaction per batch and verb. That is the price of one
  outcome and one proof per person; the erasing statements themselves are the script's.
  Fewer counts (the erasure could trust the plan's) would narrow it.
- **Bulk erasure against row-by-row (≥ 50×).** Out of reach on this data for anything set-
  based, the hand-written script included (its own ratio is in the table): each customer
  has about 10 rows, so the row-by-row loop needs only about 25 tiny statements per
  person. The gap grows with the rows per person.
- **Portal intake.** Two limits, both measured (cProfile, and timing the lock): each
  submission's transaction takes the audit chain's advisory lock when it records the
  request and holds it while the verification email is built and until the commit, so
  submissions commit one after another; and each costs the server CPU given in the table
  (templates, the email, 8 statements), with the load client and the SMTP sink on the
  same 2 cores. At about 15 ms of server CPU plus 8 ms for client and sink per
  submission, 2 cores top out below 100 submissions/s whatever the number of gunicorn
  workers; with 50 submissions in flight, p99 < 100 ms would need 500 submissions/s.
  What would be needed: append audit events at commit time (a `before_commit` hook) so
  the lock covers only the insert and the commit, send the email from a worker instead of
  the request, a load client on another machine, and more cores.
- **Scaling out** is bounded by the cores: the erasure of a chunk is a few set-based
  statements, and most of each person's CPU is their signed PDF proof (WeasyPrint), so
  throughput grows with workers only up to the number of free cores — 4 workers cannot
  beat 2 on this 2-core machine.
"""


def machine() -> dict[str, str]:
    """Return the CPU model, cores and RAM, read from /proc."""
    cpu = Path("/proc/cpuinfo").read_text()
    models = [line.split(":", 1)[1].strip() for line in cpu.splitlines() if "model name" in line]
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "CPU": models[0] if models else platform.processor(),
        "cores": f"{len(models)} (os.cpu_count() = {os.cpu_count()})",
        "RAM": f"{int(mem) / 2**20:.1f} GiB",
        "OS": platform.platform(),
    }


def versions() -> dict[str, str]:
    """Return the versions of everything measured."""
    import weasyprint

    out = {"Python": sys.version.split()[0], "SQLAlchemy": sa.__version__}
    for dialect, query in (("postgresql", "SHOW server_version"), ("mariadb", "SELECT VERSION()")):
        try:
            engine = common.engine(dialect, "postgres" if dialect == "postgresql" else "mysql")
            with engine.connect() as conn:
                out[{"postgresql": "PostgreSQL", "mariadb": "MariaDB"}[dialect]] = str(
                    conn.execute(sa.text(query)).scalar_one()
                )
            engine.dispose()
        except sa.exc.SQLAlchemyError as error:
            out[dialect] = f"unavailable ({type(error).__name__})"
    out["SQLite"] = sqlite3.sqlite_version
    out["WeasyPrint"] = weasyprint.__version__
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=common.ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=common.ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    out["Lethe"] = f"git {commit}" + (" (with uncommitted changes)" if dirty else "")
    return out


def table(rows: list[dict]) -> str:
    """Return the results as a Markdown table."""
    lines = [
        "| benchmark | database | result | measured | target | met | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "—"}[r["met"]]
        lines.append(
            f"| {r['benchmark']} | {r['database']} | {r['value']} | {r['measure']} |"
            f" {r['target']} | {met} | {r['runs']} |"
        )
    return "\n".join(lines)


def write(rows: list[dict], args: argparse.Namespace, extra: dict) -> None:
    """Write docs/benchmarks.md."""
    scale = args.scale
    sizes = ", ".join(
        f"{d}: {common.customers(d, scale):,} customers and"
        f" {10 * common.customers(d, scale):,} related rows"
        for d in common.DIALECTS
    )
    text = [
        "# Benchmarks",
        "",
        f"Written by `bench/run.py` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
        f" (scale {scale}: {sizes}).",
        "",
        f"Load average (1 minute) {extra['load'][0]:.1f} when the run began and"
        f" {extra['load'][1]:.1f} when it ended, on {os.cpu_count()} cores: above about 1,"
        " something else shared the machine and absolute times are pessimistic."
        " Comparisons (Lethe against hand-written SQL) were measured back to back, alternated"
        " in the same loop, and each number is the median of several runs (the *runs*"
        " column says how many).",
        "",
        "## Machine and versions",
        "",
        *[f"- {k}: {v}" for k, v in (machine() | versions()).items()],
        "",
        "## Results",
        "",
        table(rows),
        "",
        *extra.get("notes", []),
        ANALYSIS,
        "## Commands",
        "",
        "```sh",
        "make bench            # all of the below, then this file",
        *args.commands,
        "```",
        "",
    ]
    DOC.write_text("\n".join(text), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run everything, print the table, write the doc."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--skip-datagen", action="store_true", help="reuse the generated data")
    parser.add_argument("--dialects", nargs="+", choices=common.DIALECTS, default=common.DIALECTS)
    parser.add_argument("--runs", type=int, default=11, help="single-subject runs")
    parser.add_argument(
        "--mariadb-runs", type=int, default=3, help="single-subject runs on MariaDB (slow)"
    )
    parser.add_argument("--bulk-runs", type=int, default=3)
    parser.add_argument("--lethe-budget", type=float, default=120)
    parser.add_argument("--proof-runs", type=int, default=20)
    parser.add_argument("--export-rows", type=int, default=1_000_000)
    parser.add_argument("--export-runs", type=int, default=3)
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=("erasure", "intake", "proof", "export", "scaling"),
        help="parts",
    )
    parser.add_argument("--scaling-people", type=int, default=50, help="people per batch")
    parser.add_argument("--intake-requests", type=int, default=2000, help="portal submissions")
    args = parser.parse_args(argv)
    py = ".venv/bin/python -m"
    args.commands = []
    rows: list[dict] = []
    notes: list[str] = []
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    if not args.skip_datagen:
        args.commands.append(f"{py} bench.datagen --scale {args.scale}")
        for dialect in args.dialects:
            seconds = datagen.generate(dialect, args.scale)
            notes.append(f"- data generation on {dialect}: {seconds:.0f} s")
    if "erasure" not in args.skip:
        for dialect in args.dialects:
            runs = args.mariadb_runs if dialect == "mariadb" else args.runs
            options = [
                "--scale", str(args.scale), "--dialects", dialect, "--runs", str(runs),
                "--bulk-runs", str(args.bulk_runs), "--lethe-budget", str(args.lethe_budget),
            ]  # fmt: skip
            args.commands.append(f"{py} bench.erasure {' '.join(options)}")
            sub = argparse.ArgumentParser()
            erasure.add_arguments(sub)
            ns = sub.parse_args(options)
            single = erasure.bench_single(dialect, args.scale, runs)
            print(f"{dialect} single: {single}", flush=True)
            bulk = erasure.bench_bulk(
                dialect, args.scale, ns.bulk, ns.bulk_runs, ns.sample, ns.lethe_sample,
                ns.lethe_budget,
            )  # fmt: skip
            print(f"{dialect} bulk: {bulk}", flush=True)
            rows += erasure.results(dialect, single, bulk)
            p = bulk["profile"]
            notes.append(
                f"- where Lethe's time goes on {dialect} ({p['people']} person(s), plan + erase +"
                f" verify each): {p['statements']:.0f} statements per person,"
                f" {p['ms_per_person']:.1f} ms per person of which {p['ms_in_statements']:.1f} ms"
                " inside the database driver's execute (the rest: SQLAlchemy, the commit,"
                " Python)"
            )
    if "intake" not in args.skip:
        args.commands.append(f"{py} bench.intake_load --requests {args.intake_requests}")
        rows += intake_load.results(intake_load.run(args.intake_requests))
    if "proof" not in args.skip:
        args.commands.append(f"{py} bench.proof_pdf --runs {args.proof_runs}")
        rows += proof_pdf.run(argparse.Namespace(runs=args.proof_runs))
    if "export" not in args.skip:
        args.commands.append(
            f"{py} bench.export_memory --rows {args.export_rows} --runs {args.export_runs}"
        )
        rows += export_memory.run(
            argparse.Namespace(rows=args.export_rows, runs=args.export_runs, keep=False)
        )
    if "scaling" not in args.skip:
        args.commands.append(f"{py} bench.scaling --people {args.scaling_people}")
        rows += scaling.results(scaling.run(args.scaling_people))
        notes.append("- scaling out: " + scaling.bottleneck())
    notes.insert(0, "## Notes\n")
    notes.append(f"- the whole `make bench` took {(time.perf_counter() - started) / 60:.0f} min")
    notes.append("")
    write(rows, args, {"notes": notes, "load": (load_at_start, os.getloadavg()[0])})
    print(table(rows))
    print(f"\nwritten to {DOC.relative_to(common.ROOT)}")


if __name__ == "__main__":
    main()
