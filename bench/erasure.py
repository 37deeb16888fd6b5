"""Erasure: Lethe's SQL connector against the SQL a DBA would write by hand.

(a) One person: Lethe's plan + erase + verify against hand-written statements doing the
same changes (delete order lines, tickets and events; anonymise the customer and keep the
orders anonymised).  The two are alternated in one loop, each run on a different customer
from a seeded list, every run committed.  Before timing, both are run on one customer
(the hand-written one in a transaction rolled back) and must leave identical rows.

(b) Bulk: 10,000 people erased by Lethe (SqlConnector.plan_many/erase_many/verify_many
on batches of --batch people (by default the chunk the app's bulk erasure hands to one
job, 200), in one process — not through the app's bulk path with its
requests, jobs and proofs) against one set-based hand-written script, and against a
row-by-row loop (one statement per row, as the leading tool does), the latter run on a
sample and extrapolated.

    .venv/bin/python -m bench.erasure --dialects postgresql --runs 11
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import sqlalchemy as sa

from bench import common
from connectors.base import Subject
from connectors.sql import SqlConnector
from core.bulk import CHUNK

PLACEHOLDER = {
    "postgresql": "'erased-' || id || '@invalid.example'",
    "mariadb": "CONCAT('erased-', c.id, '@invalid.example')",
    "sqlite": "'erased-' || id || '@invalid.example'",
}
YEAR = {
    "postgresql": "make_date(extract(year FROM birth_date)::int, 1, 1)",
    "mariadb": "MAKEDATE(YEAR(birth_date), 1)",
    "sqlite": "strftime('%Y', birth_date) || '-01-01'",
}


def changes(dialect: str, people: str) -> list[str]:
    """Return the hand-written statements erasing the customers whose ids ``people`` selects.

    ``people`` is ``:id`` (one person) or ``bulk_ids`` (a temporary table of ids).  On
    MariaDB a DBA writes multi-table DELETE and UPDATE with joins: MariaDB before 11.1
    cannot run ``DELETE ... WHERE x IN (subquery)`` as a semi-join and scans the table.
    """
    if dialect == "mariadb":
        p = "(SELECT CAST(:id AS SIGNED) AS id)" if people == ":id" else "bulk_ids"
        return [
            "DELETE l FROM order_lines l JOIN orders o ON o.id = l.order_id"
            f" JOIN {p} p ON p.id = o.customer_id",
            f"DELETE t FROM tickets t JOIN {p} p ON p.id = t.customer_id",
            f"DELETE e FROM events e JOIN {p} p ON p.id = e.customer_id",
            f"UPDATE orders o JOIN {p} p ON p.id = o.customer_id"
            " SET o.shipping_name = NULL, o.shipping_address = NULL",
            f"UPDATE customers c JOIN {p} p ON p.id = c.id SET c.email = {PLACEHOLDER[dialect]},"
            f" c.full_name = 'erased', c.phone = NULL, c.city = NULL,"
            f" c.birth_date = {YEAR[dialect]}",
        ]
    people = ":id" if people == ":id" else "SELECT id FROM bulk_ids"
    return [
        "DELETE FROM order_lines WHERE order_id IN"
        f" (SELECT id FROM orders WHERE customer_id IN ({people}))",
        f"DELETE FROM tickets WHERE customer_id IN ({people})",
        f"DELETE FROM events WHERE customer_id IN ({people})",
        "UPDATE orders SET shipping_name = NULL, shipping_address = NULL"
        f" WHERE customer_id IN ({people})",
        f"UPDATE customers SET email = {PLACEHOLDER[dialect]}, full_name = 'erased',"
        f" phone = NULL, city = NULL, birth_date = {YEAR[dialect]} WHERE id IN ({people})",
    ]


def hand_single(conn: sa.Connection, dialect: str, email: str) -> None:
    """Erase one person with hand-written SQL, inside the caller's transaction."""
    customer = conn.execute(
        sa.text("SELECT id FROM customers WHERE email = :email"), {"email": email}
    ).scalar_one()
    for statement in changes(dialect, ":id"):
        conn.execute(sa.text(statement), {"id": customer})


