"""The SQL connector against real SQLite, PostgreSQL and MariaDB databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from connectors import sql
from connectors.base import Action, ConfigError, ConnectorError, Outcome, Subject
from connectors.sql import ROW_BATCH, SqlConnector
from tests.services import fresh_database

PERSON = Subject(email="Zoë.Ωmega@пример.example")
OTHER = "someone.else@example.org"


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crm.sqlite'}"
    else:
        with fresh_database(request.param) as database_url:
            yield database_url


def build_crm(url: str) -> None:
    """Create a shop whose names are quoted CamelCase, with FKs lacking any cascade."""
    metadata = sa.MetaData()
    sa.Table(
        "CustomerAccount",
        metadata,
        sa.Column("Id", sa.Integer, primary_key=True),
        sa.Column("EmailAddress", sa.String(120), nullable=False, unique=True),
        sa.Column("FullName", sa.String(80), nullable=False),
        sa.Column("Nick", sa.String(8)),
        sa.Column("ReferredBy", sa.ForeignKey("CustomerAccount.Id")),
    )
    sa.Table(
        "Invoice",
        metadata,
        sa.Column("Id", sa.Integer, primary_key=True),
        sa.Column("CustomerId", sa.ForeignKey("CustomerAccount.Id"), nullable=False),
        sa.Column("AmountCents", sa.Integer, nullable=False),
        sa.Column("BillingName", sa.String(80)),
    )
    sa.Table(
        "Ticket",
        metadata,
        sa.Column("Id", sa.Integer, primary_key=True),
        sa.Column("CustomerId", sa.ForeignKey("CustomerAccount.Id"), nullable=False),
        sa.Column("Body", sa.Text),
    )
    sa.Table(
        "TicketReply",
        metadata,
        sa.Column("Id", sa.Integer, primary_key=True),
        sa.Column("TicketId", sa.ForeignKey("Ticket.Id"), nullable=False),
        sa.Column("Body", sa.Text),
    )
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            metadata.tables["CustomerAccount"].insert(),
            [
                {
                    "Id": 1,
                    "EmailAddress": PERSON.email.upper(),
                    "FullName": "Зоя 欧米茄",
                    "Nick": "zo",
                    "ReferredBy": None,
                },
                {
                    "Id": 2,
                    "EmailAddress": OTHER,
                    "FullName": "Someone Else",
                    "Nick": None,
                    "ReferredBy": 1,
                },
            ],
        )
        conn.execute(
            metadata.tables["Invoice"].insert(),
            [
                {"CustomerId": 1, "AmountCents": 1250, "BillingName": "Зоя 欧米茄"},
                {"CustomerId": 1, "AmountCents": 990, "BillingName": "Зоя 欧米茄"},
                {"CustomerId": 2, "AmountCents": 5000, "BillingName": "Someone Else"},
            ],
        )
        conn.execute(
            metadata.tables["Ticket"].insert(),
            [{"Id": 1, "CustomerId": 1, "Body": "hello"}, {"Id": 2, "CustomerId": 2, "Body": "hi"}],
        )
        conn.execute(
            metadata.tables["TicketReply"].insert(),
            [
                {"TicketId": 1, "Body": "reply 1"},
                {"TicketId": 1, "Body": "reply 2"},
                {"TicketId": 2, "Body": "reply to other"},
            ],
        )
    engine.dispose()


def settings(url: str, **tables) -> dict:
    base = {
        "CustomerAccount": {
            "action": "anonymise",
            "ground": "art17-3-b",
            "columns": {"EmailAddress": "placeholder", "FullName": "fixed:Erased", "Nick": "null"},
        },
        "Invoice": {
            "action": "anonymise",
            "ground": "art17-3-b",
            "columns": {"BillingName": "null"},
        },
        "Ticket": {"action": "delete"},
        "TicketReply": {"action": "delete"},
    }
    base.update(tables)
    return {
        "url": url,
        "tables": {k: v for k, v in base.items() if v is not None},
        "subject": {
            "table": "CustomerAccount",
            "columns": ["EmailAddress"],
            "match": "case-insensitive",
        },
    }


def query(url: str, sql: str) -> list:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql)))
    finally:
        engine.dispose()


def test_plan_counts_every_table_children_first(url):
    build_crm(url)
    connector = SqlConnector("shop", settings(url))
    plan = connector.plan(PERSON)
    connector.close()
    assert {(s.table, s.action, s.rows) for s in plan.steps} == {
        ("TicketReply", Action.DELETE, 2),
        ("Ticket", Action.DELETE, 1),
        ("Invoice", Action.ANONYMISE, 2),
        ("CustomerAccount", Action.ANONYMISE, 1),
    }
    order = [s.table for s in plan.steps]
    assert order.index("TicketReply") < order.index("Ticket") < order.index("CustomerAccount")
    assert not plan.warnings


def test_erase_leaves_nothing_of_the_person_and_keeps_what_the_law_requires(url):
    build_crm(url)
    connector = SqlConnector("shop", settings(url))
    plan = connector.plan(PERSON)
    result = connector.erase(PERSON, plan)
    assert result.outcome == Outcome.COMPLETED
    assert result.rows_affected == {
        "TicketReply": 2,
        "Ticket": 1,
        "Invoice": 2,
        "CustomerAccount": 1,
    }
    assert connector.verify(PERSON).clean
    # A second run changes nothing more and reports the same outcome.
    again = connector.erase(PERSON, plan)
    assert again.outcome == Outcome.COMPLETED and again.total_rows == 0
    connector.close()

    texts = " ".join(
        str(v)
        for table in ("CustomerAccount", "Invoice", "Ticket", "TicketReply")
        for row in query(
            url, f'SELECT * FROM "{table}"'.replace('"', "`" if url.startswith("mysql") else '"')
        )
        for v in row
    )
    for fragment in ("Зоя", "欧米茄", "Ωmega".lower(), "ΩMEGA", "reply 1"):
        assert fragment not in texts
    assert "Someone Else" in texts and "reply to other" in texts
    q = "`" if url.startswith("mysql") else '"'
    assert (
        query(url, f"SELECT SUM({q}AmountCents{q}) FROM {q}Invoice{q}")[0][0] == 1250 + 990 + 5000
    )
    # The other customer referred by the person keeps their row.
    assert query(url, f"SELECT COUNT(*) FROM {q}CustomerAccount{q}")[0][0] == 2


def test_verify_sees_the_person_come_back(url):
    build_crm(url)
    connector = SqlConnector("shop", settings(url))
    connector.erase(PERSON, connector.plan(PERSON))
    engine = sa.create_engine(url)
    table = sa.Table("CustomerAccount", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(table.insert().values(Id=9, EmailAddress=PERSON.email, FullName="again"))
    engine.dispose()
    check = connector.verify(PERSON)
    connector.close()
    assert not check.clean and check.remaining["CustomerAccount"] == 1


def test_an_unconfigured_table_holding_the_person_blocks_erasure(url):
    build_crm(url)
    connector = SqlConnector("shop", settings(url, TicketReply=None))
    plan = connector.plan(PERSON)
    assert any("TicketReply holds 2 rows" in w for w in plan.warnings)
    with pytest.raises(ConnectorError, match="blocked"):
        connector.erase(PERSON, plan)
    connector.close()
    assert (
        query(
            url, "SELECT COUNT(*) FROM " + ("`Ticket`" if url.startswith("mysql") else '"Ticket"')
        )[0][0]
        == 2
    )


@pytest.mark.parametrize(
    ("tables", "key", "message"),
    [
        ({"CustomerAccount": {"action": "delete"}}, "tables.CustomerAccount.action", "anonymise"),
        (
            {"Invoice": {"action": "anonymise", "columns": {"BillingName": "fixed:" + "x" * 81}}},
            "tables.Invoice.columns.BillingName",
            "longer than the column",
        ),
        (
            {
                "CustomerAccount": {
                    "action": "anonymise",
                    "columns": {"EmailAddress": "placeholder", "FullName": "null"},
                }
            },
            "tables.CustomerAccount.columns.FullName",
            "NOT NULL",
        ),
        (
            {
                "CustomerAccount": {
                    "action": "anonymise",
                    "columns": {"EmailAddress": "placeholder", "Nick": "placeholder"},
                }
            },
            "tables.CustomerAccount.columns.Nick",
            "holds 8",
        ),
        (
            {"CustomerAccount": {"action": "anonymise", "columns": {"FullName": "fixed:x"}}},
            "tables.CustomerAccount.columns",
            "stays identifiable",
        ),
        ({"Nowhere": {"action": "delete"}}, "tables.Nowhere", "no such table"),
        (
            {"Invoice": {"action": "anonymise", "columns": {"CustomerId": "null"}}},
            "tables.Invoice.columns.CustomerId",
            "foreign keys",
        ),
    ],
)
def test_plans_that_cannot_work_are_refused_before_touching_a_row(url, tables, key, message):
    build_crm(url)
    connector = SqlConnector("shop", settings(url, **tables))
    with pytest.raises(ConfigError, match=message) as error:
        connector.plan(PERSON)
    connector.close()
    assert error.value.key == key


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"url": None}, "url"),
        ({"subject": None}, "subject"),
        ({"tables": {"Ticket": {"action": "shred"}}}, "tables.Ticket.action"),
        ({"tables": {"Ticket": {"action": "retain"}}}, "tables.Ticket.ground"),
        (
            {"tables": {"Ticket": {"action": "anonymise", "columns": {"Body": "scramble"}}}},
            "tables.Ticket.columns.Body",
        ),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_malformed_settings_name_their_key(patch, key):
    config = settings("sqlite://")
    config.update(patch)
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(ConfigError) as error:
        SqlConnector("shop", config)
    assert error.value.key == key and "shop" in str(error.value)


def test_export_streams_every_linked_row(url):
    build_crm(url)
    connector = SqlConnector("shop", settings(url))
    records = list(connector.export(PERSON))
    connector.close()
    assert sorted(r.table for r in records) == [
        "CustomerAccount",
        "Invoice",
        "Invoice",
        "Ticket",
        "TicketReply",
        "TicketReply",
    ]
    assert any(r.data.get("FullName") == "Зоя 欧米茄" for r in records)


def test_an_unreachable_database_fails_loudly_and_as_transient():
    connector = SqlConnector(
        "shop", settings("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2")
    )
    assert not connector.check().ok
    with pytest.raises(ConnectorError) as error:
        connector.plan(PERSON)
    assert error.value.transient
    connector.close()


@pytest.mark.parametrize("dialect", ["postgresql", "mariadb"])
def test_a_connection_the_server_closed_while_idle_is_replaced_and_a_fresh_one_fails_loudly(
    dialect, monkeypatch
):
    with fresh_database(dialect) as database:
        build_crm(database)
        connector = SqlConnector("shop", settings(database))
        expected = connector.plan(PERSON).total_rows

        def kill_the_connector_sessions() -> None:
            if dialect == "postgresql":
                mine = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                mine += " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                query(database, mine)
            else:
                engine = sa.create_engine(database)
                with engine.connect() as conn:
                    for (pid,) in conn.exec_driver_sql(
                        "SELECT id FROM information_schema.processlist"
                        " WHERE db = DATABASE() AND id <> CONNECTION_ID()"
                    ).all():
                        conn.exec_driver_sql(f"KILL {int(pid)}")
                engine.dispose()

        # Idle past the threshold: the pooled connection is checked, found dead and
        # replaced before the plan runs.
        kill_the_connector_sessions()
        monkeypatch.setattr(sql, "IDLE_PING_SECONDS", 0.0)
        assert connector.plan(PERSON).total_rows == expected
        # Used a moment ago: no check, so the statement fails, loudly and as transient
        # (the run is retried); the next use gets a new connection.
        kill_the_connector_sessions()
        monkeypatch.setattr(sql, "IDLE_PING_SECONDS", 3600.0)
        with pytest.raises(ConnectorError) as error:
            connector.plan(PERSON)
        assert error.value.transient
        assert connector.plan(PERSON).total_rows == expected
        connector.close()


def test_deleting_a_self_referenced_person_detaches_the_people_they_referred(url):
    build_crm(url)
    connector = SqlConnector(
        "shop", settings(url, CustomerAccount={"action": "delete"}, Invoice={"action": "delete"})
    )
    result = connector.erase(PERSON, connector.plan(PERSON))
    connector.close()
    assert result.rows_affected["CustomerAccount"] == 1
    q = "`" if url.startswith("mysql") else '"'
    rows = query(url, f"SELECT {q}EmailAddress{q}, {q}ReferredBy{q} FROM {q}CustomerAccount{q}")
    assert rows == [(OTHER, None)]
    assert query(url, f"SELECT SUM({q}AmountCents{q}) FROM {q}Invoice{q}")[0][0] == 5000


def test_per_row_values_are_written_in_batches_that_cover_every_row(url, monkeypatch):
    """fake and pseudonym run in keyset batches of ROW_BATCH: more rows than one batch."""
    build_crm(url)
    engine = sa.create_engine(url)
    invoice = sa.Table("Invoice", sa.MetaData(), autoload_with=engine)
    extra = ROW_BATCH * 2 + 17
    with engine.begin() as conn:
        conn.execute(
            invoice.insert(),
            [{"CustomerId": 1, "AmountCents": 1, "BillingName": "Зоя 欧米茄"}] * extra,
        )
    engine.dispose()
    monkeypatch.setenv("SHOP_PSEUDONYM_KEY", "x" * 32)
    config = settings(
        url,
        Invoice={
            "action": "anonymise",
            "ground": "art17-3-b",
            "columns": {"BillingName": "fake"},
        },
        CustomerAccount={
            "action": "anonymise",
            "ground": "art17-3-b",
            "columns": {"EmailAddress": "pseudonym", "FullName": "fake", "Nick": "null"},
        },
    )
    config["pseudonym_key_env"] = "SHOP_PSEUDONYM_KEY"
    connector = SqlConnector("shop", config)
    result = connector.erase(PERSON, connector.plan(PERSON))
    assert connector.verify(PERSON).clean
    connector.close()
    assert result.rows_affected["Invoice"] == extra + 2
    assert result.rows_affected["CustomerAccount"] == 1
    q = "`" if url.startswith("mysql") else '"'
    names = query(url, f"SELECT {q}CustomerId{q}, {q}BillingName{q} FROM {q}Invoice{q}")
    assert not [n for c, n in names if c == 1 and ("Зоя" in n or " " not in n)]
    assert [n for c, n in names if c == 2] == ["Someone Else"]
    emails = query(url, f"SELECT {q}EmailAddress{q} FROM {q}CustomerAccount{q} ORDER BY {q}Id{q}")
    assert len(emails[0][0]) == 64 and int(emails[0][0], 16) >= 0  # hex, cut to the column
    assert emails[1][0] == OTHER
