"""The built-in SQL connector: SQLAlchemy on PostgreSQL, MariaDB/MySQL and SQLite.

The person is found in one table; every table that hangs off it is found by reflecting
foreign keys.  Erasure runs children first, in one transaction, with one set-based
statement per table; the plan and the verification count every table in one SELECT.
Statements are built once per connector and run again with the next person's address.
The batch verbs (``plan_many``, ``erase_many``, ``verify_many``) load a batch of people
into a temporary table and run the same statements against all of them at once.

Columns whose new value is computed per row in Python (``fake``, ``pseudonym``) are
written in keyset batches of :data:`ROW_BATCH` rows, each batch one ``UPDATE ... WHERE key
= :key`` sent with executemany(); ``null``, ``fixed:``, ``placeholder`` and ``year`` are
SQL expressions.  Idempotency: once erased the person no longer matches, so a second run
changes nothing and reports the same outcome as the plan it carries out.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.dialects import mysql

from connectors.base import (
    Action,
    CheckResult,
    ConfigError,
    Connector,
    ConnectorError,
    EraseResult,
    Outcome,
    Plan,
    Record,
    SegmentInfo,
    Subject,
    TablePlan,
    VerifyResult,
)
from connectors.sql_schema import (
    FAKE_DOMAIN,
    PSEUDONYM_MIN,
    Graph,
    Link,
    SegmentRule,
    Settings,
    build_graph,
    fake_kind,
    fake_value,
    fake_width,
    parse_settings,
    pseudonym_value,
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # SQLite ignores foreign keys unless asked, and its lower() folds ASCII only.
    dbapi_connection.execute("PRAGMA foreign_keys=ON")
    dbapi_connection.create_function(
        "lower", 1, lambda v: v.lower() if isinstance(v, str) else v, deterministic=True
    )


#: A pooled connection idle for longer than this is pinged before use (see _ping_if_idle).
IDLE_PING_SECONDS = 10.0


def _mark_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info["lethe_idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Check a connection that sat idle in the pool before handing it out.

    Connections closed by the server or a firewall while idle are replaced here, as
    ``pool_pre_ping`` would, without a round trip for a connection used a moment ago: an
    erasure's plan, changes and re-scan follow each other within milliseconds.  A
    connection that breaks between two quick uses fails its statement, which is reported
    as a transient error and retried.
    """
    idle_since = record.info.get("lethe_idle_since")
    if idle_since is not None and time.monotonic() - idle_since < IDLE_PING_SECONDS:
        return
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
    except Exception as error:  # any driver's error: the pool replaces the connection
        raise exc.DisconnectionError(str(error)) from error


#: People read per query when listing a segment.
SEGMENT_CHUNK = 1000
#: Rows updated per executemany() when a column needs a value computed per row in Python.
ROW_BATCH = 500
#: Keys changed per statement where rows are changed by key (MySQL, MariaDB).
KEY_BATCH = 1000
#: Methods whose value is computed per row in Python (the rest are SQL expressions).
ROW_METHODS = ("fake", "pseudonym")
#: The temporary table holding the people of a batch verb: their number and address.
BATCH_TABLE = "lethe_batch"
#: The temporary table holding the keys of the rows a batch changes (MySQL, MariaDB).
KEYS_TABLE = "lethe_keys"
#: Scopes in which a statement matches the subject: one person (``:lethe_email``), each
#: person of the batch table (correlated, for counts per person), anyone in it.
ONE, EACH, ANY = "one", "each", "any"
EMAIL, AFTER, KEYS = "lethe_email", "lethe_after", "lethe_keys"
_EMAIL = sa.bindparam(EMAIL, type_=sa.String())
_AFTER = sa.bindparam(AFTER)
_KEYS = sa.bindparam(KEYS, expanding=True)
_BATCH = sa.Table(
    BATCH_TABLE,
    sa.MetaData(),
    sa.Column("n", sa.Integer, primary_key=True),
    sa.Column("email", sa.String, nullable=False),
)


class _Overlap(Exception):
    """Rows of a batch belong to more than one of its people: erase them one by one."""


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