def hand_bulk(conn: sa.Connection, dialect: str, emails: Sequence[str]) -> None:
    """Erase many people with one set-based script, inside the caller's transaction."""
    temp = "TEMPORARY TABLE"
    conn.execute(sa.text(f"CREATE {temp} bulk_emails (email VARCHAR(255) PRIMARY KEY)"))
    conn.execute(sa.text(f"CREATE {temp} bulk_ids (id BIGINT PRIMARY KEY)"))
    conn.execute(
        sa.text("INSERT INTO bulk_emails (email) VALUES (:email)"), [{"email": e} for e in emails]
    )
    conn.execute(
        sa.text(
            "INSERT INTO bulk_ids (id) SELECT c.id FROM customers c"
            " JOIN bulk_emails e ON e.email = c.email"
        )
    )
    if dialect == "postgresql":
        conn.execute(sa.text("ANALYZE bulk_ids"))
    for statement in changes(dialect, "bulk_ids"):
        conn.execute(sa.text(statement))
    conn.execute(sa.text("DROP TABLE bulk_emails"))
    conn.execute(sa.text("DROP TABLE bulk_ids"))


def row_by_row(engine: sa.Engine, dialect: str, email: str) -> None:
    """Erase one person one row at a time: find each row, then one statement per row."""
    q = lambda conn, sql, **p: conn.execute(sa.text(sql), p)  # noqa: E731
    with engine.begin() as conn:
        customer = q(conn, "SELECT id FROM customers WHERE email = :e", e=email).scalar_one()
        orders = q(conn, "SELECT id FROM orders WHERE customer_id = :c", c=customer).scalars()
        orders = list(orders)
        for order in orders:
            for line in q(conn, "SELECT id FROM order_lines WHERE order_id = :o", o=order).all():
                q(conn, "DELETE FROM order_lines WHERE id = :i", i=line[0])
        for table in ("tickets", "events"):
            for row in q(conn, f"SELECT id FROM {table} WHERE customer_id = :c", c=customer).all():
                q(conn, f"DELETE FROM {table} WHERE id = :i", i=row[0])
        for order in orders:
            q(
                conn,
                "UPDATE orders SET shipping_name = NULL, shipping_address = NULL WHERE id = :i",
                i=order,
            )
        q(
            conn,
            f"UPDATE customers{' c' if dialect == 'mariadb' else ''}"
            f" SET email = {PLACEHOLDER[dialect]}, full_name = 'erased',"
            f" phone = NULL, city = NULL, birth_date = {YEAR[dialect]} WHERE id = :i",
            i=customer,
        )


def lethe_single(connector: SqlConnector, email: str) -> None:
    """Erase one person the way a Lethe run does: plan, erase along it, verify."""
    subject = Subject(email=email)
    plan = connector.plan(subject)
    connector.erase(subject, plan)
    remaining = connector.verify(subject).remaining
    if any(remaining.values()):
        raise AssertionError(f"Lethe left rows of {email}: {remaining}")


def lethe_batch(connector: SqlConnector, emails: Sequence[str]) -> None:
    """Erase a batch of people the way bulk erasure does: plan_many, erase_many, verify_many."""
    subjects = [Subject(email=e) for e in emails]
    plans = connector.plan_many(subjects)
    connector.erase_many(list(zip(subjects, plans, strict=True)))
    left = [c.remaining for c in connector.verify_many(subjects) if not c.clean]
    if left:
        raise AssertionError(f"Lethe left rows of {len(left)} people, e.g. {left[0]}")


def snapshot(conn: sa.Connection, customer: int) -> dict:
    """Return everything the CRM holds for customer ``customer``, comparable with ==."""
    one = lambda sql: [tuple(map(str, r)) for r in conn.execute(sa.text(sql), {"c": customer})]  # noqa: E731
    return {
        "customer": one("SELECT * FROM customers WHERE id = :c"),
        "orders": one("SELECT * FROM orders WHERE customer_id = :c ORDER BY id"),
        "order_lines": one(
            "SELECT * FROM order_lines WHERE order_id IN"
            " (SELECT id FROM orders WHERE customer_id = :c) ORDER BY id"
        ),
        "tickets": one("SELECT * FROM tickets WHERE customer_id = :c ORDER BY id"),
        "events": one("SELECT * FROM events WHERE customer_id = :c ORDER BY id"),
    }


