"""The SQL connector's batch verbs: plan_many, erase_many and verify_many.

On real SQLite, PostgreSQL and MariaDB, a batch returns exactly what the per-person verbs
return one after another, and leaves the same rows; a batch that fails changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import sqlalchemy as sa
from sqlalchemy import exc

from connectors import sql
from connectors.base import ConnectorError, Outcome, Subject
from connectors.sql import SqlConnector
from tests.connectors import test_sql_identities as identities
from tests.connectors.test_sql_schemas import dump
from tests.services import fresh_database

#: (id, stored address): Ann and Dan have rows everywhere; Cat has only an invoice, kept;
#: Eve exchanged a message with Ann; Fay is never in a batch.
PEOPLE = {
    "ann": (1, "Ann.Lee@Example.org"),
    "cat": (3, "cat@example.org"),
    "dan": (4, "DAN@example.org"),
    "eve": (5, "eve@example.org"),
    "fay": (6, "fay@example.org"),
}
NOBODY = "nobody@example.org"


def _url(kind: str, stack: ExitStack, tmp_path, name: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / name}"
    return stack.enter_context(fresh_database(kind))


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def urls(kind, tmp_path) -> Iterator[tuple[str, str]]:
    """Two databases holding the same CRM: one erased person by person, one in a batch."""
    with ExitStack() as stack:
        pair = (
            _url(kind, stack, tmp_path, "one.sqlite"),
            _url(kind, stack, tmp_path, "batch.sqlite"),
        )
        for url in pair:
            build_crm(url)
        yield pair


def build_crm(url: str) -> None:
    metadata = sa.MetaData()
    customer = sa.Table(
        "customer",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(120), nullable=False, unique=True),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("nick", sa.String(20)),
    )
    orders = sa.Table(
        "orders",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.ForeignKey("customer.id"), nullable=False),
        sa.Column("ship_to", sa.String(120)),
        sa.Column("note", sa.String(120)),
    )
    line = sa.Table(
        "order_line",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("order_id", sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("product", sa.String(40), nullable=False),
    )
    invoice = sa.Table(
        "invoice",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.ForeignKey("customer.id"), nullable=False),
        sa.Column("cents", sa.Integer, nullable=False),
    )
    message = sa.Table(
        "message",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("sender_id", sa.ForeignKey("customer.id")),
        sa.Column("recipient_id", sa.ForeignKey("customer.id")),
        sa.Column("body", sa.Text),
    )
    event = sa.Table(
        "event",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.ForeignKey("customer.id"), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
    )
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    ids = {name: pid for name, (pid, _email) in PEOPLE.items()}
    with engine.begin() as conn:
        conn.execute(
            customer.insert(),
            [
                {"id": pid, "email": email, "name": f"{name.title()} Person", "nick": name}
                for name, (pid, email) in PEOPLE.items()
            ],
        )
        owners = ("ann", "ann", "dan", "dan", "dan", "fay")
        conn.execute(
            orders.insert(),
            [
                {"id": n, "customer_id": ids[o], "ship_to": f"{o} street", "note": f"gift {n}"}
                for n, o in enumerate(owners, start=1)
            ],
        )
        conn.execute(
            line.insert(),
            [{"id": n, "order_id": 1 + n % 6, "product": f"p{n}"} for n in range(1, 15)],
        )
        conn.execute(
            invoice.insert(),
            [
                {"id": n, "customer_id": ids[o], "cents": 100 * n}
                for n, o in enumerate(("ann", "cat", "cat", "dan", "fay"), start=1)
            ],
        )
        conn.execute(
            message.insert(),
            [
                {"id": 1, "sender_id": ids["ann"], "recipient_id": ids["eve"], "body": "hi Eve"},
                {"id": 2, "sender_id": ids["fay"], "recipient_id": ids["ann"], "body": "hi Ann"},
                {"id": 3, "sender_id": ids["dan"], "recipient_id": None, "body": "draft"},
                {"id": 4, "sender_id": ids["fay"], "recipient_id": ids["fay"], "body": "note"},
            ],
        )
        conn.execute(
            event.insert(),
            [
                {"id": n, "customer_id": ids[o], "kind": "login"}
                for n, o in enumerate(("ann", "dan", "ann", "eve", "dan", "fay", "dan"), start=1)
            ],
        )
    engine.dispose()


def settings(url: str, match: str = "case-insensitive", **tables) -> dict:
    base = {
        "customer": {
            "action": "anonymise",
            "ground": "art17-3-b",
            "columns": {"email": "placeholder", "name": "fake", "nick": "null"},
        },
        "orders": {
            "action": "anonymise",
            "ground": "art17-3-b",
            "columns": {"ship_to": "fake:street", "note": "fixed:erased"},
        },
        "order_line": {"action": "delete"},
        "invoice": {"action": "retain", "ground": "art17-3-b"},
        "message": {"action": "delete"},
        "event": {"action": "delete"},
    }
    base.update(tables)
    return {
        "url": url,
        "subject": {"table": "customer", "columns": ["email"], "match": match},
        "tables": {k: v for k, v in base.items() if v is not None},
    }


def subjects(names: list[str], match: str) -> list[Subject]:
    """Return the people as they give their address: in another case when that matches."""
    given = []
    for name in names:
        email = PEOPLE[name][1] if name in PEOPLE else NOBODY
        given.append(Subject(email=email.swapcase() if match == "case-insensitive" else email))
    return given


def one_by_one(url: str, people: list[Subject], config: dict):
    connector = SqlConnector("crm", config)
    try:
        plans = [connector.plan(s) for s in people]
        results = [connector.erase(s, p) for s, p in zip(people, plans, strict=True)]
        checks = [connector.verify(s) for s in people]
    finally:
        connector.close()
    return plans, results, checks


def in_batch(url: str, people: list[Subject], config: dict):
    connector = SqlConnector("crm", config)
    try:
        plans = connector.plan_many(people)
        results = connector.erase_many(list(zip(people, plans, strict=True)))
        checks = connector.verify_many(people)
    finally:
        connector.close()
    return plans, results, checks


@pytest.mark.parametrize("match", ["case-insensitive", "exact"])
@pytest.mark.parametrize(
    ("names", "set_based"),
    [
        (["dan", "nobody", "ann", "cat"], True),
        (["ann", "dan", "eve", "nobody", "cat"], False),  # Ann and Eve share a message
    ],
)
def test_a_batch_returns_and_leaves_what_one_person_at_a_time_does(
    urls, match, names, set_based, monkeypatch
):
    one_url, batch_url = urls
    people = subjects(names, match)
    expected = one_by_one(one_url, people, settings(one_url, match))
    one_after_another = []
    original = SqlConnector._erase_one
    monkeypatch.setattr(
        SqlConnector,
        "_erase_one",
        lambda self, *a: one_after_another.append(1) or original(self, *a),
    )
    plans, results, checks = in_batch(batch_url, people, settings(batch_url, match))

    assert [p.to_dict() for p in plans] == [p.to_dict() for p in expected[0]]
    assert [(r.outcome, r.rows_affected) for r in results] == [
        (r.outcome, r.rows_affected) for r in expected[1]
    ]
    assert [c.remaining for c in checks] == [c.remaining for c in expected[2]]
    assert dump(batch_url) == dump(one_url)
    assert bool(one_after_another) != set_based
    outcomes = dict(zip(names, (r.outcome for r in results), strict=True))
    assert outcomes["nobody"] == Outcome.NOT_FOUND and outcomes["cat"] == Outcome.COMPLETED
    assert {s.table: s.rows for s in plans[names.index("cat")].steps}["invoice"] == 2
    assert all(c.clean for c in checks)


def test_an_empty_batch_does_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    build_crm(url)
    connector = SqlConnector("crm", settings(url))
    assert connector.plan_many([]) == []
    assert connector.erase_many([]) == []
    assert connector.verify_many([]) == []
    connector.close()


def test_a_blocked_plan_stops_the_whole_batch_before_any_change(urls):
    url = urls[0]
    before = dump(url)
    connector = SqlConnector("crm", settings(url, event=None))
    people = subjects(["cat", "ann"], "case-insensitive")
    plans = connector.plan_many(people)
    assert not plans[0].warnings and plans[1].warnings
    with pytest.raises(ConnectorError, match="blocked"):
        connector.erase_many(list(zip(people, plans, strict=True)))
    connector.close()
    assert dump(url) == before


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_batch_that_fails_halfway_raises_and_changes_nothing(urls, kind, monkeypatch):
    url = urls[0]
    before = dump(url)
    connector = SqlConnector("crm", settings(url))
    people = subjects(["ann", "dan"], "case-insensitive")
    work = list(zip(people, connector.plan_many(people), strict=True))
    original, applied = SqlConnector._apply, []

    def apply_then_fail(self, conn, table, *args):
        if len(applied) == 2:  # two tables were changed in the transaction already
            raise exc.OperationalError("UPDATE customer", {}, Exception("connection lost"))
        applied.append(table.name)
        return original(self, conn, table, *args)

    monkeypatch.setattr(SqlConnector, "_apply", apply_then_fail)
    with pytest.raises(ConnectorError, match="erasing failed: connection lost") as error:
        connector.erase_many(work)
    assert error.value.transient
    assert dump(url) == before
    monkeypatch.setattr(SqlConnector, "_apply", original)
    results = connector.erase_many(work)  # the batch's connection is usable again
    connector.close()
    assert [r.outcome for r in results] == [Outcome.COMPLETED, Outcome.COMPLETED]


def test_a_database_error_in_a_batch_is_not_transient_and_changes_nothing(monkeypatch):
    with fresh_database("postgresql") as url:
        build_crm(url)
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'customers are read-only'; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE UPDATE ON customer"
                " FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        engine.dispose()
        before = dump(url)
        connector = SqlConnector("crm", settings(url))
        people = subjects(["ann", "dan", "cat"], "exact")
        work = list(zip(people, connector.plan_many(people), strict=True))
        with pytest.raises(ConnectorError, match="read-only") as error:
            connector.erase_many(work)
        connector.close()
        assert not error.value.transient
        assert dump(url) == before


@pytest.mark.parametrize("kind", ["mariadb", "postgresql"])
def test_rows_beyond_one_batch_are_all_changed_for_everyone(urls, monkeypatch):
    """On MariaDB a batch changes rows joined to a temporary table of their keys; values
    computed per row are written ROW_BATCH rows at a time, and one-by-one erasure reads
    keys KEY_BATCH at a time."""
    monkeypatch.setattr(sql, "KEY_BATCH", 2)
    monkeypatch.setattr(sql, "ROW_BATCH", 2)
    one_url, batch_url = urls
    people = subjects(["dan", "ann", "cat"], "case-insensitive")
    expected = one_by_one(one_url, people, settings(one_url))
    plans, results, checks = in_batch(batch_url, people, settings(batch_url))
    assert [(r.outcome, r.rows_affected) for r in results] == [
        (r.outcome, r.rows_affected) for r in expected[1]
    ]
    assert sum(r.rows_affected["order_line"] for r in results) > 2
    assert all(c.clean for c in checks)
    assert dump(batch_url) == dump(one_url)
    assert [p.to_dict() for p in plans] == [p.to_dict() for p in expected[0]]


@pytest.mark.parametrize("match", ["case-insensitive", "exact"])
def test_hostile_addresses_in_a_batch_count_what_they_count_alone(kind, tmp_path, match):
    with ExitStack() as stack:
        url = _url(kind, stack, tmp_path, "people.sqlite")
        engine, person, note = identities._build(url)
        identities._reset(engine, person, note, "target@example.org")
        engine.dispose()
        given = [*identities.OTHERS, *identities.FRAGMENTS, "A@example.org", "target@example.org"]
        if kind == "postgresql":  # PostgreSQL refuses NUL in text
            given = [g for g in given if "\x00" not in g]
        people = [Subject(email=g) for g in given]
        connector = SqlConnector("people", identities._config(url, match))
        try:
            alone = [connector.plan(s).to_dict() for s in people]
            together = [p.to_dict() for p in connector.plan_many(people)]
            checks = [c.remaining for c in connector.verify_many(people)]
        finally:
            connector.close()
    assert together == alone
    assert checks == [
        {"person": p["steps"][-1]["rows"], "note": p["steps"][0]["rows"]} for p in alone
    ]
