"""The SQL connector's view of a database: settings checked against the reflected schema.

Everything that can be known before touching a row is checked here, so that a wrong
configuration fails at ``check()`` and ``plan()`` time with the key to fix, never halfway
through an erasure.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from connectors.base import SEGMENT_PARAMETERS, Action, ConfigError

MATCHES = ("exact", "case-insensitive")
PLAIN_METHODS = ("null", "placeholder", "fake", "pseudonym", "year")
#: Kinds of realistic value ``fake`` writes; ``fake`` alone picks one from the column name.
FAKE_KINDS = ("name", "email", "phone", "city", "street", "text")
METHODS_HELP = (
    "method must be null, placeholder, fixed:TEXT, fake, fake:KIND "
    f"({', '.join(FAKE_KINDS)}), pseudonym or year"
)


@dataclass(frozen=True)
class TableRule:
    """What the configuration says to do with one table."""

    action: Action
    ground: str | None = None
    note: str = ""
    columns: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MarketingRule:
    """What "stop using my data for marketing" changes: columns of one linked table."""

    table: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class SegmentRule:
    """A group of people the connector can list: rows of a table whose date is before one given."""

    name: str
    label: str
    table: str
    column: str
    #: The kind of parameter staff give (``connectors.base.SEGMENT_PARAMETERS``).
    parameter: str


@dataclass(frozen=True)
class Settings:
    """The SQL connector's settings, validated for shape (not yet against a schema)."""

    url: str
    subject_table: str
    subject_columns: tuple[str, ...]
    match: str
    tables: Mapping[str, TableRule]
    #: None: the configuration declares that this system does no direct marketing.
    marketing: MarketingRule | None = None
    segments: Mapping[str, SegmentRule] = field(default_factory=dict)
    #: Name of the environment variable holding the key of ``pseudonym`` columns.
    pseudonym_key_env: str | None = None


