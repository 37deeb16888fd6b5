"""Generate the benchmark CRM: customers, orders, order lines, tickets and events.

Deterministic: every value is computed from the row's number and the seed, in the database
itself (PostgreSQL ``generate_series``, MariaDB's SEQUENCE engine, a recursive CTE on
SQLite), so a million customers take a minute or two rather than an hour of INSERTs from
Python.  A customer's rows are scattered over the tables (row i of orders belongs to
customer ``(i * STRIDE) mod N``), as they are in a CRM filled over years, not stored
side by side.  The database is dropped and recreated each time.

    .venv/bin/python -m bench.datagen --scale 0.01
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import time

import sqlalchemy as sa

from bench import common

#: Multiplier that scatters a customer's rows; must share no factor with the row counts.
STRIDES = (7919, 7927, 7933, 7937)
CITIES = ("London", "Paris", "Berlin", "Madrid", "Rome", "Warsaw", "Lisbon", "Vienna")
PRODUCTS = ("kettle", "toaster", "lamp", "chair", "desk", "mug", "rug", "clock")
KINDS = ("login", "page_view", "search", "basket_add", "newsletter_open")


def stride(total: int) -> int:
    """Return a multiplier coprime with ``total`` (and with twice and four times it)."""
    return next(s for s in STRIDES if math.gcd(s, 4 * total) == 1)


def counts(total: int) -> dict[str, int]:
    """Return the rows per table for ``total`` customers."""
    return {"customers": total} | {t: n * total for t, n in common.PER_CUSTOMER.items()}


# The columns, the same on every database; types differ only where they must.
TABLES = {
    "customers": "id {big} PRIMARY KEY, email VARCHAR(255) NOT NULL, full_name VARCHAR(200),"
    " phone VARCHAR(40), city VARCHAR(100), birth_date DATE, last_seen_at TIMESTAMP NULL,"
    " marketing_opt_in {bool} NOT NULL",
    "orders": "id {big} PRIMARY KEY, customer_id {big} NOT NULL{fk_customer},"
    " ordered_at TIMESTAMP NOT NULL, shipping_name VARCHAR(200),"
    " shipping_address VARCHAR(300), total NUMERIC(10,2) NOT NULL",
    "order_lines": "id {big} PRIMARY KEY, order_id {big} NOT NULL{fk_order},"
    " product VARCHAR(100) NOT NULL, quantity INTEGER NOT NULL, price NUMERIC(10,2) NOT NULL",
    "tickets": "id {big} PRIMARY KEY, customer_id {big} NOT NULL{fk_customer},"
    " subject VARCHAR(200) NOT NULL, body TEXT, created_at TIMESTAMP NOT NULL",
    "events": "id {big} PRIMARY KEY, customer_id {big} NOT NULL{fk_customer},"
    " kind VARCHAR(40) NOT NULL, at TIMESTAMP NOT NULL, detail VARCHAR(200)",
}
#: The indexes a DBA has: the unique address, and every foreign-key column.
INDEXES = {
    "ux_customers_email": "customers (email)",
    "ix_orders_customer_id": "orders (customer_id)",
    "ix_order_lines_order_id": "order_lines (order_id)",
    "ix_tickets_customer_id": "tickets (customer_id)",
    "ix_events_customer_id": "events (customer_id)",
}
FOREIGN_KEYS = {
    "orders": ("customer_id", "customers"),
    "order_lines": ("order_id", "orders"),
    "tickets": ("customer_id", "customers"),
    "events": ("customer_id", "customers"),
}


def _selects(d: dict[str, str], total: int, seed: int) -> dict[str, str]:
    """Return, per table, the SELECT producing its rows from a series column ``i``.

    ``d`` holds the dialect's spellings: concat(a, b), pick(list, n), day(base, n), the
    series source per table ({rows}) and integer division.
    """
    p = stride(total)
    n = total
    cities = d["pick"](CITIES, f"(i * 31 + {seed}) % {len(CITIES)}")
    products = d["pick"](PRODUCTS, f"(i * 17 + {seed}) % {len(PRODUCTS)}")
    kinds = d["pick"](KINDS, f"(i * 13 + {seed}) % {len(KINDS)}")
    owner = lambda rows: f"((i - 1) * {p}) % {rows} + 1"  # noqa: E731
    c, date, ts, series = d["concat"], d["date"], d["ts"], d["series"]
    address = c("'customer'", "i", "'@example.com'")
    name = c("'Customer '", "i")
    phone = c("'+44 20 7946 '", "(i % 9000) + 1000")
    born = date("1950-01-01", f"(i * 37 + {seed}) % 18000")
    seen = ts("2020-01-01", f"(i * 13 + {seed}) % 2000")
    opt_in = d["bool"]("i % 3 = 0")
    shipped = c("'Customer '", owner(n))
    street = c("'1 High Street, '", cities)
    ordered = ts("2021-01-01", f"(i * 7 + {seed}) % 1500")
    question = c("'Question about order '", "i")
    body = c("'Hello, I am customer '", owner(n), "' and I need help with my order.'")
    opened = ts("2022-01-01", f"(i * 5 + {seed}) % 1200")
    happened = ts("2023-01-01", f"(i * 3 + {seed}) % 1000")
    page = c("'/shop/item/'", "i % 5000")
    return {
        "customers": f"SELECT i, {address}, {name}, {phone}, {cities}, {born}, {seen},"
        f" {opt_in} FROM {series(n)}",
        "orders": f"SELECT i, {owner(n)}, {ordered}, {shipped}, {street},"
        f" ((i * 7 + {seed}) % 50000) / 100.0 FROM {series(2 * n)}",
        "order_lines": f"SELECT i, {owner(2 * n)}, {products}, 1 + i % 4,"
        f" ((i * 11 + {seed}) % 20000) / 100.0 FROM {series(4 * n)}",
        "tickets": f"SELECT i, {owner(n)}, {question}, {body}, {opened} FROM {series(n)}",
        "events": f"SELECT i, {owner(n)}, {kinds}, {happened}, {page} FROM {series(3 * n)}",
    }


def _pg_pick(values: tuple[str, ...], index: str) -> str:
    array = ",".join(f"'{v}'" for v in values)
    return f"(ARRAY[{array}])[1 + ({index})]"


def _my_pick(values: tuple[str, ...], index: str) -> str:
    return f"ELT(1 + ({index}), {','.join(repr(v) for v in values)})"


def _sqlite_pick(values: tuple[str, ...], index: str) -> str:
    whens = " ".join(f"WHEN {n} THEN '{v}'" for n, v in enumerate(values))
    return f"(CASE ({index}) {whens} END)"


SPELLINGS = {
    "postgresql": {
        "concat": lambda *a: "(" + " || ".join(f"({x})::text" for x in a) + ")",
        "pick": _pg_pick,
        "date": lambda base, n: f"(DATE '{base}' + ({n})::int)",
        "ts": lambda base, n: f"(TIMESTAMP '{base}' + ({n}) * INTERVAL '1 day')",
        "bool": lambda cond: f"({cond})",
        "series": lambda rows: f"generate_series(1::bigint, {rows}) AS g(i)",
    },
    "mariadb": {
        "concat": lambda *a: f"CONCAT({', '.join(a)})",
        "pick": _my_pick,
        "date": lambda base, n: f"DATE_ADD(DATE '{base}', INTERVAL ({n}) DAY)",
        "ts": lambda base, n: f"DATE_ADD(TIMESTAMP '{base} 00:00:00', INTERVAL ({n}) DAY)",
        "bool": lambda cond: f"({cond})",
        "series": lambda rows: f"(SELECT seq AS i FROM seq_1_to_{rows}) AS g",
    },
    "sqlite": {
        "concat": lambda *a: "(" + " || ".join(f"({x})" for x in a) + ")",
        "pick": _sqlite_pick,
        "date": lambda base, n: f"date('{base}', '+' || ({n}) || ' days')",
        "ts": lambda base, n: f"datetime('{base}', '+' || ({n}) || ' days')",
        "bool": lambda cond: f"({cond})",
        "series": lambda rows: f"(SELECT value AS i FROM series WHERE value <= {rows})",
    },
}


def _ddl(dialect: str, inline_fks: bool) -> list[str]:
    big = "INTEGER" if dialect == "sqlite" else "BIGINT"
    boolean = "BOOLEAN"
    fk = (
        {
            "fk_customer": " REFERENCES customers (id)",
            "fk_order": " REFERENCES orders (id)",
        }
        if inline_fks
        else {"fk_customer": "", "fk_order": ""}
    )
    suffix = " ENGINE=InnoDB" if dialect == "mariadb" else ""
    return [
        f"CREATE TABLE {name} ({columns.format(big=big, bool=boolean, **fk)}){suffix}"
        for name, columns in TABLES.items()
    ]


def _indexes(dialect: str) -> list[str]:
    statements = []
    for name, target in INDEXES.items():
        unique = "UNIQUE " if name.startswith("ux_") else ""
        statements.append(f"CREATE {unique}INDEX {name} ON {target}")
    return statements


def _foreign_keys() -> list[str]:
    return [
        f"ALTER TABLE {table} ADD CONSTRAINT fk_{table}_{column} FOREIGN KEY ({column})"
        f" REFERENCES {parent} (id)"
        for table, (column, parent) in FOREIGN_KEYS.items()
    ]


def _step(label: str, action) -> None:
    start = time.perf_counter()
    action()
    print(f"  {label:<28} {time.perf_counter() - start:8.1f} s", flush=True)


def generate_server(dialect: str, total: int, seed: int, database: str) -> None:
    """Recreate ``database`` on PostgreSQL or MariaDB and fill it."""
    admin_db = "postgres" if dialect == "postgresql" else "mysql"
    admin = sa.create_engine(common.url(dialect, admin_db), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if dialect == "postgresql":
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            conn.execute(sa.text(f"CREATE DATABASE {database}"))
        else:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {database}"))
            conn.execute(sa.text(f"CREATE DATABASE {database} CHARACTER SET utf8mb4"))
    admin.dispose()
    engine = sa.create_engine(common.url(dialect, database), isolation_level="AUTOCOMMIT")
    selects = _selects(SPELLINGS[dialect], total, seed)
    with engine.connect() as conn:
        run = lambda sql: conn.execute(sa.text(sql))  # noqa: E731
        if dialect == "postgresql":
            run("SET synchronous_commit = off")
            run("SET maintenance_work_mem = '256MB'")
        else:
            run("SET SESSION foreign_key_checks = 0")
            run("SET SESSION unique_checks = 0")
        for statement in _ddl(dialect, inline_fks=False):
            run(statement)
        for table, select in selects.items():
            _step(
                f"{table} ({counts(total)[table]:,} rows)",
                lambda s=select, t=table: run(f"INSERT INTO {t} {s}"),
            )
        for statement in _indexes(dialect):
            _step(statement.split(" ON ")[0].split()[-1], lambda s=statement: run(s))
        for statement in _foreign_keys():
            _step(statement.split()[5], lambda s=statement: run(s))
        if dialect == "postgresql":
            _step("VACUUM ANALYZE", lambda: run("VACUUM ANALYZE"))
        else:
            _step("ANALYZE", lambda: run("ANALYZE TABLE " + ", ".join(TABLES)))
    engine.dispose()


def generate_sqlite(total: int, seed: int) -> None:
    """Recreate the SQLite file and fill it."""
    path = common.sqlite_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (path, path.with_name(path.name + "-journal")):
        leftover.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA journal_mode = MEMORY")
    for statement in _ddl("sqlite", inline_fks=True):
        conn.execute(statement)
    # One series table, as long as the longest table, feeds every INSERT.
    conn.execute("CREATE TEMP TABLE series (value INTEGER PRIMARY KEY)")
    conn.execute(
        "WITH RECURSIVE s(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM s WHERE v < ?)"
        " INSERT INTO series SELECT v FROM s",
        (4 * total,),
    )
    conn.execute("BEGIN")
    for table, select in _selects(SPELLINGS["sqlite"], total, seed).items():
        _step(
            f"{table} ({counts(total)[table]:,} rows)",
            lambda s=select, t=table: conn.execute(f"INSERT INTO {t} {s}"),
        )
    conn.execute("COMMIT")
    for statement in _indexes("sqlite"):
        _step(statement.split(" ON ")[0].split()[-1], lambda s=statement: conn.execute(s))
    _step("ANALYZE", lambda: conn.execute("ANALYZE"))
    conn.close()


def generate(dialect: str, scale: float, seed: int = common.SEED) -> float:
    """Generate the CRM on ``dialect``; return the seconds it took."""
    total = common.customers(dialect, scale)
    rows = sum(counts(total).values())
    print(f"{dialect}: {total:,} customers, {rows - total:,} related rows", flush=True)
    start = time.perf_counter()
    if dialect == "sqlite":
        generate_sqlite(total, seed)
    else:
        generate_server(dialect, total, seed, common.DATABASE)
    elapsed = time.perf_counter() - start
    print(f"{dialect}: generated in {elapsed:.1f} s", flush=True)
    return elapsed


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and generate."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1 = 1M customers (default)")
    parser.add_argument("--seed", type=int, default=common.SEED)
    parser.add_argument("--dialects", nargs="+", choices=common.DIALECTS, default=common.DIALECTS)
    args = parser.parse_args(argv)
    for dialect in args.dialects:
        generate(dialect, args.scale, args.seed)


if __name__ == "__main__":
    main()
