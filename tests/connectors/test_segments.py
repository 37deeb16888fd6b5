"""Segments: groups of people a connector lists for bulk erasure, checked against the schema."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime

import pytest
import sqlalchemy as sa

from connectors.base import (
    CheckResult,
    ConfigError,
    Connector,
    ConnectorError,
    Plan,
    SegmentInfo,
    Subject,
    VerifyResult,
)
from connectors.sql import SqlConnector
from core.cli import cli
from core.demo import DOCUMENTED, create_demo_crm, demo_systems_toml
from core.systems import load_systems
from tests.services import fresh_database

BEFORE = date(2025, 1, 1)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crm.sqlite'}"
    else:
        with fresh_database(request.param) as database_url:
            yield database_url


def demo_systems(tmp_path, url: str, replace: tuple[str, str] | None = None):
    text = demo_systems_toml(url)
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    file = tmp_path / "systems.toml"
    file.write_text(text, encoding="utf-8")
    return load_systems(file)


def inactive_in(url: str) -> set[str]:
    """Return the demo customers who last signed in before BEFORE, straight from SQL."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(
                conn.execute(
                    sa.text("SELECT email FROM customers WHERE last_login_at < :before"),
                    {"before": datetime(2025, 1, 1)},
                ).scalars()
            )
    finally:
        engine.dispose()


def test_the_demo_segment_lists_exactly_the_inactive_customers(tmp_path, url):
    total = create_demo_crm(url)
    systems = demo_systems(tmp_path, url)
    with systems.open("crm") as connector:
        assert connector.segments() == [
            SegmentInfo("inactive", "Customers inactive since a date", "before")
        ]
        listed = [s.email for s in connector.list_segment("inactive", {"before": BEFORE})]
        assert connector.check().ok
    expected = inactive_in(url)
    assert sorted(listed) == sorted(expected)  # each person once
    assert 0 < len(expected) < total
    assert not {email for email, _, _ in DOCUMENTED} & set(listed)  # they signed in lately
    with systems.open("crm") as connector:
        assert list(connector.list_segment("inactive", {"before": date(2024, 1, 1)})) == []


def test_people_already_erased_are_not_listed_again(tmp_path, url):
    create_demo_crm(url)
    systems = demo_systems(tmp_path, url)
    with systems.open("crm") as connector:
        first, *others = connector.list_segment("inactive", {"before": BEFORE})
        connector.erase(first, connector.plan(first))
        after = [s.email for s in connector.list_segment("inactive", {"before": BEFORE})]
    assert after == [s.email for s in others]
    assert not any("erased-" in email for email in after)


def test_a_big_segment_is_read_in_chunks_and_lists_everyone_once(tmp_path, url):
    metadata = sa.MetaData()
    people = sa.Table(
        "people",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(80), nullable=False),
        sa.Column("last_seen", sa.Date, nullable=False),
    )
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            people.insert(),
            [
                {
                    "id": n,
                    "email": f"p{n}@example.org",
                    "last_seen": date(2020, 1, 1) if n % 5 else date(2026, 1, 1),
                }
                for n in range(1, 2601)
            ],
        )
    engine.dispose()
    connector = SqlConnector(
        "shop",
        {
            "url": url,
            "subject": {"table": "people", "columns": ["email"]},
            "tables": {"people": {"action": "delete"}},
            "segments": {
                "quiet": {
                    "label": "Quiet",
                    "table": "people",
                    "column": "last_seen",
                    "parameter": "before",
                }
            },
        },
    )
    listed = [s.email for s in connector.list_segment("quiet", {"before": BEFORE})]
    connector.close()
    assert listed == [f"p{n}@example.org" for n in range(1, 2601) if n % 5]  # 2080: 3 chunks


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        (
            'table = "customers"\ncolumn = ',
            'table = "orders"\ncolumn = ',
            "segments.inactive.table",
            "subject table",
        ),
        ('"last_login_at"', '"last_seen_at"', "segments.inactive.column", "no column"),
        ('"last_login_at"', '"full_name"', "segments.inactive.column", "not a date"),
    ],
)
def test_a_segment_naming_what_the_database_lacks_stops_the_check(
    tmp_path, crm_url, old, new, key, message
):
    systems = demo_systems(tmp_path, crm_url, (old, new))
    with systems.open("crm") as connector, pytest.raises(ConfigError, match=message) as error:
        connector.check()
    assert (error.value.system, error.value.key) == ("crm", key)


def test_lethe_systems_check_names_the_wrong_segment_key(app, tmp_path):
    systems_file = app.config["SYSTEMS_FILE"]
    text = systems_file.read_text(encoding="utf-8").replace('"last_login_at"', '"last_seen_at"')
    systems_file.write_text(text, encoding="utf-8")
    with app.app_context():
        app.extensions["lethe.systems"] = load_systems(systems_file)
    result = app.test_cli_runner().invoke(cli, ["systems", "check"])
    assert result.exit_code == 1
    assert "FAIL crm" in result.output and str(systems_file) in result.output
    assert "system 'crm', key 'segments.inactive.column'" in result.output


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('parameter = "before"', 'parameter = "after"', "segments.inactive.parameter"),
        ('label = "Customers inactive since a date"\n', "", "segments.inactive.label"),
        (
            'parameter = "before"',
            'parameter = "before"\ncolour = "blue"',
            "segments.inactive.colour",
        ),
    ],
)
def test_a_malformed_segment_stops_loading_naming_file_system_and_key(
    tmp_path, crm_url, old, new, key
):
    with pytest.raises(ConfigError) as error:
        demo_systems(tmp_path, crm_url, (old, new))
    assert (error.value.system, error.value.key) == ("crm", key)
    assert str(tmp_path / "systems.toml") in str(error.value)


def test_listing_needs_the_date_and_a_known_segment(tmp_path, crm_url):
    systems = demo_systems(tmp_path, crm_url)
    with systems.open("crm") as connector:
        with pytest.raises(ConnectorError, match="needs a date"):
            list(connector.list_segment("inactive", {}))
        with pytest.raises(ConnectorError, match="no segment named 'dormant'"):
            list(connector.list_segment("dormant", {"before": BEFORE}))


class Ledger(Connector):
    """A connector that implements the required verbs and nothing optional."""

    name = "ledger"

    def check(self) -> CheckResult:
        return CheckResult(True, "ok")

    def plan(self, subject: Subject) -> Plan:
        return Plan(self.system, self.name)

    def export(self, subject: Subject):
        return iter(())

    def erase(self, subject: Subject, plan: Plan):
        raise ConnectorError("not here")

    def verify(self, subject: Subject) -> VerifyResult:
        return VerifyResult()


def test_a_connector_without_segments_lists_none_and_refuses_to_list():
    connector = Ledger("books", {})
    assert connector.segments() == []
    with pytest.raises(ConnectorError, match="cannot list segments"):
        list(connector.list_segment("anything", {"before": BEFORE}))