class SqlConnector(Connector):
    """Find, export, erase and verify a person in a relational database."""

    name = "sql"
    version = "1"
    batch_erase = True

    def __init__(self, system: str, settings: Mapping[str, Any]):
        super().__init__(system, settings)
        self.config: Settings = parse_settings(system, settings)
        self._pseudonym_key: bytes | None = None
        if self.config.pseudonym_key_env is not None:
            key = os.environ.get(self.config.pseudonym_key_env, "")
            if (
                any(
                    m == "pseudonym"
                    for r in self.config.tables.values()
                    for m in r.columns.values()
                )
                and len(key) < 16
            ):
                raise ConfigError(
                    system,
                    "pseudonym_key_env",
                    f"the environment variable {self.config.pseudonym_key_env} must hold the "
                    "pseudonym key (at least 16 characters); set it where Lethe runs",
                )
            self._pseudonym_key = key.encode("utf-8")
        self._engine: sa.Engine | None = None
        self._schema: tuple[sa.MetaData, Graph] | None = None
        #: Statements built once and reused with new bound values (see _cached).
        self._statements: dict[tuple, Any] = {}
        self._collation: str | None = None

    # -- connection and schema ------------------------------------------------------------

    @property
    def engine(self) -> sa.Engine:
        """Return the engine, created on first use."""
        if self._engine is None:
            try:
                # hide_parameters: the subject's address is a bound value; it must not
                # reach a DEBUG log or an error message stored on the run.
                self._engine = sa.create_engine(self.config.url, hide_parameters=True)
            except (exc.ArgumentError, ImportError) as error:
                raise ConfigError(
                    self.system, "url", f"not a usable database URL: {error}"
                ) from None
            event.listen(self._engine, "checkout", _ping_if_idle)
            event.listen(self._engine, "checkin", _mark_checkin)
            if self._engine.dialect.name == "sqlite":
                event.listen(self._engine, "connect", _sqlite_pragmas)
        return self._engine

    def _failure(self, error: exc.SQLAlchemyError, doing: str) -> ConnectorError:
        transient = isinstance(error, exc.OperationalError | exc.InterfaceError | exc.TimeoutError)
        detail = str(getattr(error, "orig", None) or error).splitlines()[0][:300]
        return ConnectorError(f"{self.system}: {doing} failed: {detail}", transient=transient)

    def schema(self) -> tuple[sa.MetaData, Graph]:
        """Reflect the database once and check the configuration against it."""
        if self._schema is None:
            metadata = sa.MetaData()
            try:
                metadata.reflect(self.engine)
            except exc.SQLAlchemyError as error:
                raise self._failure(error, "reading the schema") from None
            self._schema = metadata, self._validate(metadata)
        return self._schema

    def _validate(self, metadata: sa.MetaData) -> Graph:
        config, system = self.config, self.system
        if config.subject_table not in metadata.tables:
            raise ConfigError(system, "subject.table", f"no table {config.subject_table!r}")
        subject = metadata.tables[config.subject_table]
        for column in config.subject_columns:
            if column not in subject.c:
                raise ConfigError(system, "subject.columns", f"{subject.name} has no {column!r}")
        graph = build_graph(metadata, subject.name)
        rule = config.tables.get(subject.name)
        if rule and rule.action == Action.ANONYMISE:
            kept = [c for c in config.subject_columns if c not in rule.columns]
            if kept:
                raise ConfigError(
                    system,
                    f"tables.{subject.name}.columns",
                    f"anonymising {subject.name} must replace {', '.join(kept)}, "
                    "or the person stays identifiable",
                )
        for name, rule in config.tables.items():
            if name not in metadata.tables:
                raise ConfigError(system, f"tables.{name}", "no such table in the database")
            if name not in graph.order:
                raise ConfigError(
                    system, f"tables.{name}", f"not linked to {subject.name} by any foreign key"
                )
            self._validate_columns(metadata.tables[name], rule.columns)
        if (marketing := config.marketing) is not None:
            if marketing.table not in graph.order:
                raise ConfigError(
                    system,
                    "marketing.table",
                    f"no table {marketing.table!r} linked to {subject.name} by a foreign key",
                )
            table = metadata.tables[marketing.table]
            for column in marketing.values:
                if column not in table.c:
                    raise ConfigError(
                        system, f"marketing.set.{column}", f"{table.name} has no such column"
                    )
        for parent, links in _by_parent(graph).items():
            if config.tables.get(parent) and config.tables[parent].action == Action.DELETE:
                for link in links:
                    kept = config.tables.get(link.child)
                    if kept and kept.action != Action.DELETE and not link.nullable:
                        raise ConfigError(
                            system,
                            f"tables.{parent}.action",
                            f"{parent} cannot be deleted while {link.child} keeps rows that "
                            f"must point at it ({link.describe()}, NOT NULL); anonymise "
                            f"{parent} instead",
                        )
        for table, links in graph.self_links.items():
            rule = config.tables.get(table)
            if rule and rule.action == Action.DELETE and not all(x.nullable for x in links):
                raise ConfigError(
                    system,
                    f"tables.{table}.action",
                    f"{table} refers to itself through a NOT NULL column; anonymise it instead",
                )
        for segment in config.segments.values():
            self._validate_segment(subject, segment)
        return graph

    def _validate_segment(self, subject: sa.Table, segment: SegmentRule) -> None:
        key = f"segments.{segment.name}"
        if segment.table != subject.name:
            # The person is known by the subject table's address; a segment elsewhere
            # would list rows, not people.
            raise ConfigError(
                self.system, f"{key}.table", f"must be the subject table {subject.name!r}"
            )
        if segment.column not in subject.c:
            raise ConfigError(
                self.system, f"{key}.column", f"{subject.name} has no column {segment.column!r}"
            )
        if not isinstance(subject.c[segment.column].type, sa.Date | sa.DateTime):
            raise ConfigError(
                self.system,
                f"{key}.column",
                f"{subject.name}.{segment.column} is not a date or timestamp column",
            )
        if not list(subject.primary_key.columns):
            raise ConfigError(
                self.system, f"{key}.table", f"{subject.name} needs a primary key to be listed"
            )

    def _validate_columns(self, table: sa.Table, methods: Mapping[str, str]) -> None:
        fk_columns = {c.name for fk in table.foreign_key_constraints for c in fk.columns}
        pk = list(table.primary_key.columns)
        for name, method in methods.items():
            key = f"tables.{table.name}.columns.{name}"
            if name not in table.c:
                raise ConfigError(self.system, key, f"{table.name} has no column {name!r}")
            column = table.c[name]
            if column.primary_key or name in fk_columns:
                raise ConfigError(self.system, key, "keys and foreign keys cannot be anonymised")
            length = getattr(column.type, "length", None)
            unique = self._is_unique(table, name)
            if method == "null" and not column.nullable:
                raise ConfigError(
                    self.system, key, f"{name} is NOT NULL; use fixed:, placeholder or fake"
                )
            if method == "year" and not isinstance(column.type, sa.Date | sa.DateTime):
                raise ConfigError(
                    self.system,
                    key,
                    f"{table.name}.{name} is not a date or timestamp column; year cannot apply",
                )
            if method.split(":")[0] in ROW_METHODS:
                self._validate_row_method(table, name, method, unique, length, pk)
            if method.startswith("fixed:"):
                value = method.removeprefix("fixed:")
                if length is not None and len(value) > length:
                    raise ConfigError(
                        self.system, key, f"{value!r} is longer than the column ({length})"
                    )
                if unique:
                    raise ConfigError(
                        self.system,
                        key,
                        f"{name} is unique; a fixed value would collide, use placeholder",
                    )
            if method == "placeholder":
                if len(pk) != 1:
                    raise ConfigError(
                        self.system, key, "placeholder needs a one-column primary key"
                    )
                widest = self._placeholder_width(table, name, pk[0])
                if length is not None and widest > length:
                    raise ConfigError(
                        self.system,
                        key,
                        f"a placeholder needs {widest} characters; {name} holds {length}",
                    )

    def _validate_row_method(
        self,
        table: sa.Table,
        name: str,
        method: str,
        unique: bool,
        length: int | None,
        pk: list[sa.Column],
    ) -> None:
        key = f"tables.{table.name}.columns.{name}"
        column = table.c[name]
        if not isinstance(column.type, sa.String):
            raise ConfigError(
                self.system, key, f"{table.name}.{name} is not a text column; {method} cannot apply"
            )
        if len(pk) != 1:
            raise ConfigError(self.system, key, f"{method} needs a one-column primary key")
        if method == "pseudonym":
            if length is not None and length < PSEUDONYM_MIN:
                raise ConfigError(
                    self.system,
                    key,
                    f"{table.name}.{name} holds {length} characters; a pseudonym needs at "
                    f"least {PSEUDONYM_MIN}",
                )
            return
        needed = fake_width(fake_kind(name, method))
        if unique:  # a "-KEY" suffix keeps the values of a unique column distinct
            needed += 1 + self._longest_key(pk[0])
        if length is not None and needed > length:
            raise ConfigError(
                self.system,
                key,
                f"{table.name}.{name} holds {length} characters; a fake "
                f"{fake_kind(name, method)} needs {needed}",
            )

    def _longest_key(self, pk: sa.Column) -> int:
        # The length of the longest key in the table today, with one character of headroom
        # so that the table may grow before the next check.
        with self.engine.connect() as conn:
            longest = conn.execute(
                sa.select(sa.func.max(sa.func.length(sa.cast(pk, sa.String))))
            ).scalar_one()
        return (longest or 1) + 1

    def _placeholder_width(self, table: sa.Table, column: str, pk: sa.Column) -> int:
        prefix, suffix = self._placeholder_parts(column)
        return len(prefix) + self._longest_key(pk) + len(suffix)

    @staticmethod
    def _placeholder_parts(column: str) -> tuple[str, str]:
        return ("erased-", "@invalid.example") if "mail" in column.lower() else ("erased-", "")

    # -- which rows belong to the subject -------------------------------------------------
    #
    # Every statement is built once per connector and kept (see _cached): only the bound
    # values change from one person to the next.  A statement matches the subject in one
    # of three scopes: ONE person, bound as :lethe_email; EACH person of the batch table,
    # correlated with its row (counts per person); ANY person of the batch table (the
    # set-based changes of erase_many).

    def _cached(self, key: tuple, build: Callable[[], Any]) -> Any:
        """Return the statement kept under ``key``, building it on first use."""
        statement = self._statements.get(key)
        if statement is None:
            statement = self._statements[key] = build()
        return statement

    def _comparable(self, expression: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        if self.engine.dialect.name == "mysql":
            # MySQL's and MariaDB's default collations ignore accents and case ('é' = 'E'):
            # another person's address would match. Compare code points instead.
            return sa.cast(expression, mysql.CHAR(charset="utf8mb4")).collate("utf8mb4_bin")
        return expression

    def _match(self, table: sa.Table, scope: str) -> sa.ColumnElement[bool]:
        if scope == ANY:
            return self._match_any(table)
        raw = _EMAIL if scope == ONE else _BATCH.c.email
        value = self._comparable(raw)
        clauses = []
        for name in self.config.subject_columns:
            column = self._comparable(table.c[name])
            if self.config.match == "case-insensitive":
                # The database folds both sides: Python's lower() differs on some letters
                # ('İ'), and a mismatch would find no one and report the person erased.
                clauses.append(sa.func.lower(column) == sa.func.lower(value))
            elif column is table.c[name]:
                clauses.append(column == value)
            else:
                # Equal code points are equal under any collation too, so the plain
                # comparison (which an index answers) narrows first; the exact one decides.
                clauses.append(sa.and_(table.c[name] == raw, column == value))
        return sa.or_(*clauses)

    def _match_any(self, table: sa.Table) -> sa.ColumnElement[bool]:
        """Return the condition "this row matches someone in the batch table"."""
        email = _BATCH.c.email
        clauses = []
        for name in self.config.subject_columns:
            column = self._comparable(table.c[name])
            if self.config.match == "case-insensitive":
                folded = sa.select(sa.func.lower(self._comparable(email)))
                clauses.append(sa.func.lower(column).in_(folded))
            elif column is table.c[name]:
                clauses.append(column.in_(sa.select(email)))
            else:
                # Driven from the batch table through the index on the column; the exact
                # comparison then decides, for the same person.
                exact = sa.select(email).where(self._comparable(email) == column)
                clauses.append(table.c[name].in_(exact.correlate(table)))
        return sa.or_(*clauses)

    def _related(self, name: str, scope: str, derived: bool = False) -> sa.ColumnElement[bool]:
        """Return the condition selecting the rows of ``name`` that belong to the subject.

        ``derived`` wraps each parent's keys in a derived table, as UPDATE and DELETE need
        on MySQL; counts and reads go without (MariaDB refuses a derived table that refers
        to the outer query, as the EACH scope does).
        """
        metadata, graph = self.schema()
        table = metadata.tables[name]
        if name == self.config.subject_table:
            return self._match(table, scope)
        conditions = [
            self._via(table, metadata.tables[link.parent], link, scope, derived)
            for link in graph.links[name]
        ]
        return sa.or_(*conditions)

    def _via(
        self, child: sa.Table, parent: sa.Table, link: Link, scope: str, derived: bool
    ) -> sa.ColumnElement[bool]:
        keys = sa.select(*[parent.c[c] for c in link.parent_columns]).where(
            self._related(parent.name, scope, derived)
        )
        if scope == EACH:  # the person is the row of the outermost query, levels above
            keys = keys.correlate(_BATCH)
        if derived:
            # MySQL refuses a subquery on the very table being updated or deleted from
            # unless it is materialised this way.
            keys = sa.select(*keys.subquery().c)
        columns = [child.c[c] for c in link.child_columns]
        target = columns[0] if len(columns) == 1 else sa.tuple_(*columns)
        return target.in_(keys)

    def _rows(self, table: sa.Table, scope: str) -> sa.Select:
        pk = list(table.primary_key.columns) or list(table.c)
        inner = sa.select(*pk).where(self._related(table.name, scope, derived=True)).subquery()
        return sa.select(*inner.c)

    def _in_rows(self, table: sa.Table, scope: str) -> sa.ColumnElement[bool]:
        """Return the condition "this row is one of the subject's", by primary key."""
        pk = list(table.primary_key.columns) or list(table.c)
        target = pk[0] if len(pk) == 1 else sa.tuple_(*pk)
        return target.in_(self._rows(table, scope))

    def _changed_rows(self, table: sa.Table, scope: str) -> sa.ColumnElement[bool]:
        """Return the condition of an UPDATE or DELETE of the subject's rows of ``table``.

        MySQL refuses a subquery on the table being changed unless it is materialised,
        so there the rows are named by key; elsewhere the condition is used as it is.
        """
        if self.engine.dialect.name == "mysql":
            return self._in_rows(table, scope)
        return self._related(table.name, scope)

    def _counts(self, scope: str, names: tuple[str, ...]) -> sa.Select:
        """Return one SELECT counting the subject's rows in each of ``names``.

        In scope ONE it returns one row; in scope EACH one row per person of the batch
        table, its number first, in the batch's order.
        """

        def build() -> sa.Select:
            metadata, _graph = self.schema()
            counts = [
                sa.select(sa.func.count())
                .select_from(metadata.tables[name])
                .where(self._related(name, scope))
                .correlate(_BATCH)
                .scalar_subquery()
                .label(f"c{index}")
                for index, name in enumerate(names)
            ]
            if scope == EACH:
                return sa.select(_BATCH.c.n, *counts).order_by(_BATCH.c.n)
            return sa.select(*counts)

        return self._cached(("counts", scope, names), build)

    def _count_one(
        self, conn: sa.Connection, subject: Subject, names: tuple[str, ...]
    ) -> dict[str, int]:
        """Return the subject's rows in each table of ``names``."""
        row = conn.execute(self._counts(ONE, names), {EMAIL: subject.email}).one()
        return dict(zip(names, row, strict=True))

    def _count_each(self, conn: sa.Connection, names: tuple[str, ...]) -> list[dict[str, int]]:
        """Return the rows in each table of ``names`` of each person of the batch table."""
        mariadb = getattr(conn.dialect, "is_mariadb", False)
        if mariadb:
            # MariaDB's subquery cache keys a correlated subquery on the outer value compared
            # under its collation: 'é' would be given the rows counted for 'e' just before.
            conn.exec_driver_sql("SET SESSION optimizer_switch = 'subquery_cache=off'")
        try:
            rows = list(conn.execute(self._counts(EACH, names)))
        finally:
            if mariadb:
                conn.exec_driver_sql("SET SESSION optimizer_switch = 'subquery_cache=on'")
        return [dict(zip(names, row[1:], strict=True)) for row in rows]

    def _verified_tables(self) -> tuple[str, ...]:
        _metadata, graph = self.schema()
        return tuple(
            name
            for name in graph.order
            if (rule := self.config.tables.get(name)) is None or rule.action != Action.RETAIN
        )

    # -- the batch table: the people of plan_many, erase_many and verify_many --------------

    def _load_batch(self, conn: sa.Connection, subjects: Sequence[Subject]) -> None:
        """Create the temporary batch table on ``conn`` and fill it, one executemany()."""
        dialect = conn.dialect.name
        width = max(1, *(len(s.email) for s in subjects))
        if dialect == "postgresql":
            conn.exec_driver_sql(
                f"CREATE TEMPORARY TABLE {BATCH_TABLE} (n integer PRIMARY KEY,"
                " email text NOT NULL) ON COMMIT DROP"
            )
            conn.exec_driver_sql(f"CREATE INDEX ON {BATCH_TABLE} (email)")
        elif dialect == "mysql":
            conn.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {BATCH_TABLE}")
            conn.exec_driver_sql(
                f"CREATE TEMPORARY TABLE {BATCH_TABLE} (n integer NOT NULL PRIMARY KEY,"
                f" email varchar({width}) CHARACTER SET utf8mb4 COLLATE"
                f" {self._batch_collation(conn)} NOT NULL, KEY (email({min(width, 191)})))"
            )
        else:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{BATCH_TABLE}")
            conn.exec_driver_sql(
                f"CREATE TEMPORARY TABLE {BATCH_TABLE} (n integer PRIMARY KEY, email text NOT NULL)"
            )
            conn.exec_driver_sql(f"CREATE INDEX temp.ix_{BATCH_TABLE} ON {BATCH_TABLE} (email)")
        conn.execute(
            sa.insert(_BATCH), [{"n": n, "email": s.email} for n, s in enumerate(subjects)]
        )
        if dialect == "postgresql":
            conn.exec_driver_sql(f"ANALYZE {BATCH_TABLE}")

    @staticmethod
    def _drop_batch(conn: sa.Connection) -> None:
        """Drop the batch table (PostgreSQL drops it at the end of the transaction)."""
        if conn.dialect.name == "mysql":
            conn.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {BATCH_TABLE}")
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{BATCH_TABLE}")

    def _batch_collation(self, conn: sa.Connection) -> str:
        """Return the collation of the subject's address column when it is utf8mb4.

        Comparing two columns of different collations fails on MySQL and MariaDB, and a
        converted column loses its index; a column in another character set is compared
        after conversion to utf8mb4.
        """
        if self._collation is None:
            row = conn.execute(
                sa.text(
                    "SELECT character_set_name, collation_name FROM information_schema.columns"
                    " WHERE table_schema = DATABASE() AND table_name = :t AND column_name = :c"
                ),
                {"t": self.config.subject_table, "c": self.config.subject_columns[0]},
            ).first()
            utf8 = row is not None and row[0] == "utf8mb4" and row[1]
            self._collation = row[1] if utf8 else "utf8mb4_general_ci"
        return self._collation

    # -- verbs ------------------------------------------------------------------------------

    def check(self) -> CheckResult:
        """Return whether the database answers and the configuration fits its schema."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except exc.SQLAlchemyError as error:
            return CheckResult(False, str(self._failure(error, "connecting")))
        metadata, graph = self.schema()
        missing = [t for t in graph.order if t not in self.config.tables]
        note = f"; not configured: {', '.join(missing)}" if missing else ""
        return CheckResult(True, f"reachable; {len(self.config.tables)} tables configured{note}")

    def plan(self, subject: Subject) -> Plan:
        """Count what belongs to the subject in each table and say what erasure will do."""
        _metadata, graph = self.schema()
        names = tuple(graph.order)
        try:
            with self.engine.connect() as conn:
                counts = self._count_one(conn, subject, names)
        except exc.SQLAlchemyError as error:
            raise self._failure(error, "planning") from None
        return self._plan_from(counts)

    def plan_many(self, subjects: Sequence[Subject]) -> list[Plan]:
        """Return :meth:`plan` for each subject, counted in one statement for the batch."""
        _metadata, graph = self.schema()
        counts = self._count_many(subjects, tuple(graph.order), "planning")
        return [self._plan_from(person) for person in counts]

    def _count_many(
        self, subjects: Sequence[Subject], names: tuple[str, ...], doing: str
    ) -> list[dict[str, int]]:
        """Return, per subject in order, the rows of each table of ``names``."""
        if not subjects:
            return []
        try:
            with self.engine.begin() as conn:
                self._load_batch(conn, subjects)
                counts = self._count_each(conn, names)
                self._drop_batch(conn)
        except exc.SQLAlchemyError as error:
            raise self._failure(error, doing) from None
        return counts

    def _plan_from(self, counts: Mapping[str, int]) -> Plan:
        """Return the plan for a person whose rows per table are ``counts``."""
        _metadata, graph = self.schema()
        plan = Plan(system=self.system, connector=self.name)
        for name in reversed(graph.order):  # children first: the order of erasure
            count = counts[name]
            rule = self.config.tables.get(name)
            if rule is None:
                if count:
                    plan.warnings.append(
                        f"{name} holds {count} rows linked to the person but has no "
                        f"action in systems.toml; erasure of {self.system} is blocked"
                    )
                continue
            via = " | ".join(link.describe() for link in graph.links.get(name, [])) or (
                f"{name}.{'/'.join(self.config.subject_columns)} = the subject's email"
            )
            plan.steps.append(
                TablePlan(
                    table=name,
                    action=rule.action,
                    rows=count,
                    via=via,
                    columns=dict(rule.columns),
                    ground=rule.ground,
                    note=rule.note,
                )
            )
        return plan

    def export(self, subject: Subject) -> Iterator[Record]:
        """Yield every row linked to the subject, table by table, streamed."""
        metadata, graph = self.schema()
        try:
            with self.engine.connect() as conn:
                for name in graph.order:
                    if name not in self.config.tables:
                        continue
                    table = metadata.tables[name]
                    query = self._cached(
                        ("export", name),
                        lambda t=table: sa.select(t).where(self._related(t.name, ONE)),
                    )
                    result = conn.execution_options(stream_results=True, yield_per=500).execute(
                        query, {EMAIL: subject.email}
                    )
                    for row in result.mappings():
                        yield Record(name, {k: _json_value(v) for k, v in row.items()})
        except exc.SQLAlchemyError as error:
            raise self._failure(error, "exporting") from None

    def erase(self, subject: Subject, plan: Plan) -> EraseResult:
        """Carry out ``plan`` in one transaction: all of it, or nothing."""
        _check_unblocked(self.system, [plan])
        try:
            with self.engine.begin() as conn:
                affected = self._erase_one(conn, subject, _steps(plan))
        except exc.SQLAlchemyError as error:
            raise self._failure(error, "erasing") from None
        return EraseResult(plan.erase_outcome(), affected)

    def _erase_one(
        self, conn: sa.Connection, subject: Subject, steps: Mapping[str, TablePlan]
    ) -> dict[str, int]:
        """Erase one person along ``steps`` on ``conn``, in the caller's transaction."""
        _metadata, graph = self.schema()
        params = {EMAIL: subject.email}
        names = tuple(graph.order)
        if any(name not in steps for name in names):
            self._check_planned(self._count_one(conn, subject, names), steps)
        return self._change(conn, steps, ONE, params)

    def erase_many(self, work: Sequence[tuple[Subject, Plan]]) -> list[EraseResult]:
        """Erase a batch of people in one transaction, one set-based statement per table.

        Each person's rows per table are counted first (one statement); the changes then
        cover everyone at once.  When the batch's rows overlap (a row belongs to two of the
        people) or the plans differ, the batch is erased again person after person in one
        transaction, so that every result is the one :meth:`erase` would have returned.
        """
        if not work:
            return []
        _check_unblocked(self.system, [plan for _subject, plan in work])
        steps = [_steps(plan) for _subject, plan in work]
        shape = [{n: (s.action, sorted(s.columns.items())) for n, s in x.items()} for x in steps]
        affected: list[dict[str, int]] | None = None
        try:
            if all(x == shape[0] for x in shape):
                try:
                    with self.engine.begin() as conn:
                        affected = self._erase_batch(conn, [s for s, _p in work], steps)
                except _Overlap:
                    affected = None
            if affected is None:
                with self.engine.begin() as conn:
                    affected = [
                        self._erase_one(conn, subject, rules)
                        for (subject, _plan), rules in zip(work, steps, strict=True)
                    ]
        except exc.SQLAlchemyError as error:
            raise self._failure(error, "erasing") from None
        return [
            EraseResult(plan.erase_outcome(), rows)
            for (_subject, plan), rows in zip(work, affected, strict=True)
        ]

    def _erase_batch(
        self, conn: sa.Connection, subjects: list[Subject], steps: list[dict[str, TablePlan]]
    ) -> list[dict[str, int]]:
        """Erase everyone in ``subjects`` set-based; raise _Overlap if their rows overlap."""
        _metadata, graph = self.schema()
        names = tuple(graph.order)
        self._load_batch(conn, subjects)
        counts = self._count_each(conn, names)
        for person, rules in zip(counts, steps, strict=True):
            self._check_planned(person, rules)
        done = self._change(conn, steps[0], ANY, {})
        if any(sum(person[name] for person in counts) != rows for name, rows in done.items()):
            raise _Overlap
        self._drop_batch(conn)
        return [{name: person[name] for name in done} for person in counts]

    def _check_planned(self, counts: Mapping[str, int], steps: Mapping[str, TablePlan]) -> None:
        """Refuse to erase when a table the plan leaves out holds rows of the person."""
        _metadata, graph = self.schema()
        for name in reversed(graph.order):
            if name not in steps and counts[name]:
                raise ConnectorError(
                    f"{self.system}: {name} holds rows of the person but is not in "
                    "the approved plan; review the plan again"
                )

    def _change(
        self, conn: sa.Connection, steps: Mapping[str, TablePlan], scope: str, params: dict
    ) -> dict[str, int]:
        """Apply each step, children first; return the rows changed per table."""
        metadata, graph = self.schema()
        affected: dict[str, int] = {}
        for name in reversed(graph.order):
            step = steps.get(name)
            if step is not None and step.action != Action.RETAIN:
                affected[name] = self._apply(conn, metadata.tables[name], step, scope, params)
        return affected

    def _apply(
        self, conn: sa.Connection, table: sa.Table, step: TablePlan, scope: str, params: dict
    ) -> int:
        _metadata, graph = self.schema()
        name = table.name
        if step.action == Action.DELETE:
            for link in graph.self_links.get(name, []):
                # Other people's rows that point at ours lose the pointer, not their row.
                column = table.c[link.child_columns[0]]
                detach = self._cached(
                    ("detach", scope, name, column.name),
                    lambda c=column: (
                        sa.update(table).where(c.in_(self._rows(table, scope))).values({c: None})
                    ),
                )
                conn.execute(detach, params)
            if self._by_keys(table):
                return self._change_by_keys(conn, table, scope, params, ("delete",), sa.delete)
            delete = self._cached(
                ("delete", scope, name),
                lambda: sa.delete(table).where(self._changed_rows(table, scope)),
            )
            return conn.execute(delete, params).rowcount
        columns = tuple(sorted(step.columns.items()))
        per_row = {n: m for n, m in columns if m.split(":")[0] in ROW_METHODS}
        if per_row:
            return self._apply_per_row(conn, table, scope, params, columns, per_row)
        if self._by_keys(table):
            return self._change_by_keys(
                conn, table, scope, params, ("update", columns), lambda t: self._update(t, columns)
            )
        update = self._cached(
            ("update", scope, name, columns),
            lambda: self._update(table, columns).where(self._changed_rows(table, scope)),
        )
        return conn.execute(update, params).rowcount

    def _update(self, table: sa.Table, columns: tuple[tuple[str, str], ...]) -> sa.Update:
        """Return the UPDATE of ``table`` setting the columns computed in SQL."""
        return sa.update(table).values(
            {
                name: self._anonymised(table, name, method)
                for name, method in columns
                if method.split(":")[0] not in ROW_METHODS
            }
        )

    def _by_keys(self, table: sa.Table) -> bool:
        """Return whether to change ``table`` by primary key, read first.

        MySQL and MariaDB (up to 11.0) scan the whole table for ``UPDATE``/``DELETE ...
        WHERE key IN (subquery)``, however selective the subquery: a person in a table of
        millions then takes a minute.  They do answer the same condition in a ``SELECT``
        from the indexes, so there the keys are read first, in batches, and changed by key.
        """
        return self.engine.dialect.name == "mysql" and len(table.primary_key.columns) == 1

    def _change_by_keys(
        self,
        conn: sa.Connection,
        table: sa.Table,
        scope: str,
        params: dict,
        kind: tuple,
        build: Callable[[sa.Table], Any],
    ) -> int:
        """Run ``build(table)`` (an UPDATE or DELETE) on the subject's rows, by key,
        KEY_BATCH keys at a time (keyset pagination, in the erasure's transaction)."""
        pk = next(iter(table.primary_key.columns))
        name = table.name
        if scope == ANY:
            return self._change_by_join(conn, table, kind, build)
        first = self._cached(
            ("keys", scope, name),
            lambda: sa.select(pk).where(self._related(name, scope)).order_by(pk).limit(KEY_BATCH),
        )
        after = self._cached(("keys-after", scope, name), lambda: first.where(pk > _AFTER))
        change = self._cached(("by-keys", name, *kind), lambda: build(table).where(pk.in_(_KEYS)))
        done, page, extra = 0, first, {}
        while keys := conn.execute(page, {**params, **extra}).scalars().all():
            done += conn.execute(change, {KEYS: keys}).rowcount
            if len(keys) < KEY_BATCH:
                break
            page, extra = after, {AFTER: keys[-1]}
        return done

    def _change_by_join(
        self, conn: sa.Connection, table: sa.Table, kind: tuple, build: Callable[[sa.Table], Any]
    ) -> int:
        """Run ``build(table)`` on the batch's rows as a multi-table statement joined by key.

        The keys are read into a temporary table first (INSERT ... SELECT, answered from
        the indexes), then one DELETE or UPDATE joins it on the primary key, as a MariaDB
        DBA writes it.
        """
        pk = next(iter(table.primary_key.columns))
        name = table.name
        keys = self._cached(
            ("keys-table", name),
            lambda: sa.Table(KEYS_TABLE, sa.MetaData(), sa.Column("k", pk.type, primary_key=True)),
        )
        fill = self._cached(
            ("keys-fill", name),
            lambda: sa.insert(keys).from_select(
                ["k"], sa.select(pk).where(self._related(name, ANY))
            ),
        )
        change = self._cached(("by-join", name, *kind), lambda: build(table).where(pk == keys.c.k))
        shape = self._cached(
            ("keys-shape", name),
            lambda: str(sa.select(pk.label("k")).where(sa.false()).compile(conn)),
        )
        conn.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {KEYS_TABLE}")
        # Created from the key column itself: same type, character set and collation.
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {KEYS_TABLE} (PRIMARY KEY (k)) " + shape)
        conn.execute(fill)
        done = conn.execute(change).rowcount
        conn.exec_driver_sql(f"DROP TEMPORARY TABLE {KEYS_TABLE}")
        return done

    def _apply_per_row(
        self,
        conn: sa.Connection,
        table: sa.Table,
        scope: str,
        params: dict,
        columns: tuple[tuple[str, str], ...],
        per_row: dict[str, str],
    ) -> int:
        """Update the subject's rows in batches of ROW_BATCH, one executemany() each.

        The rows are read by primary key (keyset pagination, never OFFSET) in the erasure's
        own transaction; each batch is one UPDATE ... WHERE key = :key run with a list of
        parameter sets, in which the SQL-computed columns are set as in the set-based path.
        """
        pk = next(iter(table.primary_key.columns))
        name = table.name
        unique = {column for column in per_row if self._is_unique(table, column)}
        first = self._cached(
            ("rows", scope, name, columns),
            lambda: (
                sa.select(pk, *[table.c[c] for c in per_row])
                .where(self._related(name, scope))
                .order_by(pk)
                .limit(ROW_BATCH)
            ),
        )
        after = self._cached(("rows-after", scope, name, columns), lambda: first.where(pk > _AFTER))
        statement = self._cached(
            ("by-row", name, columns),
            lambda: (
                self._update(table, columns)
                .where(pk == sa.bindparam("lethe_key"))
                .values({c: sa.bindparam(f"lethe_{c}") for c in per_row})
            ),
        )
        done, page, extra = 0, first, {}
        while rows := conn.execute(page, {**params, **extra}).all():
            batch = []
            for row in rows:
                values = {"lethe_key": row[0]}
                for index, (column, method) in enumerate(per_row.items(), start=1):
                    values[f"lethe_{column}"] = self._row_value(
                        table, column, method, row[0], row[index], column in unique
                    )
                batch.append(values)
            conn.execute(statement, batch)
            done += len(batch)
            if len(rows) < ROW_BATCH:
                break
            page, extra = after, {AFTER: rows[-1][0]}
        return done

    def _row_value(
        self, table: sa.Table, name: str, method: str, key: Any, value: Any, unique: bool
    ) -> str | None:
        if value is None:  # nothing was known: nothing is invented
            return None
        if method == "pseudonym":
            assert self._pseudonym_key is not None  # checked when the connector was built
            return pseudonym_value(
                self._pseudonym_key, value, getattr(table.c[name].type, "length", None)
            )
        suffix = f"-{key}" if unique else ""
        return fake_value(fake_kind(name, method), f"{table.name}.{name}.{key}", suffix)

    @staticmethod
    def _is_unique(table: sa.Table, name: str) -> bool:
        return bool(
            table.c[name].unique
            or any(
                isinstance(c, sa.UniqueConstraint) and name in c.columns for c in table.constraints
            )
            or any(ix.unique and name in ix.columns for ix in table.indexes)
        )

    def _anonymised(self, table: sa.Table, column: str, method: str) -> Any:
        if method == "null":
            return None
        if method.startswith("fixed:"):
            return method.removeprefix("fixed:")
        if method == "year":
            return self._year_of(self.engine.dialect.name, table.c[column])
        prefix, suffix = self._placeholder_parts(column)
        pk = next(iter(table.primary_key.columns))
        expression = sa.literal(prefix, sa.String) + sa.cast(pk, sa.String)
        return expression + sa.literal(suffix, sa.String) if suffix else expression

    @staticmethod
    def _year_of(dialect: str, column: sa.Column) -> sa.ColumnElement[Any]:
        """Return, in the dialect's SQL, ``column`` truncated to 1 January of its year."""
        is_date = not isinstance(column.type, sa.DateTime)
        if dialect == "postgresql":
            if is_date:
                return sa.func.make_date(sa.cast(sa.extract("year", column), sa.Integer), 1, 1)
            return sa.func.date_trunc("year", column)
        if dialect in ("mysql", "mariadb"):
            return sa.func.makedate(sa.func.year(column), 1)
        if dialect == "sqlite":  # SQLAlchemy stores dates as ISO text
            rest = "-01-01" if is_date else "-01-01 00:00:00.000000"
            return sa.func.strftime("%Y", column, type_=sa.String) + sa.literal(rest, sa.String)
        raise ConnectorError(f"year is not supported on the {dialect} dialect")

    def stop_marketing(self, subject: Subject) -> EraseResult:
        """Set the configured columns (e.g. an opt-in flag) on the subject's rows, in one go."""
        metadata, _graph = self.schema()
        rule = self.config.marketing
        if rule is None:
            return EraseResult(
                Outcome.NOT_FOUND,
                message="systems.toml declares no marketing use here (no `marketing` setting)",
            )
        table = metadata.tables[rule.table]
        statement = self._cached(
            ("marketing",),
            lambda: sa.update(table).where(self._in_rows(table, ONE)).values(**dict(rule.values)),
        )
        try:
            with self.engine.begin() as conn:
                changed = conn.execute(statement, {EMAIL: subject.email}).rowcount
        except exc.SQLAlchemyError as error:
            raise self._failure(error, "stopping marketing") from None
        if not changed:
            return EraseResult(Outcome.NOT_FOUND, message="holds nothing about the person")
        return EraseResult(Outcome.COMPLETED, rows_affected={rule.table: changed})

    def verify(self, subject: Subject) -> VerifyResult:
        """Count, per table that should be cleared, the rows that still match the subject."""
        names = self._verified_tables()
        try:
            with self.engine.connect() as conn:
                remaining = self._count_one(conn, subject, names)
        except exc.SQLAlchemyError as error:
            raise self._failure(error, "verifying") from None
        return VerifyResult(remaining)

    def verify_many(self, subjects: Sequence[Subject]) -> list[VerifyResult]:
        """Return :meth:`verify` for each subject, counted in one statement for the batch."""
        counts = self._count_many(subjects, self._verified_tables(), "verifying")
        return [VerifyResult(person) for person in counts]

    # -- segments: groups of people staff can erase at once -------------------------------

    def segments(self) -> list[SegmentInfo]:
        """Return the segments ``systems.toml`` declares for this system."""
        return [SegmentInfo(s.name, s.label, s.parameter) for s in self.config.segments.values()]

    def list_segment(self, name: str, params: Mapping[str, Any]) -> Iterator[Subject]:
        """Yield the people whose segment column is before the date given, in key order.

        Rows are read in chunks by primary key, each chunk in its own short read, so that
        no connection stays open (nor locks a SQLite file) while the caller works on the
        people already listed, and no table is ever held in memory.
        """
        segment = self.config.segments.get(name)
        if segment is None:
            raise ConnectorError(f"{self.system}: no segment named {name!r} in systems.toml")
        before = params.get(segment.parameter)
        if not isinstance(before, dt.date) or isinstance(before, dt.datetime):
            raise ConnectorError(
                f"{self.system}: segment {name!r} needs a date as {segment.parameter!r}"
            )
        metadata, _graph = self.schema()
        table = metadata.tables[segment.table]
        column = table.c[segment.column]
        bound: dt.date = before
        if isinstance(column.type, sa.DateTime):
            bound = dt.datetime.combine(before, dt.time.min)
            if column.type.timezone:
                bound = bound.replace(tzinfo=dt.UTC)
        email = table.c[self.config.subject_columns[0]]
        keys = list(table.primary_key.columns)
        key = keys[0] if len(keys) == 1 else sa.tuple_(*keys)
        query = (
            sa.select(email, *keys)
            .where(column < bound, email.is_not(None), email != "", *self._not_erased(table))
            .order_by(*keys)
            .limit(SEGMENT_CHUNK)
        )
        page = query
        while True:
            try:
                with self.engine.connect() as conn:
                    rows = conn.execute(page).all()
            except exc.SQLAlchemyError as error:
                raise self._failure(error, "listing a segment") from None
            for row in rows:
                yield Subject(email=row[0])
            if len(rows) < SEGMENT_CHUNK:
                return
            last = rows[-1][1:]
            page = query.where(key > (last[0] if len(keys) == 1 else sa.tuple_(*last)))

    def _not_erased(self, table: sa.Table) -> list[sa.ColumnElement[bool]]:
        """Return conditions leaving out rows whose address erasure has already replaced."""
        rule = self.config.tables.get(table.name)
        if rule is None or rule.action != Action.ANONYMISE:
            return []
        conditions = []
        for name in self.config.subject_columns:
            method = rule.columns.get(name)
            if method == "placeholder":
                prefix, suffix = self._placeholder_parts(name)
                conditions.append(sa.not_(table.c[name].like(f"{prefix}%{suffix}")))
            elif method is not None and method.startswith("fixed:"):
                conditions.append(table.c[name] != method.removeprefix("fixed:"))
            elif method in ("fake", "fake:email") and fake_kind(name, method) == "email":
                conditions.append(sa.not_(table.c[name].like(f"%{FAKE_DOMAIN}")))
            elif method == "pseudonym":  # hex without "@": no longer anyone's address
                conditions.append(table.c[name].like("%@%"))
        return conditions

    def close(self) -> None:
        """Dispose of the engine's connections."""
        if self._engine is not None:
            self._engine.dispose()


def _by_parent(graph: Graph) -> dict[str, list[Link]]:
    result: dict[str, list[Link]] = {}
    for links in graph.links.values():
        for link in links:
            result.setdefault(link.parent, []).append(link)
    return result


def _steps(plan: Plan) -> dict[str, TablePlan]:
    return {step.table: step for step in plan.steps}


def _check_unblocked(system: str, plans: Sequence[Plan]) -> None:
    for plan in plans:
        if plan.warnings:
            raise ConnectorError(f"{system}: erasure blocked: " + "; ".join(plan.warnings))
