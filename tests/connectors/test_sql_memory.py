"""A person with hundreds of thousands of rows is planned, erased and re-scanned in bounded
memory: the SQL connector counts and changes rows in the database, never in Python."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from connectors.base import Outcome, Subject
from connectors.sql import KEY_BATCH, SqlConnector
from tests.services import fresh_database

PERSON = Subject(email="heavy.user@example.org")
#: The person's events (deleted in one statement) and invoices (pseudonymised row by row,
#: in keyset batches: slower, so fewer of them).
ROWS, INVOICES = 150_000, 20_000
#: Far less than the person's rows take as Python objects (each event holds ~170 bytes of
#: text, so the events alone would need well over 50 MiB).
LIMIT = 25 * 1024 * 1024


@pytest.fixture
def crm() -> Iterator[str]:
    """A PostgreSQL CRM where one customer has ROWS events and INVOICES invoices."""
    with fresh_database("postgresql") as url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE customers (id integer PRIMARY KEY, email text NOT NULL UNIQUE,"
                " name text NOT NULL)"
            )
            conn.exec_driver_sql(
                "CREATE TABLE events (id bigint PRIMARY KEY,"
                " customer_id integer NOT NULL REFERENCES customers(id), detail text NOT NULL)"
            )
            conn.exec_driver_sql(
                "CREATE TABLE invoices (id bigint PRIMARY KEY,"
                " customer_id integer NOT NULL REFERENCES customers(id),"
                " billing_name text, amount_cents integer NOT NULL)"
            )
            conn.execute(
                sa.text("INSERT INTO customers VALUES (1, :email, 'Heavy User'), (2, :other, 'O')"),
                {"email": PERSON.email, "other": "other@example.org"},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO events SELECT n, CASE WHEN n <= :rows THEN 1 ELSE 2 END,"
                    " repeat('page viewed by Heavy User ', 6) || n"
                    " FROM generate_series(1, 2 * :rows) AS n"
                ),
                {"rows": ROWS},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO invoices SELECT n, 1, 'Heavy User ' || n, mod(n, 9000)"
                    " FROM generate_series(1, :rows) AS n"
                ),
                {"rows": INVOICES},
            )
        engine.dispose()
        yield url


def test_a_person_with_many_rows_is_erased_in_bounded_memory(crm, monkeypatch):
    monkeypatch.setenv("CRM_PSEUDONYM_KEY", "a key of at least sixteen characters")
    connector = SqlConnector(
        "crm",
        {
            "url": crm,
            "pseudonym_key_env": "CRM_PSEUDONYM_KEY",
            "subject": {"table": "customers", "columns": ["email"]},
            "tables": {
                "events": {"action": "delete"},
                # A per-row method: the connector walks the rows in keyset batches.
                "invoices": {
                    "action": "anonymise",
                    "ground": "art17-3-b",
                    "columns": {"billing_name": "pseudonym"},
                },
                "customers": {
                    "action": "anonymise",
                    "ground": "art17-3-b",
                    "columns": {"email": "placeholder", "name": "fixed:Erased"},
                },
            },
        },
    )
    tracemalloc.start()
    try:
        plan = connector.plan(PERSON)
        result = connector.erase(PERSON, plan)
        check = connector.verify(PERSON)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        connector.close()
    counts = {step.table: step.rows for step in plan.steps}
    assert counts == {"events": ROWS, "invoices": INVOICES, "customers": 1}
    assert result.outcome == Outcome.COMPLETED
    assert result.rows_affected == counts
    assert check.clean
    assert peak < LIMIT, f"peak {peak / 2**20:.1f} MiB"
    engine = sa.create_engine(crm)
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM events WHERE customer_id = 1")) == 0
        assert conn.scalar(sa.text("SELECT count(*) FROM events WHERE customer_id = 2")) > 0
        assert not conn.scalar(
            sa.text("SELECT count(*) FROM invoices WHERE billing_name LIKE '%Heavy User%'")
        )
    engine.dispose()


@pytest.mark.parametrize("kind", ["mariadb", "postgresql"])
def test_rows_beyond_one_batch_of_keys_are_all_changed_and_nobody_elses(kind):
    """MariaDB changes rows by key, KEY_BATCH at a time: every batch is done, no other."""
    rows = 2 * KEY_BATCH + 7
    with fresh_database(kind) as url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE customers (id integer PRIMARY KEY, email varchar(120) NOT NULL,"
                " name varchar(80) NOT NULL)"
            )
            conn.exec_driver_sql(
                "CREATE TABLE events (id integer PRIMARY KEY, customer_id integer NOT NULL,"
                " detail varchar(80), FOREIGN KEY (customer_id) REFERENCES customers(id))"
            )
            conn.execute(
                sa.text("INSERT INTO customers VALUES (1, :a, 'Heavy'), (2, :b, 'Other')"),
                {"a": PERSON.email, "b": "other@example.org"},
            )
            conn.execute(
                sa.text("INSERT INTO events VALUES (:id, :customer, 'seen')"),
                [{"id": n, "customer": 1 if n % 3 else 2} for n in range(1, 3 * rows // 2 + 1)],
            )
            mine = conn.scalar(sa.text("SELECT count(*) FROM events WHERE customer_id = 1"))
            theirs = conn.scalar(sa.text("SELECT count(*) FROM events WHERE customer_id = 2"))
        assert mine > 2 * KEY_BATCH
        connector = SqlConnector(
            "crm",
            {
                "url": url,
                "subject": {"table": "customers", "columns": ["email"]},
                "tables": {
                    "events": {"action": "delete"},
                    "customers": {
                        "action": "anonymise",
                        "ground": "art17-3-b",
                        "columns": {"email": "placeholder", "name": "fixed:Erased"},
                    },
                },
            },
        )
        try:
            result = connector.erase(PERSON, connector.plan(PERSON))
            assert result.rows_affected == {"events": mine, "customers": 1}
            assert connector.verify(PERSON).clean
        finally:
            connector.close()
        with engine.connect() as conn:
            left = dict(
                conn.execute(
                    sa.text("SELECT customer_id, count(*) FROM events GROUP BY customer_id")
                ).all()
            )
            names = dict(conn.execute(sa.text("SELECT id, name FROM customers")).all())
        engine.dispose()
    assert left == {2: theirs}
    assert names == {1: "Erased", 2: "Other"}
