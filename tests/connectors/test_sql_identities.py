"""Hostile identity values never reach another person's rows, nor crash the SQL connector.

Property tests on real SQLite, PostgreSQL and MariaDB: whatever address a person gives —
quotes, backslashes, LIKE wildcards, SQL fragments, combining marks, right-to-left text,
emoji, NUL — plan, erase and verify touch that person's rows only, and a value the
database cannot hold ends in a clear ConnectorError, never a crash or a wrong erasure.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from connectors.base import ConfigError, ConnectorError, Subject
from connectors.sql import SqlConnector
from tests.services import fresh_database

FRAGMENTS = [
    "' OR 1=1 --",
    "' OR '1'='1",
    '"; DROP TABLE person; --',
    "%",
    "_",
    "%@%",
    "\\",
    "\\'",
    "a\x00b@example.org",
    "*",
    "admin'--",
    "1; SELECT pg_sleep(1)",
    "é@example.org",
    "e@example.org",
    "İ@example.org",
    "ß@example.org",
    "a@example.org ",
]
#: Characters that break naive SQL or naive text handling, mixed with plain letters.
ALPHABET = st.sampled_from(
    list("aAeEzZ0@._-+ ")
    + ["'", '"', "\\", "%", "_", ";", "`", "*", "?", "[", "]"]
    + ["\x00", "\u0301", "\u202e", "\u05d0", "\u0627", "😀", "é", "É", "ß", "ẞ", "İ", "Σ", "ς"]
)
IDENTITIES = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.text(ALPHABET, min_size=1, max_size=24),
    st.builds(
        lambda a, b: f"{a}@{b}",
        st.text(ALPHABET, min_size=1, max_size=12),
        st.sampled_from(["example.org", "пример.рф", "例子.中国"]),
    ),
)
#: The other people in the table: the same shapes, so a loose match would catch them.
OTHERS = [
    "a@example.org",
    "A@EXAMPLE.ORG ",
    "e@example.org",
    "%@example.org",
    "_@example.org",
    "someone@example.org",
    "' OR 1=1 --x",
]


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'people.sqlite'}"
    else:
        with fresh_database(request.param) as database_url:
            yield database_url


def _build(url: str) -> tuple[sa.Engine, sa.Table, sa.Table]:
    metadata = sa.MetaData()
    person = sa.Table(
        "person",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(200), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
    )
    note = sa.Table(
        "note",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("person_id", sa.ForeignKey("person.id"), nullable=False),
        sa.Column("body", sa.Text),
    )
    engine = sa.create_engine(url, hide_parameters=True)
    if engine.dialect.name == "mysql":
        with engine.begin() as connection:  # emoji need four-byte UTF-8
            name = engine.url.database
            connection.exec_driver_sql(
                f"ALTER DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
            )
    metadata.create_all(engine)
    return engine, person, note


def _config(url: str, match: str) -> dict:
    return {
        "url": url,
        "subject": {"table": "person", "columns": ["email"], "match": match},
        "tables": {
            "person": {
                "action": "anonymise",
                "ground": "art17-3-b",
                "columns": {"email": "placeholder", "name": "fixed:Erased"},
            },
            "note": {"action": "delete"},
        },
    }


def _others(engine: sa.Engine, person: sa.Table, note: sa.Table) -> tuple[list, list]:
    with engine.connect() as connection:
        people = connection.execute(sa.select(person).where(person.c.id > 1).order_by("id"))
        notes = connection.execute(sa.select(note).where(note.c.person_id > 1).order_by("id"))
        return [tuple(r) for r in people], [tuple(r) for r in notes]


def _reset(engine, person, note, identity: str) -> bool:
    """Fill the tables afresh; return whether the database could store ``identity``."""
    with engine.begin() as connection:
        connection.execute(note.delete())
        connection.execute(person.delete())
        for number, email in enumerate(OTHERS, start=2):
            connection.execute(person.insert().values(id=number, email=email, name=f"P{number}"))
            connection.execute(note.insert().values(person_id=number, body="theirs"))
    try:
        with engine.begin() as connection:
            connection.execute(person.insert().values(id=1, email=identity, name="Target"))
            connection.execute(note.insert(), [{"person_id": 1, "body": "x"}] * 2)
        return True
    except (sa.exc.StatementError, ValueError):
        return False  # e.g. PostgreSQL refuses NUL in text


def _distinct(identity: str, match: str) -> bool:
    fold = (lambda s: s.casefold()) if match == "case-insensitive" else (lambda s: s)
    return all(fold(identity).rstrip() != fold(other).rstrip() for other in OTHERS)


@pytest.mark.parametrize("match", ["case-insensitive", "exact"])
def test_hostile_identities_touch_only_their_own_rows(url, match):
    engine, person, note = _build(url)
    connector = SqlConnector("people", _config(url, match))

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(identity=IDENTITIES)
    def check(identity: str) -> None:
        assume(_distinct(identity, match))
        stored = _reset(engine, person, note, identity)
        before = _others(engine, person, note)
        subject = Subject(email=identity)
        try:
            plan = connector.plan(subject)
        except ConnectorError as error:
            assert not stored, f"plan failed for a stored identity: {error}"
            assert "\x00" in identity
            assert _others(engine, person, note) == before
            return
        counts = {step.table: step.rows for step in plan.steps}
        assert counts == {"person": int(stored), "note": 2 * stored}, (identity, counts)
        connector.erase(subject, plan)
        assert _others(engine, person, note) == before
        assert all(n == 0 for n in connector.verify(subject).remaining.values())
        with engine.connect() as connection:
            left = connection.execute(sa.select(person.c.email).where(person.c.id == 1)).all()
        assert [e for (e,) in left if e == identity] == []

    try:
        check()
    finally:
        connector.close()
        engine.dispose()


@pytest.mark.parametrize(
    ("subject", "tables", "key"),
    [
        ({"table": "people", "columns": ["email"]}, None, "subject.table"),
        ({"table": "person", "columns": ["mail"]}, None, "subject.columns"),
        (None, {"person; DROP TABLE note": {"action": "delete"}}, "tables.person; DROP TABLE note"),
        (
            None,
            {"note": {"action": "anonymise", "columns": {'body"; --': "null"}}},
            'tables.note.columns.body"; --',
        ),
    ],
)
def test_names_not_in_the_reflected_schema_are_refused(tmp_path, subject, tables, key):
    url = f"sqlite:///{tmp_path / 'people.sqlite'}"
    engine, person, note = _build(url)
    _reset(engine, person, note, "target@example.org")
    config = _config(url, "exact")
    if subject:
        config["subject"] = subject
    if tables:
        config["tables"].update(tables)
    connector = SqlConnector("people", config)
    with pytest.raises(ConfigError) as error:
        connector.plan(Subject(email="target@example.org"))
    connector.close()
    assert error.value.key == key and "people" in str(error.value)
    assert len(_others(engine, person, note)[0]) == len(OTHERS)
    engine.dispose()


def test_a_nul_that_postgresql_refuses_is_a_clear_error_and_erases_nothing():
    with fresh_database("postgresql") as url:
        engine, person, note = _build(url)
        _reset(engine, person, note, "target@example.org")
        before = _others(engine, person, note)
        connector = SqlConnector("people", _config(url, "exact"))
        with pytest.raises(ConnectorError, match="NUL") as error:
            connector.plan(Subject(email="target@example.org\x00' OR 1=1 --"))
        connector.close()
        assert not error.value.transient  # retrying cannot help: staff must look at it
        assert _others(engine, person, note) == before
        with engine.connect() as connection:
            assert connection.scalar(sa.select(sa.func.count()).select_from(note)) == 2 + len(
                OTHERS
            )
        engine.dispose()
