"""The contract every connector registered under ``lethe.connectors`` must keep.

Each registered connector is checked for shape (a Connector subclass whose ``name`` is its
entry-point name, with a version and every verb) and for behaviour, on a working instance
that holds one known person, built by its entry in :data:`FACTORIES`.  A connector without
an entry fails here: add a factory for it, or, for a connector packaged on its own,
register one under the entry-point group ``lethe.contract_cases`` (same name as the
connector; a function ``(tmp_path) -> object`` with ``connector``, ``subject``,
``snapshot`` and optionally ``can_find`` and ``cleanup``, as :class:`Case`).
"""

from __future__ import annotations

import copy
import inspect
import json
import threading
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import redis
import sqlalchemy as sa

from connectors.base import Connector, ConnectorError, Outcome, Subject
from core.demo import create_demo_crm, demo_systems_toml
from core.systems import COMMON_KEYS, ENTRY_POINT_GROUP
from tests.services import require_redis

REGISTERED = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
VERBS = (
    "check",
    "plan",
    "export",
    "erase",
    "verify",
    "stop_marketing",
    "segments",
    "list_segment",
    "close",
)
#: Verbs a connector may leave to the base class, whose default raises ConnectorError.
OPTIONAL = {
    "stop_marketing": lambda c, s: c.stop_marketing(s),
    "list_segment": lambda c, s: list(c.list_segment("no-such-segment", {})),
}
UNKNOWN = Subject(email="nobody.at.all@contract.invalid")


@dataclass
class Case:
    """A working connector, the one person it holds, and a way to read its whole state."""

    connector: Connector
    subject: Subject
    #: Return everything the system holds, comparable with ``==``.
    snapshot: Callable[[], Any]
    #: False for a system nobody can look into (kept by hand): it cannot say "not found",
    #: nor export; erasure asks a person to act (action_required).
    can_find: bool = True
    cleanup: Callable[[], None] = lambda: None


def _class(name: str) -> type:
    (entry,) = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    return entry.load()


# -- one factory per connector: a working instance with one known person ------------------


def _sql_dump(url: str) -> dict[str, list[tuple]]:
    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    try:
        metadata.reflect(engine)
        with engine.connect() as conn:
            return {
                name: [tuple(row) for row in conn.execute(sa.select(t).order_by(*t.primary_key))]
                for name, t in metadata.tables.items()
            }
    finally:
        engine.dispose()


def sql_case(tmp_path: Path) -> Case:
    """The demo CRM in SQLite, connected as ``make run`` connects it."""
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    create_demo_crm(url)
    table = tomllib.loads(demo_systems_toml(url))["systems"]["crm"]
    settings = {k: v for k, v in table.items() if k not in COMMON_KEYS}
    return Case(
        _class("sql")("crm", settings),
        Subject(email="alice@example.com"),
        lambda: _sql_dump(url),
    )