def check_identical(engine: sa.Engine, connector: SqlConnector, dialect: str, customer: int):
    """Assert that Lethe and the hand-written SQL leave the same rows for one customer."""
    with engine.connect() as conn:
        before = snapshot(conn, customer)
        hand_single(conn, dialect, common.email(customer))
        by_hand = snapshot(conn, customer)
        conn.rollback()
        assert snapshot(conn, customer) == before
        conn.rollback()
    lethe_single(connector, common.email(customer))
    with engine.connect() as conn:
        by_lethe = snapshot(conn, customer)
    assert by_lethe == by_hand, f"different final state:\n{by_lethe}\n{by_hand}"
    assert by_hand != before and not by_hand["events"] and by_hand["orders"]


def check_bulk(engine: sa.Engine, customers: Sequence[int]) -> None:
    """Assert that every customer of a bulk run is erased."""
    with engine.connect() as conn:
        for start in range(0, len(customers), 1000):
            ids = ",".join(str(c) for c in customers[start : start + 1000])
            left = conn.execute(
                sa.text(
                    f"SELECT (SELECT count(*) FROM events WHERE customer_id IN ({ids}))"
                    f" + (SELECT count(*) FROM tickets WHERE customer_id IN ({ids}))"
                    f" + (SELECT count(*) FROM customers WHERE id IN ({ids})"
                    "    AND email NOT LIKE 'erased-%')"
                )
            ).scalar_one()
            assert left == 0, f"{left} rows not erased"


def connector_for(dialect: str) -> SqlConnector:
    """Return a SQL connector on the benchmark CRM, schema already read."""
    connector = SqlConnector("crm", common.lethe_settings(dialect))
    connector.schema()
    return connector


def bench_single(dialect: str, scale: float, runs: int) -> dict:
    """Time one person's erasure, Lethe and by hand alternated; return the medians."""
    engine = common.engine(dialect)
    connector = connector_for(dialect)
    people = common.pick_subjects(engine, common.customers(dialect, scale), 2 * runs + 3, "single")
    check_identical(engine, connector, dialect, people.pop())
    # Warm both paths (connections, statement caches) on one customer each, untimed.
    lethe_single(connector, common.email(people.pop()))
    with engine.begin() as conn:
        hand_single(conn, dialect, common.email(people.pop()))
    lethe, erase_only, hand = [], [], []
    for run in range(runs):
        a, b = common.email(people.pop()), common.email(people.pop())

        def by_lethe(email: str = a) -> None:
            subject = Subject(email=email)
            start = time.perf_counter()
            plan = connector.plan(subject)
            middle = time.perf_counter()
            connector.erase(subject, plan)
            erase_only.append(time.perf_counter() - middle)
            assert not any(connector.verify(subject).remaining.values())
            lethe.append(time.perf_counter() - start)

        def by_hand(email: str = b) -> None:
            start = time.perf_counter()
            with engine.begin() as conn:
                hand_single(conn, dialect, email)
            hand.append(time.perf_counter() - start)

        for action in (by_lethe, by_hand) if run % 2 == 0 else (by_hand, by_lethe):
            action()
    connector.close()
    engine.dispose()
    return {
        "lethe": common.median(lethe),
        "lethe_erase": common.median(erase_only),
        "hand": common.median(hand),
        "runs": runs,
    }


