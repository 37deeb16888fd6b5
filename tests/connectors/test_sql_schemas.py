"""The SQL connector on a hostile schema, on real SQLite, PostgreSQL and MariaDB.

Quoted CamelCase names, foreign keys without cascade, invoices that must be kept (a NOT
NULL key to the customer) with their personal columns anonymised, self-references, a
column too short for a naive replacement, and people whose address and name are not ASCII.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from connectors.base import ConfigError, Outcome, Subject
from connectors.sql import SqlConnector
from tests.services import fresh_database

KEY_ENV, KEY = "LETHE_TEST_CRM_PSEUDONYM_KEY", "a test key that is long enough"

#: (id, stored address, full name, address the person gives): stored in other cases.
ZOE = (1, "Zoë@Exämple.com", "Zoë Ångström", "zoë@exämple.com")
IVAN = (2, "ИВАН.ЛИ@ПРИМЕР.РФ", "Иван Ли 李伟", "иван.ли@пример.рф")
OTHER = (3, "pat.other@example.org", "Pat Other", "pat.other@example.org")
PEOPLE = (ZOE, IVAN, OTHER)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shop.sqlite'}"
    else:
        with fresh_database(request.param) as database_url:
            yield database_url


@pytest.fixture(autouse=True)
def pseudonym_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def build_shop(url: str) -> None:
    """Create the schema (no ON DELETE anywhere) and three people's data."""
    metadata = sa.MetaData()
    sa.Table(
        "Customer",
        metadata,
        sa.Column("Id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("EMail", sa.String(120), nullable=False, unique=True),
        sa.Column("FullName", sa.String(80), nullable=False),
        sa.Column("Phone", sa.String(20)),
        sa.Column("Nick", sa.String(8)),  # too short for any naive replacement
        sa.Column("BirthDate", sa.Date),
        sa.Column("LastSeenAt", sa.DateTime),
        sa.Column("ReferredBy", sa.ForeignKey("Customer.Id")),  # self-reference
    )
    sa.Table(
        "CustomerOrders",
        metadata,
        sa.Column("Id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("CustomerId", sa.ForeignKey("Customer.Id"), nullable=False),
        sa.Column("ShipTo", sa.String(200)),
    )
    sa.Table(
        "OrderLine",
        metadata,
        sa.Column("Id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("OrderId", sa.ForeignKey("CustomerOrders.Id"), nullable=False),
        sa.Column("Note", sa.Text),
    )
    sa.Table(
        "Invoice",
        metadata,
        sa.Column("Id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("CustomerId", sa.ForeignKey("Customer.Id"), nullable=False),
        sa.Column("AmountCents", sa.Integer, nullable=False),
        sa.Column("BillingName", sa.String(80), nullable=False),
        sa.Column("BillingEmail", sa.String(64)),
        sa.Column("IssuedOn", sa.Date, nullable=False),
    )
    sa.Table(
        "Comment",
        metadata,
        sa.Column("Id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("CustomerId", sa.ForeignKey("Customer.Id"), nullable=False),
        sa.Column("ParentId", sa.ForeignKey("Comment.Id")),  # threads: a self-reference
        sa.Column("Body", sa.Text, nullable=False),
    )
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    t = metadata.tables
    with engine.begin() as conn:
        for pid, stored, name, _email in PEOPLE:
            conn.execute(
                t["Customer"]
                .insert()
                .values(
                    Id=pid,
                    EMail=stored,
                    FullName=name,
                    Phone=f"+33 1 40 00 00 0{pid}",
                    Nick=name.split()[0][:8],
                    BirthDate=dt.date(1980 + pid, 5, 17),
                    LastSeenAt=dt.datetime(2024, 7, pid, 13, 45, 10),  # noqa: DTZ001
                    ReferredBy=None if pid == 1 else 1,  # Zoë referred the others
                )
            )
            for n in (1, 2):
                order = pid * 10 + n
                conn.execute(
                    t["CustomerOrders"]
                    .insert()
                    .values(Id=order, CustomerId=pid, ShipTo=f"{name}, {pid} Rue de la Paix")
                )
                conn.execute(
                    t["OrderLine"]
                    .insert()
                    .values(Id=order, OrderId=order, Note=f"Gift for {name} <{stored}>")
                )
                conn.execute(
                    t["Invoice"]
                    .insert()
                    .values(
                        Id=order,
                        CustomerId=pid,
                        AmountCents=1000 * pid + 7 * n,
                        BillingName=name,
                        BillingEmail=stored.lower(),
                        IssuedOn=dt.date(2024, 3, n),
                    )
                )
            first = pid * 10
            conn.execute(
                t["Comment"].insert(),
                [
                    {"Id": first, "CustomerId": pid, "ParentId": None, "Body": f"I am {name}"},
                    {"Id": first + 1, "CustomerId": pid, "ParentId": first, "Body": stored},
                ],
            )
    engine.dispose()


def settings(url: str, **tables) -> dict:
    base = {
        "Customer": {
            "action": "anonymise",
            "ground": "art17-3-b",
            "columns": {
                "EMail": "fake",
                "FullName": "fake",
                "Phone": "fake:phone",
                "Nick": "null",
                "BirthDate": "year",
                "LastSeenAt": "year",
            },
        },
        "CustomerOrders": {"action": "delete"},
        "OrderLine": {"action": "delete"},
        "Invoice": {
            "action": "anonymise",
            "ground": "art17-3-b",
            "note": "Invoices are kept 10 years under tax law",
            "columns": {"BillingName": "fake", "BillingEmail": "pseudonym"},
        },
        "Comment": {"action": "delete"},
    }
    base.update(tables)
    return {
        "url": url,
        "pseudonym_key_env": KEY_ENV,
        "subject": {"table": "Customer", "columns": ["EMail"], "match": "case-insensitive"},
        "tables": base,
    }


def dump(url: str) -> dict[str, list[tuple]]:
    """Return every row of every table, in key order."""
    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    metadata.reflect(engine)
    try:
        with engine.connect() as conn:
            return {
                name: [tuple(row) for row in conn.execute(sa.select(t).order_by(*t.primary_key))]
                for name, t in metadata.tables.items()
            }
    finally:
        engine.dispose()


def traces(data: dict[str, list[tuple]], person: tuple) -> list[str]:
    """Return every text value, in any table, equal to or containing the person's data."""
    _pid, stored, name, email = person
    needles = {email.casefold(), stored.casefold(), name.casefold(), *name.casefold().split()}
    return [
        f"{table}: {value!r}"
        for table, rows in data.items()
        for row in rows
        for value in row
        if isinstance(value, str) and any(n in value.casefold() for n in needles)
    ]


def rows_of(data: dict[str, list[tuple]], pid: int) -> dict[str, list[tuple]]:
    """Return the rows that belong to person ``pid`` (ids are built from it)."""
    return {
        "Customer": [r for r in data["Customer"] if r[0] == pid],
        **{
            table: [r for r in data[table] if r[0] // 10 == pid]
            for table in ("CustomerOrders", "OrderLine", "Invoice", "Comment")
        },
    }


def amounts(data: dict[str, list[tuple]]) -> dict[int, int]:
    return {row[0]: row[2] for row in data["Invoice"]}


def erase(url: str, person: tuple):
    connector = SqlConnector("shop", settings(url))
    subject = Subject(email=person[3])
    try:
        plan = connector.plan(subject)
        assert not plan.warnings
        first = connector.erase(subject, plan)
        verified = connector.verify(subject)
        after_first = dump(url)
        second = connector.erase(subject, plan)
        replan = connector.plan(subject)
    finally:
        connector.close()
    return plan, first, verified, after_first, second, replan


def test_erasure_leaves_no_trace_keeps_invoices_and_is_idempotent(url):
    build_shop(url)
    before = dump(url)
    for person in (ZOE, IVAN):
        assert traces(before, person)  # the scan does find the person where they are
    plan, first, verified, after_first, second, replan = erase(url, ZOE)

    assert {(s.table, s.rows) for s in plan.steps} == {
        ("Customer", 1),
        ("CustomerOrders", 2),
        ("OrderLine", 2),
        ("Invoice", 2),
        ("Comment", 2),
    }
    assert first.outcome == Outcome.COMPLETED
    assert first.rows_affected == {
        "Customer": 1,
        "CustomerOrders": 2,
        "OrderLine": 2,
        "Invoice": 2,
        "Comment": 2,
    }
    assert verified.clean
    assert traces(after_first, ZOE) == []
    # Invoices stay, amounts and dates untouched; the others' rows are exactly as before.
    assert amounts(after_first) == amounts(before)
    assert sum(amounts(after_first).values()) == sum(amounts(before).values())
    for pid in (IVAN[0], OTHER[0]):
        assert rows_of(after_first, pid) == rows_of(before, pid)
    # A second run changes nothing at all and reports the same outcome.
    assert second.outcome == first.outcome and second.total_rows == 0
    assert dump(url) == after_first
    assert not replan.found

    # The Cyrillic/Chinese person next; Zoë's anonymised rows stay as they were.
    _plan, first, verified, after_ivan, second, _replan = erase(url, IVAN)
    assert first.outcome == Outcome.COMPLETED and verified.clean
    assert traces(after_ivan, IVAN) == [] and traces(after_ivan, ZOE) == []
    assert rows_of(after_ivan, OTHER[0]) == rows_of(before, OTHER[0])
    assert rows_of(after_ivan, ZOE[0]) == rows_of(after_first, ZOE[0])
    assert amounts(after_ivan) == amounts(before)
    assert second.outcome == Outcome.COMPLETED and dump(url) == after_ivan


def test_anonymised_values_are_realistic_fit_and_stay_distinct(url):
    build_shop(url)
    erase(url, ZOE)
    erase(url, IVAN)
    data = dump(url)
    customers = {row[0]: row for row in data["Customer"]}
    zoe, ivan = customers[1], customers[2]
    # Unique EMail: a fake address under .invalid with a per-row suffix, never the same.
    assert zoe[1].endswith("-1@example.invalid") and ivan[1].endswith("-2@example.invalid")
    assert zoe[1] != ivan[1]
    assert " " in zoe[2] and zoe[2] != ZOE[2]  # a fake "Given Family" name
    assert zoe[3].startswith("+44 20 7946 0") and len(zoe[3]) <= 20
    assert zoe[4] is None  # the short Nick column is nulled
    assert zoe[5] == dt.date(1981, 1, 1)  # birth date truncated to its year
    assert zoe[6] == dt.datetime(2024, 1, 1)  # noqa: DTZ001
    assert zoe[7] is None and customers[3][7] == 1  # the person Zoë referred still is
    invoices = [row for row in data["Invoice"] if row[1] == 1]
    expected = hmac.new(KEY.encode(), ZOE[1].lower().encode(), hashlib.sha256).hexdigest()
    assert [row[4] for row in invoices] == [expected, expected]  # keyed, fits String(64)
    assert all(row[3] != ZOE[2] and " " in row[3] for row in invoices)
    assert [row[5] for row in invoices] == [dt.date(2024, 3, 1), dt.date(2024, 3, 2)]


@pytest.mark.parametrize(
    ("tables", "key", "message"),
    [
        (  # a parent that the kept invoices point at (NOT NULL) cannot go
            {"Customer": {"action": "delete"}},
            "tables.Customer.action",
            "Customer cannot be deleted while Invoice keeps rows",
        ),
        (
            {
                "Customer": {"action": "delete"},
                "Invoice": {"action": "retain", "ground": "art17-3-b"},
            },
            "tables.Customer.action",
            "anonymise Customer instead",
        ),
        (
            {"Customer": {"action": "anonymise", "columns": {"EMail": "fake", "Nick": "fake"}}},
            "tables.Customer.columns.Nick",
            r"Customer\.Nick holds 8 characters; a fake name needs 1[0-9]",
        ),
        (
            {
                "Customer": {
                    "action": "anonymise",
                    "columns": {"EMail": "fake", "Nick": "pseudonym"},
                }
            },
            "tables.Customer.columns.Nick",
            "Customer.Nick holds 8 characters; a pseudonym needs at least 16",
        ),
        (
            {
                "Customer": {
                    "action": "anonymise",
                    "columns": {"EMail": "fake", "Nick": "placeholder"},
                }
            },
            "tables.Customer.columns.Nick",
            "holds 8",
        ),
        (
            {"Customer": {"action": "anonymise", "columns": {"EMail": "fake", "FullName": "year"}}},
            "tables.Customer.columns.FullName",
            "not a date or timestamp column",
        ),
        (
            {"Invoice": {"action": "anonymise", "columns": {"AmountCents": "fake"}}},
            "tables.Invoice.columns.AmountCents",
            "not a text column",
        ),
    ],
)
def test_impossible_anonymisation_is_refused_at_plan_time(url, tables, key, message):
    build_shop(url)
    before = dump(url)
    connector = SqlConnector("shop", settings(url, **tables))
    with pytest.raises(ConfigError, match=message) as error:
        connector.plan(Subject(email=ZOE[3]))
    connector.close()
    assert error.value.key == key
    assert dump(url) == before


def test_a_pseudonym_needs_its_key(monkeypatch):
    config = settings("sqlite://")
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigError, match=KEY_ENV) as error:
        SqlConnector("shop", config)
    assert error.value.key == "pseudonym_key_env"
    del config["pseudonym_key_env"]
    with pytest.raises(ConfigError, match="required by the pseudonym method") as error:
        SqlConnector("shop", config)
    assert error.value.key == "pseudonym_key_env"


def test_fake_kinds_are_checked_when_the_settings_are_read():
    config = settings(
        "sqlite://", Comment={"action": "anonymise", "columns": {"Body": "fake:iban"}}
    )
    with pytest.raises(ConfigError, match="fake:KIND") as error:
        SqlConnector("shop", config)
    assert error.value.key == "tables.Comment.columns.Body"


def test_sqlite_foreign_keys_are_enforced_on_every_connection(tmp_path):
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    build_shop(url)
    connector = SqlConnector("shop", settings(url))
    try:
        for _ in range(2):
            with connector.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
                with pytest.raises(sa.exc.IntegrityError):
                    conn.exec_driver_sql('DELETE FROM "Customer" WHERE "Id" = 3')
                conn.rollback()
            connector.engine.dispose()  # the next connection is a new one
    finally:
        connector.close()
    assert len(dump(url)["Customer"]) == 3


@pytest.mark.parametrize("method", ["fake", "pseudonym"])
def test_people_already_erased_are_not_listed_again_in_a_segment(url, method):
    build_shop(url)
    config = settings(url)
    config["tables"]["Customer"]["columns"]["EMail"] = method
    config["segments"] = {
        "inactive": {
            "label": "Inactive",
            "table": "Customer",
            "column": "LastSeenAt",
            "parameter": "before",
        }
    }
    connector = SqlConnector("shop", config)
    try:
        subject = Subject(email=ZOE[3])
        connector.erase(subject, connector.plan(subject))
        listed = [
            s.email for s in connector.list_segment("inactive", {"before": dt.date(2030, 1, 1)})
        ]
    finally:
        connector.close()
    assert listed == [IVAN[1], OTHER[1]]