def _text(system: str, data: Mapping[str, Any], key: str, path: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(system, path, "required, as non-empty text")
    return value


def parse_settings(system: str, settings: Mapping[str, Any]) -> Settings:
    """Return the settings of one system; raise ConfigError naming the wrong key."""
    url = _text(system, settings, "url", "url")
    subject = settings.get("subject")
    if not isinstance(subject, dict):
        raise ConfigError(system, "subject", "required: a [systems.NAME.subject] table")
    table = _text(system, subject, "table", "subject.table")
    columns = subject.get("columns")
    if not (isinstance(columns, list) and columns and all(isinstance(c, str) for c in columns)):
        raise ConfigError(system, "subject.columns", "required: a list of column names")
    match = subject.get("match", "exact")
    if match not in MATCHES:
        raise ConfigError(system, "subject.match", f"must be one of {', '.join(MATCHES)}")
    raw_tables = settings.get("tables")
    if not isinstance(raw_tables, dict) or not raw_tables:
        raise ConfigError(system, "tables", "required: one [systems.NAME.tables.TABLE] per table")
    tables = {name: _table_rule(system, name, rule) for name, rule in raw_tables.items()}
    unknown = set(settings) - {
        "url",
        "subject",
        "tables",
        "marketing",
        "segments",
        "pseudonym_key_env",
    }
    if unknown:
        raise ConfigError(system, sorted(unknown)[0], "unknown setting of the sql connector")
    key_env = settings.get("pseudonym_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not key_env):
        raise ConfigError(
            system, "pseudonym_key_env", "must be the name of an environment variable"
        )
    uses_pseudonym = any(
        method == "pseudonym" for rule in tables.values() for method in rule.columns.values()
    )
    if uses_pseudonym and key_env is None:
        raise ConfigError(
            system,
            "pseudonym_key_env",
            "required by the pseudonym method: the name of the environment variable "
            'holding the secret key, e.g. pseudonym_key_env = "CRM_PSEUDONYM_KEY"',
        )
    return Settings(
        url,
        table,
        tuple(columns),
        match,
        tables,
        _marketing(system, settings),
        _segments(system, settings.get("segments", {})),
        key_env,
    )


def _segments(system: str, raw: Any) -> dict[str, SegmentRule]:
    if not isinstance(raw, dict):
        raise ConfigError(system, "segments", "must be tables: [systems.NAME.segments.SEGMENT]")
    segments = {}
    for name, rule in raw.items():
        path = f"segments.{name}"
        if not isinstance(rule, dict):
            raise ConfigError(system, path, "must be a table with label, table, column, parameter")
        unknown = set(rule) - {"label", "table", "column", "parameter"}
        if unknown:
            raise ConfigError(system, f"{path}.{sorted(unknown)[0]}", "unknown setting")
        parameter = rule.get("parameter")
        if parameter not in SEGMENT_PARAMETERS:
            raise ConfigError(
                system,
                f"{path}.parameter",
                f"must be one of {', '.join(SEGMENT_PARAMETERS)} "
                "(before: rows whose column is before the date staff enter)",
            )
        segments[name] = SegmentRule(
            name,
            _text(system, rule, "label", f"{path}.label"),
            _text(system, rule, "table", f"{path}.table"),
            _text(system, rule, "column", f"{path}.column"),
            parameter,
        )
    return segments


def _marketing(system: str, settings: Mapping[str, Any]) -> MarketingRule | None:
    raw = settings.get("marketing")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(system, "marketing", "must be a table with `table` and `set`")
    table = _text(system, raw, "table", "marketing.table")
    values = raw.get("set")
    if not isinstance(values, dict) or not values:
        raise ConfigError(
            system, "marketing.set", "required: column = value, e.g. { marketing_opt_in = false }"
        )
    for column, value in values.items():
        if not isinstance(value, str | int | float | bool):
            raise ConfigError(
                system, f"marketing.set.{column}", "must be a text, a number or true/false"
            )
    unknown = set(raw) - {"table", "set"}
    if unknown:
        raise ConfigError(system, f"marketing.{sorted(unknown)[0]}", "unknown setting")
    return MarketingRule(table, dict(values))


def _table_rule(system: str, name: str, rule: Any) -> TableRule:
    path = f"tables.{name}"
    if not isinstance(rule, dict):
        raise ConfigError(system, path, "must be a table")
    try:
        action = Action(rule.get("action"))
    except ValueError:
        choices = ", ".join(a.value for a in Action)
        raise ConfigError(system, f"{path}.action", f"must be one of {choices}") from None
    ground = rule.get("ground")
    if action == Action.RETAIN and not ground:
        raise ConfigError(system, f"{path}.ground", "retain needs the legal ground, e.g. art17-3-b")
    columns = rule.get("columns", {})
    if not isinstance(columns, dict):
        raise ConfigError(system, f"{path}.columns", "must be a table of column = method")
    if action == Action.ANONYMISE and not columns:
        raise ConfigError(system, f"{path}.columns", "anonymise needs at least one column")
    if action != Action.ANONYMISE and columns:
        raise ConfigError(system, f"{path}.columns", f"{action} takes no columns")
    for column, method in columns.items():
        if not isinstance(method, str) or not (
            method in PLAIN_METHODS
            or method.startswith("fixed:")
            or (method.startswith("fake:") and method.removeprefix("fake:") in FAKE_KINDS)
        ):
            raise ConfigError(system, f"{path}.columns.{column}", METHODS_HELP)
    return TableRule(action, ground, str(rule.get("note", "")), dict(columns))


@dataclass(frozen=True)
class Link:
    """A foreign key by which ``child`` rows belong to rows of ``parent``."""

    child: str
    parent: str
    child_columns: tuple[str, ...]
    parent_columns: tuple[str, ...]
    nullable: bool

    def describe(self) -> str:
        """Return the link as ``child.col -> parent.col``."""
        return (
            f"{self.child}.{','.join(self.child_columns)} -> "
            f"{self.parent}.{','.join(self.parent_columns)}"
        )


@dataclass
class Graph:
    """The tables reachable from the subject's table through foreign keys, parents first."""

    order: list[str]
    links: dict[str, list[Link]]
    #: Self-references (``customers.referred_by``): rows of other people pointing at ours.
    self_links: dict[str, list[Link]]


def build_graph(metadata: sa.MetaData, root: str) -> Graph:
    """Follow foreign keys from ``root`` to every table whose rows hang off it."""
    incoming: dict[str, list[Link]] = {}
    self_links: dict[str, list[Link]] = {}
    for table in metadata.tables.values():
        # A set: sorted, so that plans (their ``via``) read the same in every process.
        for fk in sorted(table.foreign_key_constraints, key=lambda k: [c.name for c in k.columns]):
            parent = fk.referred_table.name
            link = Link(
                table.name,
                parent,
                tuple(c.name for c in fk.columns),
                tuple(e.column.name for e in fk.elements),
                all(c.nullable for c in fk.columns),
            )
            target = self_links if parent == table.name else incoming
            target.setdefault(parent, []).append(link)
    order, links = [root], {}
    for parent in order:  # breadth first; ``order`` grows as children are found
        for link in incoming.get(parent, []):
            links.setdefault(link.child, []).append(link)
            if link.child not in order:
                order.append(link.child)
    # A child found before one of its parents must still come after all of them.
    order = _parents_first(order, links)
    return Graph(order, links, self_links)


def _parents_first(tables: list[str], links: dict[str, list[Link]]) -> list[str]:
    placed: list[str] = []
    pending = list(tables)
    while pending:
        ready = [t for t in pending if all(link.parent in placed for link in links.get(t, []))]
        if not ready:  # a cycle between different tables: keep discovery order for the rest
            ready = pending[:1]
        for table in ready:
            placed.append(table)
            pending.remove(table)
    return placed


# -- replacement values: what fake and pseudonym write --------------------------------------

#: Fewest hex characters of a keyed pseudonym (64 bits): fewer would let values collide.
PSEUDONYM_MIN = 16
_GIVEN = ("Alex", "Sam", "Robin", "Kim", "Jo", "Charlie", "Morgan", "Taylor", "Jamie", "Lee")
_FAMILY = ("Smith", "Brown", "Jones", "Miller", "Davis", "Wilson", "Moore", "Clark", "Hall")
_CITIES = ("Springfield", "Riverton", "Lakeside", "Fairview", "Greenville", "Kingston")
_STREETS = ("High Street", "Station Road", "Church Lane", "Park Avenue", "Mill Road")
#: The domain of fake addresses: ``.invalid`` can never be anyone's real address.
FAKE_DOMAIN = "@example.invalid"


def fake_kind(column: str, method: str) -> str:
    """Return the kind of value ``fake`` writes into ``column`` (``fake:KIND`` or by name)."""
    if method.startswith("fake:"):
        return method.removeprefix("fake:")
    name = column.lower()
    for kind, hints in (
        ("email", ("mail",)),
        ("phone", ("phone", "tel", "mobile", "fax")),
        ("city", ("city", "town")),
        ("street", ("street", "address", "addr")),
        ("name", ("name", "nick")),
    ):
        if any(hint in name for hint in hints):
            return kind
    return "text"


def _pick(options: tuple[str, ...], digest: bytes, index: int) -> str:
    return options[digest[index] % len(options)]


def fake_value(kind: str, seed: str, suffix: str = "") -> str:
    """Return a realistic value of ``kind``, the same for the same ``seed`` (table, column, key).

    ``suffix`` (e.g. ``-17``, from the row's key) makes values of a unique column distinct.
    """
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    given, family = _pick(_GIVEN, digest, 0), _pick(_FAMILY, digest, 1)
    if kind == "name":
        return f"{given} {family}{suffix}"
    if kind == "email":
        return f"{given}.{family}{suffix}{FAKE_DOMAIN}".lower()
    if kind == "phone":  # 020 7946 0xxx is reserved by Ofcom for drama: never a real line
        return f"+44 20 7946 0{digest[2] % 10}{digest[3] % 10}{digest[4] % 10}{suffix}"
    if kind == "city":
        return _pick(_CITIES, digest, 2) + suffix
    if kind == "street":
        return f"{digest[3] % 99 + 1} {_pick(_STREETS, digest, 4)}{suffix}"
    return f"Removed on request{suffix}"


def fake_width(kind: str) -> int:
    """Return the length of the longest value ``fake_value`` writes for ``kind``, unsuffixed."""
    longest = {
        "name": max(map(len, _GIVEN)) + 1 + max(map(len, _FAMILY)),
        "email": max(map(len, _GIVEN)) + 1 + max(map(len, _FAMILY)) + len(FAKE_DOMAIN),
        "phone": len("+44 20 7946 0000"),
        "city": max(map(len, _CITIES)),
        "street": 3 + max(map(len, _STREETS)),
        "text": len("Removed on request"),
    }
    return longest[kind]


def pseudonym_value(key: bytes, value: Any, width: int | None) -> str | None:
    """Return the keyed pseudonym of ``value``: HMAC-SHA256 in hex, cut to ``width``."""
    if value is None:
        return None
    digest = hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[: min(width or len(digest), len(digest))]