def bench_bulk(
    dialect: str,
    scale: float,
    size: int,
    runs: int,
    sample: int,
    lethe_sample: int | None = None,
    budget: float = 120.0,
    batch: int = CHUNK,
) -> dict:
    """Time a bulk erasure: Lethe in batches, one set-based script, a row-by-row loop.

    The set-based script and Lethe erase ``size`` people each (Lethe ``lethe_sample`` if
    given), Lethe ``batch`` people per plan_many/erase_many/verify_many; the row-by-row
    loop, whose cost is the same for every person, erases ``sample`` people and its time
    is scaled to ``size``.  Lethe stops early after ``budget`` seconds, its time then
    scaled to ``size``.
    """
    total = common.customers(dialect, scale)
    limit = total // (2 * runs)  # leave half the customers for the other benchmarks
    sample = min(sample, limit // 4)
    size = min(size, (limit - sample) // 2)
    lethe_sample = min(lethe_sample or size, size)
    engine = common.engine(dialect)
    people = common.pick_subjects(engine, total, (size + lethe_sample + sample) * runs, "bulk")
    connector = connector_for(dialect)
    lethe, hand, rows, erased = [], [], [], []
    for run in range(runs):
        hand_ids = people[:size]
        lethe_ids = people[size : size + lethe_sample]
        row_ids = people[size + lethe_sample : size + lethe_sample + sample]
        del people[: size + lethe_sample + sample]

        def by_lethe(ids: list[int] = lethe_ids) -> None:
            start, done = time.perf_counter(), []
            for first in range(0, len(ids), batch):
                chunk = ids[first : first + batch]
                lethe_batch(connector, [common.email(c) for c in chunk])
                done += chunk
                if time.perf_counter() - start > budget:
                    break
            lethe.append((time.perf_counter() - start) * size / len(done))
            erased.append(len(done))
            check_bulk(engine, done)

        def by_hand(ids: list[int] = hand_ids) -> None:
            start = time.perf_counter()
            with engine.begin() as conn:
                hand_bulk(conn, dialect, [common.email(c) for c in ids])
            hand.append(time.perf_counter() - start)
            check_bulk(engine, ids)

        def by_row(ids: list[int] = row_ids) -> None:
            start = time.perf_counter()
            for customer in ids:
                row_by_row(engine, dialect, common.email(customer))
            rows.append((time.perf_counter() - start) * size / len(ids))
            check_bulk(engine, ids)

        order = (by_lethe, by_hand, by_row) if run % 2 == 0 else (by_row, by_hand, by_lethe)
        for action in order:
            action()
        print(
            f"  {dialect} bulk run {run + 1}/{runs}: lethe {lethe[-1]:.1f} s,"
            f" set-based {hand[-1]:.2f} s, row-by-row {rows[-1]:.1f} s (for {size:,})",
            flush=True,
        )
    profile = attribute(connector, engine, total, max(1, min(200, min(erased) // 4)))
    connector.close()
    engine.dispose()
    return {
        "lethe": common.median(lethe),
        "hand": common.median(hand),
        "row": common.median(rows),
        "size": size,
        "sample": sample,
        "lethe_sample": min(erased),
        "batch": batch,
        "runs": runs,
        "profile": profile,
    }


def attribute(connector: SqlConnector, engine: sa.Engine, total: int, count: int) -> dict:
    """Return where Lethe's time per person goes: statements, database round trips, Python."""
    spent: list[float] = []
    starts: list[float] = []

    def before(*_args: object) -> None:
        starts.append(time.perf_counter())

    def after(*_args: object) -> None:
        spent.append(time.perf_counter() - starts.pop())

    people = common.pick_subjects(engine, total, count, "attribute")
    sa.event.listen(connector.engine, "before_cursor_execute", before)
    sa.event.listen(connector.engine, "after_cursor_execute", after)
    start = time.perf_counter()
    for customer in people:
        lethe_single(connector, common.email(customer))
    wall = time.perf_counter() - start
    sa.event.remove(connector.engine, "before_cursor_execute", before)
    sa.event.remove(connector.engine, "after_cursor_execute", after)
    return {
        "people": count,
        "statements": len(spent) / count,
        "ms_per_person": wall / count * 1000,
        "ms_in_statements": sum(spent) / count * 1000,
    }


def results(dialect: str, single: dict | None, bulk: dict | None) -> list[dict]:
    """Return the rows this benchmark adds to the results table."""
    out = []
    if single:
        ratio = single["lethe"] / single["hand"]
        out.append(
            {
                "benchmark": "single-subject erasure",
                "database": dialect,
                "measure": f"Lethe plan+erase+verify {single['lethe'] * 1000:.1f} ms"
                f" (erase alone {single['lethe_erase'] * 1000:.1f} ms);"
                f" hand-written {single['hand'] * 1000:.1f} ms",
                "value": f"{ratio:.2f}× hand-written",
                "target": "≤ 2× hand-written",
                "met": ratio <= 2,
                "runs": f"median of {single['runs']} alternated runs",
            }
        )
    if bulk:
        ratio = bulk["lethe"] / bulk["hand"]
        speedup = bulk["row"] / bulk["lethe"]
        lethe_people = (
            f"all {bulk['size']:,} people"
            if bulk["lethe_sample"] >= bulk["size"]
            else f"scaled from {bulk['lethe_sample']:,} people"
        )
        out.append(
            {
                "benchmark": f"bulk erasure of {bulk['size']:,} (vs set-based)",
                "database": dialect,
                "measure": f"Lethe {bulk['lethe']:.1f} s ({lethe_people}, batches of"
                f" {bulk.get('batch', 1):,}); set-based script {bulk['hand']:.2f} s",
                "value": f"{ratio:.1f}× set-based",
                "target": "≤ 1.5× set-based",
                "met": ratio <= 1.5,
                "runs": f"median of {bulk['runs']} runs",
            }
        )
        out.append(
            {
                "benchmark": f"bulk erasure of {bulk['size']:,} (vs row-by-row)",
                "database": dialect,
                "measure": f"row-by-row {bulk['row']:.1f} s (extrapolated from"
                f" {bulk['sample']} people); Lethe {bulk['lethe']:.1f} s",
                "value": f"Lethe {speedup:.1f}× faster"
                if speedup >= 1
                else f"Lethe {1 / speedup:.1f}× slower",
                "target": "≥ 50× faster than row-by-row",
                "met": speedup >= 50,
                "runs": f"median of {bulk['runs']} runs",
            }
        )
    return out


def run(args: argparse.Namespace) -> list[dict]:
    """Run the erasure benchmarks named by ``args``; return the result rows."""
    rows = []
    for dialect in args.dialects:
        single = bulk = None
        if "single" in args.parts:
            single = bench_single(dialect, args.scale, args.runs)
            print(f"{dialect} single: {single}", flush=True)
        if "bulk" in args.parts:
            bulk = bench_bulk(
                dialect,
                args.scale,
                args.bulk,
                args.bulk_runs,
                args.sample,
                args.lethe_sample,
                args.lethe_budget,
                args.batch,
            )
            print(f"{dialect} bulk: {bulk}", flush=True)
        rows += results(dialect, single, bulk)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this benchmark's options to ``parser``."""
    parser.add_argument("--scale", type=float, default=1.0, help="as given to bench.datagen")
    parser.add_argument("--dialects", nargs="+", choices=common.DIALECTS, default=common.DIALECTS)
    parser.add_argument(
        "--parts", nargs="+", choices=("single", "bulk"), default=("single", "bulk")
    )
    parser.add_argument("--runs", type=int, default=11, help="single-subject runs of each")
    parser.add_argument("--bulk", type=int, default=10_000, help="people per bulk erasure")
    parser.add_argument("--bulk-runs", type=int, default=3)
    parser.add_argument("--sample", type=int, default=200, help="people erased row by row")
    parser.add_argument(
        "--lethe-sample",
        type=int,
        default=None,
        help="people Lethe erases in a bulk run (default: as many as --bulk)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=CHUNK,
        help="people per Lethe plan_many/erase_many/verify_many (default: the app's chunk)",
    )
    parser.add_argument(
        "--lethe-budget", type=float, default=120, help="seconds after which Lethe's run stops"
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run, print the result rows."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    for row in run(parser.parse_args(argv)):
        print(row)


if __name__ == "__main__":
    main()