def redis_case(_tmp_path: Path) -> Case:
    """A profile, a session and a newsletter membership, under a key prefix of its own."""
    url = require_redis()
    p = f"lethe-contract:{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(url)
    client.hset(p + "profile:alice@example.com", mapping={"name": "Alice", "city": "London"})
    client.set(p + "session:alice@example.com", "token-1")
    client.set(p + "session:bob@example.com", "token-2")
    client.sadd(p + "newsletter", "alice@example.com", "bob@example.com")
    settings = {
        "url": url,
        "keys": [
            {"template": p + "profile:{email_lower}", "action": "delete"},
            {"template": p + "session:{email_lower}", "action": "delete"},
        ],
        "members": [
            {"key": p + "newsletter", "type": "set", "value": "{email_lower}", "action": "remove"}
        ],
    }

    def snapshot() -> dict[str, Any]:
        state: dict[str, Any] = {}
        for key in sorted(client.scan_iter(match=p + "*", count=1000)):
            kind = client.type(key).decode()
            read = {
                "string": client.get,
                "hash": client.hgetall,
                "set": lambda k: sorted(client.smembers(k)),
            }[kind]
            state[key.decode()] = (kind, read(key))
        return state

    def cleanup() -> None:
        keys = list(client.scan_iter(match=p + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()

    connector = _class("redis")("cache", settings)
    return Case(connector, Subject(email="Alice@Example.com"), snapshot, cleanup=cleanup)


def http_case(_tmp_path: Path) -> Case:
    """A real REST service on loopback: GET /users?email=..., DELETE /users/ID."""
    users = {
        "1": {"id": 1, "email": "alice@example.com", "name": "Alice"},
        "2": {"id": 2, "email": "bob@example.com", "name": "Bob"},
    }
    lock = threading.Lock()

    class Service(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            email = parse_qs(url.query).get("email", [""])[0].lower()
            with lock:
                found = [u for u in users.values() if u["email"] == email]
            self._answer(200, {"users": found})

        def do_DELETE(self) -> None:
            key = unquote(self.path.rsplit("/", 1)[-1])
            with lock:
                gone = users.pop(key, None)
            self._answer(404 if gone is None else 204)

        def log_message(self, *_args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Service)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def snapshot() -> dict[str, Any]:
        with lock:
            return copy.deepcopy(users)

    def cleanup() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    settings = {
        "base_url": f"http://127.0.0.1:{server.server_address[1]}",
        "retries": 0,
        "find": {"url": "/users?email={email}", "records": "users"},
        "erase": {"url": "/users/{id}"},
    }
    connector = _class("http")("helpdesk", settings)
    return Case(connector, Subject(email="alice@example.com"), snapshot, cleanup=cleanup)


def manual_case(_tmp_path: Path) -> Case:
    """A paper archive: a person erases, Lethe holds nothing to compare."""
    settings = {"owner": "archive@example.com", "instructions": "Shred the person's file"}
    return Case(
        _class("manual")("archive", settings),
        Subject(email="alice@example.com"),
        lambda: None,
        can_find=False,
    )


#: Entry-point group where a connector packaged on its own registers its contract case.
CASES_GROUP = "lethe.contract_cases"
FACTORIES: dict[str, Callable[[Path], Any]] = {
    "sql": sql_case,
    "redis": redis_case,
    "manual": manual_case,
    "http": http_case,
}


def find_factory(name: str) -> Callable[[Path], Any] | None:
    """Return the contract case factory of connector ``name``: built in, or registered."""
    if name in FACTORIES:
        return FACTORIES[name]
    for entry in entry_points(group=CASES_GROUP):
        if entry.name == name:
            return entry.load()
    return None


@pytest.fixture(params=REGISTERED)
def case(request, tmp_path) -> Iterator[Case]:
    factory = find_factory(request.param)
    if factory is None:
        pytest.fail(
            f"no contract fixture for connector {request.param!r}: add a factory to "
            f"FACTORIES in tests/connectors/test_contract.py or register one under {CASES_GROUP}"
        )
    made = factory(tmp_path)
    built = (
        made
        if isinstance(made, Case)
        else Case(
            made.connector,
            made.subject,
            made.snapshot,
            getattr(made, "can_find", True),
            getattr(made, "cleanup", lambda: None),
        )
    )
    try:
        yield built
    finally:
        built.connector.close()
        built.cleanup()


# -- shape ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REGISTERED)
def test_a_registered_connector_has_the_contracts_shape(name):
    cls = _class(name)
    assert isinstance(cls, type) and issubclass(cls, Connector)
    assert cls.name == name, f"entry point {name!r} loads a connector named {cls.name!r}"
    assert isinstance(cls.version, str) and cls.version and cls.version != "0"
    assert not inspect.isabstract(cls), f"{name} leaves verbs unimplemented"
    for verb in VERBS:
        assert callable(getattr(cls, verb, None)), f"{name} has no {verb}"


def test_the_built_in_connectors_are_registered():
    assert {"sql", "redis", "http", "manual"} <= set(REGISTERED)


# -- behaviour ------------------------------------------------------------------------------


def test_check_reaches_the_system(case):
    assert case.connector.check().ok


def test_plan_export_and_verify_change_nothing(case):
    before = case.snapshot()
    plan = case.connector.plan(case.subject)
    assert plan.system == case.connector.system and plan.connector == case.connector.name
    assert plan.steps
    if case.can_find:
        assert plan.found
        assert list(case.connector.export(case.subject))
    else:  # nothing to read: export refuses, naming the system, never returns "nothing"
        with pytest.raises(ConnectorError, match=case.connector.system):
            list(case.connector.export(case.subject))
    case.connector.verify(case.subject)
    assert case.snapshot() == before


def test_erase_carries_out_the_plan_and_verify_is_clean(case):
    before = case.snapshot()
    plan = case.connector.plan(case.subject)
    result = case.connector.erase(case.subject, plan)
    if result.outcome == Outcome.ACTION_REQUIRED:
        assert result.message, "an action_required outcome must say what a person must do"
        return
    assert result.outcome in (Outcome.COMPLETED, Outcome.RETAINED)
    assert result.total_rows > 0 and case.snapshot() != before
    assert case.connector.verify(case.subject).clean


def test_erasing_twice_reports_the_same_and_changes_nothing_more(case):
    plan = case.connector.plan(case.subject)
    first = case.connector.erase(case.subject, plan)
    after = case.snapshot()
    second = case.connector.erase(case.subject, plan)
    assert second.outcome == first.outcome
    assert case.snapshot() == after
    if first.outcome != Outcome.ACTION_REQUIRED:
        assert second.total_rows == 0


def test_an_unknown_person_is_not_found_and_nothing_changes(case):
    before = case.snapshot()
    plan = case.connector.plan(UNKNOWN)
    assert not plan.found
    outcome = case.connector.erase(UNKNOWN, plan).outcome
    if case.can_find:
        assert list(case.connector.export(UNKNOWN)) == []
        assert outcome == Outcome.NOT_FOUND
    else:  # it cannot know: a person is asked, never "not found" claimed
        assert outcome == Outcome.ACTION_REQUIRED
    assert case.snapshot() == before


def test_optional_verbs_left_to_the_base_class_refuse_loudly(case):
    cls = type(case.connector)
    for verb, call in OPTIONAL.items():
        if getattr(cls, verb) is getattr(Connector, verb):
            with pytest.raises(ConnectorError, match=case.connector.system):
                call(case.connector, case.subject)
    # Listing a segment the system does not have never reads as "nobody".
    with pytest.raises(ConnectorError):
        OPTIONAL["list_segment"](case.connector, case.subject)
