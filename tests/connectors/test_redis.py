"""The Redis connector against a real Redis server.

Every test writes under a key prefix of its own and deletes it afterwards, so it shares
the server with other tests (and the job broker) safely.
"""

from __future__ import annotations

import dataclasses
import socket
import uuid
from collections.abc import Iterator

import pytest
import redis

from connectors.base import Action, ConfigError, ConnectorError, Outcome, Plan, Subject
from connectors.redis import RedisConnector
from core.systems import load_systems
from tests.services import require_redis

PERSON = Subject(email="Zoë.Ωmega@пример.example", email_hash="5e1f" * 16)
OTHER = Subject(email="someone.else@example.org", email_hash="0a0b" * 16)


@pytest.fixture
def url() -> str:
    return require_redis()


@pytest.fixture
def r(url) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture
def p(r) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"lethe-test:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(r.scan_iter(match=prefix + "*", count=1000))
    if keys:
        r.delete(*keys)


def shop(url: str, p: str) -> dict:
    """Settings covering every kind of rule, under the key prefix ``p``."""
    return {
        "url": url,
        "keys": [
            {"template": p + "session:{email_hash}", "action": "delete"},
            {"template": p + "sess:{email}:*", "action": "delete"},
            {
                "template": p + "cart:{email}",
                "type": "hash",
                "fields": ["name", "address"],
                "action": "rewrite",
                "value": "erased",
            },
            {
                "template": p + "profile:{email_lower}",
                "type": "hash",
                "fields": ["phone"],
                "action": "delete",
            },
            {"template": p + "nick:{email}", "type": "string", "action": "rewrite", "value": "-"},
            {"template": p + "invoice:{email}", "action": "retain", "ground": "art17-3-b"},
        ],
        "members": [
            {"key": p + "newsletter", "type": "set", "value": "{email}", "action": "remove"},
            {"key": p + "queue", "type": "list", "value": "{email}", "action": "remove"},
            {"key": p + "scores", "type": "zset", "value": "{email_hash}", "action": "remove"},
            {"key": p + "by-email", "type": "hash", "value": "{email_lower}", "action": "remove"},
        ],
    }


def fill(r: redis.Redis, p: str, person: Subject) -> None:
    """Store the same shape of data for ``person`` as a shop would."""
    e, h, low = person.email, person.email_hash, person.email.lower()
    r.set(f"{p}session:{h}", "token-" + e, ex=3600)
    r.hset(f"{p}sess:{e}:web", mapping={"ip": "192.0.2.1", "who": e})
    r.rpush(f"{p}sess:{e}:pages", "/", "/cart")
    r.hset(f"{p}cart:{e}", mapping={"name": "Зоя 欧米茄", "address": "1 Main St", "items": "3"})
    r.hset(f"{p}profile:{low}", mapping={"phone": "+33 1", "lang": "ru"})
    r.set(f"{p}nick:{e}", "zo", ex=3600)
    r.set(f"{p}invoice:{e}", "INV-1")
    r.sadd(f"{p}newsletter", e)
    r.rpush(f"{p}queue", e, "x", e)
    r.zadd(f"{p}scores", {h: 0})
    r.hset(f"{p}by-email", low, "42")


def snapshot(r: redis.Redis, p: str) -> dict[bytes, bytes]:
    return {k: r.dump(k) for k in sorted(r.scan_iter(match=p + "*"))}


def test_plan_export_erase_verify_and_erase_again(r, p, url):
    fill(r, p, PERSON)
    fill(r, p, OTHER)
    # A person whose address extends ours must not be taken for us by the wildcard.
    r.set(f"{p}sess:{PERSON.email}x:web", "not ours")
    connector = RedisConnector("sessions", shop(url, p))

    plan = connector.plan(PERSON)
    assert plan.warnings == []
    rows = {step.table: (step.action, step.rows) for step in plan.steps}
    assert rows == {
        p + "session:{email_hash}": (Action.DELETE, 1),
        p + "sess:{email}:*": (Action.DELETE, 2),
        p + "cart:{email}": (Action.ANONYMISE, 2),
        p + "profile:{email_lower}": (Action.ANONYMISE, 1),
        p + "nick:{email}": (Action.ANONYMISE, 1),
        p + "invoice:{email}": (Action.RETAIN, 1),
        p + "newsletter [set member {email}]": (Action.DELETE, 1),
        p + "queue [list member {email}]": (Action.DELETE, 2),
        p + "scores [zset member {email_hash}]": (Action.DELETE, 1),
        p + "by-email [hash member {email_lower}]": (Action.DELETE, 1),
    }
    cart = next(s for s in plan.steps if s.table == p + "cart:{email}")
    assert cart.columns == {"name": "fixed:erased", "address": "fixed:erased"}
    assert "key's name" in cart.note
    # A stored plan names templates, never the person.
    assert PERSON.email not in str(plan.to_dict()) and PERSON.email_hash not in str(plan.to_dict())
    assert Plan.from_dict(plan.to_dict()) == plan

    records = list(connector.export(PERSON))
    by_key = {rec.data["key"]: rec.data for rec in records}
    assert by_key[f"{p}cart:{PERSON.email}"]["value"] == {
        "name": "Зоя 欧米茄",
        "address": "1 Main St",
        "items": "3",
    }
    assert by_key[f"{p}sess:{PERSON.email}:pages"] == {
        "key": f"{p}sess:{PERSON.email}:pages",
        "type": "list",
        "value": ["/", "/cart"],
    }
    assert by_key[f"{p}scores"]["score"] == 0
    assert by_key[f"{p}queue"]["occurrences"] == 2
    assert by_key[f"{p}invoice:{PERSON.email}"]["value"] == "INV-1"
    assert not any(OTHER.email in str(rec.data) for rec in records)
    assert f"{p}sess:{PERSON.email}x:web" not in by_key

    before = connector.verify(PERSON)
    assert not before.clean
    assert before.remaining[p + "queue [list member {email}]"] == 2
    assert p + "invoice:{email}" not in before.remaining  # kept on purpose

    others = snapshot(r, p + "sess:" + OTHER.email)
    result = connector.erase(PERSON, plan)
    assert result.outcome == Outcome.COMPLETED
    assert result.rows_affected == {
        name: n for name, (action, n) in rows.items() if action != Action.RETAIN
    }
    after = connector.verify(PERSON)
    assert after.clean, after.remaining

    e = PERSON.email
    assert not r.exists(f"{p}session:{PERSON.email_hash}", f"{p}sess:{e}:web", f"{p}sess:{e}:pages")
    assert r.hgetall(f"{p}cart:{e}") == {b"name": b"erased", b"address": b"erased", b"items": b"3"}
    assert r.hgetall(f"{p}profile:{e.lower()}") == {b"lang": b"ru"}
    assert r.get(f"{p}nick:{e}") == b"-" and r.ttl(f"{p}nick:{e}") > 0  # expiry kept
    assert r.get(f"{p}invoice:{e}") == b"INV-1"
    assert r.lrange(f"{p}queue", 0, -1) == [b"x", OTHER.email.encode(), b"x", OTHER.email.encode()]
    assert r.smembers(f"{p}newsletter") == {OTHER.email.encode()}
    assert r.zrange(f"{p}scores", 0, -1) == [OTHER.email_hash.encode()]
    assert r.hkeys(f"{p}by-email") == [OTHER.email.encode()]
    assert r.get(f"{p}sess:{e}x:web") == b"not ours"
    assert snapshot(r, p + "sess:" + OTHER.email) == others
    assert not connector.verify(OTHER).clean

    # The same approved plan again: nothing more changes, the outcome is the same.
    state = snapshot(r, p)
    again = connector.erase(PERSON, plan)
    assert again.outcome == Outcome.COMPLETED
    assert again.total_rows == 0
    assert snapshot(r, p) == state
    # Only what is kept on purpose is still found.
    assert [(s.table, s.rows) for s in connector.plan(PERSON).steps if s.rows] == [
        (p + "invoice:{email}", 1)
    ]
    connector.close()


def test_person_with_nothing_stored_is_not_found(r, p, url):
    fill(r, p, OTHER)
    connector = RedisConnector("sessions", shop(url, p))
    plan = connector.plan(PERSON)
    assert plan.warnings == [] and not plan.found
    assert list(connector.export(PERSON)) == []
    assert connector.verify(PERSON).clean
    state = snapshot(r, p)
    result = connector.erase(PERSON, plan)
    assert result.outcome == Outcome.NOT_FOUND and result.total_rows == 0
    assert snapshot(r, p) == state


def test_glob_characters_in_the_address_match_only_themselves(r, p, url):
    person = Subject(email="a*[b]?\\c'd\"e {x}@example.org")
    other = Subject(email="aZ[b]?\\c'd\"e {x}@example.org")  # what a*[b]? would match too
    for subject in (person, other):
        r.set(f"{p}s:{subject.email}:1", "v")
        r.sadd(f"{p}list", subject.email)
    settings = {
        "url": url,
        "keys": [{"template": p + "s:{email}:*", "action": "delete"}],
        "members": [{"key": p + "list", "type": "set", "value": "{email}", "action": "remove"}],
    }
    connector = RedisConnector("sessions", settings)
    plan = connector.plan(person)
    assert [s.rows for s in plan.steps] == [1, 1]
    assert connector.erase(person, plan).rows_affected == {
        p + "s:{email}:*": 1,
        p + "list [set member {email}]": 1,
    }
    assert r.exists(f"{p}s:{other.email}:1") and not r.exists(f"{p}s:{person.email}:1")
    assert r.smembers(f"{p}list") == {other.email.encode()}


def test_a_missing_identifier_is_a_warning_and_blocks_erasure(r, p, url):
    settings = {
        "url": url,
        "keys": [
            {"template": p + "orders:{customer_id}", "action": "delete"},
            {"template": p + "session:{email}", "action": "delete"},
        ],
    }
    r.set(f"{p}session:{PERSON.email}", "x")
    r.set(f"{p}orders:C-7", "x")
    connector = RedisConnector("sessions", settings)
    plan = connector.plan(PERSON)
    assert len(plan.warnings) == 1
    assert "customer_id" in plan.warnings[0] and p + "orders:{customer_id}" in plan.warnings[0]
    assert PERSON.email not in plan.warnings[0]
    with pytest.raises(ConnectorError, match="customer_id"):
        connector.erase(PERSON, plan)
    # Even along a plan without the warning (made when the identifier was known).
    with_id = dataclasses.replace(PERSON, customer_id="C-7")
    good = connector.plan(with_id)
    assert good.warnings == [] and good.total_rows == 2
    with pytest.raises(ConnectorError, match="customer_id"):
        connector.erase(PERSON, good)
    with pytest.raises(ConnectorError, match="customer_id"):
        list(connector.export(PERSON))
    with pytest.raises(ConnectorError, match="customer_id"):
        connector.verify(PERSON)
    assert r.exists(f"{p}session:{PERSON.email}", f"{p}orders:C-7") == 2
    assert connector.erase(with_id, good).outcome == Outcome.COMPLETED
    assert connector.verify(with_id).clean


def test_a_key_of_another_type_blocks_erasure_and_is_not_verified_clean(r, p, url):
    r.set(f"{p}cart:{PERSON.email}", "a string, not a hash")
    settings = {
        "url": url,
        "keys": [
            {
                "template": p + "cart:{email}",
                "type": "hash",
                "fields": ["name"],
                "action": "delete",
            }
        ],
    }
    connector = RedisConnector("carts", settings)
    plan = connector.plan(PERSON)
    assert plan.warnings and "not hash" in plan.warnings[0] and "string" in plan.warnings[0]
    with pytest.raises(ConnectorError, match="blocked"):
        connector.erase(PERSON, plan)
    assert connector.verify(PERSON).remaining == {p + "cart:{email}": 1}
    # Still the person's: exported as it is.
    assert [rec.data["value"] for rec in connector.export(PERSON)] == ["a string, not a hash"]
    assert r.get(f"{p}cart:{PERSON.email}") == b"a string, not a hash"


def test_erasure_follows_the_approved_plan_only(r, p, url):
    fill(r, p, PERSON)
    settings = shop(url, p)
    connector = RedisConnector("sessions", settings)
    plan = connector.plan(PERSON)
    state = snapshot(r, p)

    # A rule added since approval that matches the person: review first.
    short = dataclasses.replace(plan, steps=plan.steps[1:])
    with pytest.raises(ConnectorError, match="not in the approved plan"):
        connector.erase(PERSON, short)
    # An action changed in systems.toml since approval: review first.
    settings["keys"][0] = {
        "template": p + "session:{email_hash}",
        "action": "retain",
        "ground": "x",
    }
    with pytest.raises(ConnectorError, match="changed"):
        RedisConnector("sessions", settings).erase(PERSON, plan)
    assert snapshot(r, p) == state

    # A legal hold turns every step into retain: nothing changes.
    held = dataclasses.replace(
        plan,
        steps=[dataclasses.replace(s, action=Action.RETAIN, columns={}) for s in plan.steps],
    )
    assert connector.erase(PERSON, held).outcome == Outcome.RETAINED
    assert snapshot(r, p) == state


def test_export_gives_base64_for_bytes_that_are_not_text(r, p, url):
    r.hset(f"{p}blob:{PERSON.email}", mapping={b"\xff\x00": b"\xc3\x28", "ok": "ü"})
    r.zadd(f"{p}z:{PERSON.email}", {"a": 1.5})
    r.sadd(f"{p}set:{PERSON.email}", "b", "a")
    r.xadd(f"{p}events:{PERSON.email}", {"what": "login"})
    settings = {
        "url": url,
        "keys": [
            {"template": p + "blob:{email}", "action": "delete"},
            {"template": p + "z:{email}", "action": "delete"},
            {"template": p + "set:{email}", "type": "set", "action": "delete"},
            {"template": p + "events:{email}", "action": "delete"},
        ],
    }
    data = [rec.data for rec in RedisConnector("blobs", settings).export(PERSON)]
    assert data[0]["value"] == {"base64:/wA=": {"base64": "wyg="}, "ok": "ü"}
    assert data[1]["value"] == [{"member": "a", "score": 1.5}]
    assert data[2]["value"] == ["a", "b"]
    assert data[3]["type"] == "stream" and data[3]["value"][0]["fields"] == {"what": "login"}


def test_check_reports_the_server_version(url, r):
    settings = {"url": url, "keys": [{"template": "s:{email}", "action": "delete"}]}
    result = RedisConnector("sessions", settings).check()
    assert result.ok
    assert f"Redis {r.info('server')['redis_version']}" in result.message


def test_patterns_are_scanned_in_batches(r, p, url):
    with r.pipeline(transaction=False) as pipe:
        for i in range(1203):
            pipe.set(f"{p}s:{PERSON.email}:{i}", i)
            pipe.set(f"{p}s:{OTHER.email}:{i}", i)
        pipe.execute()
    settings = {
        "url": url,
        "scan_count": 100,
        "keys": [{"template": p + "s:{email}:*", "action": "delete"}],
    }
    connector = RedisConnector("sessions", settings)
    plan = connector.plan(PERSON)
    assert plan.total_rows == 1203
    assert len(list(connector.export(PERSON))) == 1203
    assert connector.erase(PERSON, plan).total_rows == 1203
    assert connector.verify(PERSON).clean
    assert connector.plan(OTHER).total_rows == 1203


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_redis_is_a_connector_error():
    port = free_port()
    rules = {"keys": [{"template": "s:{email}", "action": "delete"}]}
    connector = RedisConnector("sessions", {"url": f"redis://127.0.0.1:{port}/3", **rules})
    with pytest.raises(ConnectorError, match=f"cannot reach Redis at 127.0.0.1:{port}/3") as info:
        connector.plan(PERSON)
    assert info.value.transient and "sessions" in str(info.value)
    assert PERSON.email not in str(info.value)
    for verb in (lambda: list(connector.export(PERSON)), lambda: connector.verify(PERSON)):
        with pytest.raises(ConnectorError, match="systems.toml"):
            verb()
    with pytest.raises(ConnectorError, match="cannot reach"):
        connector.erase(PERSON, Plan("sessions", "redis"))
    check = connector.check()
    assert not check.ok and "cannot reach Redis" in check.message


def test_wrong_credentials_are_named(url):
    parsed = redis.connection.parse_url(url)
    bad = f"redis://nobody-{uuid.uuid4().hex[:6]}:wrong@{parsed['host']}:{parsed['port']}/0"
    connector = RedisConnector(
        "sessions",
        {
            "url": bad,
            "members": [{"key": "k", "type": "set", "value": "{email}", "action": "remove"}],
        },
    )
    check = connector.check()
    assert not check.ok and "refused the credentials" in check.message
    assert "wrong" not in check.message  # never the password
    with pytest.raises(ConnectorError, match="user and password") as info:
        connector.plan(PERSON)
    assert not info.value.transient


def test_missing_permissions_are_named(url, r, p):
    user = f"lethe-test-{uuid.uuid4().hex[:8]}"
    try:
        r.acl_setuser(
            user, enabled=True, passwords=["+pw"], commands=["+ping", "+info"], keys=["*"]
        )
    except redis.ResponseError as error:
        pytest.skip(f"this Redis does not let the tests create an ACL user: {error}")
    try:
        parsed = redis.connection.parse_url(url)
        limited = f"redis://{user}:pw@{parsed['host']}:{parsed['port']}/{parsed.get('db', 0)}"
        settings = {"url": limited, "keys": [{"template": p + "s:{email}:*", "action": "delete"}]}
        connector = RedisConnector("sessions", settings)
        assert connector.check().ok  # reachable, yet unable to search:
        with pytest.raises(ConnectorError, match="lacks a permission needed for planning"):
            connector.plan(PERSON)
        connector.close()
    finally:
        r.acl_deluser(user)


KEY = {"template": "s:{email}", "action": "delete"}


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"keys": [KEY]}, "url"),
        ({"url": "http://x", "keys": [KEY]}, "url"),
        ({"url": "redis://h"}, "keys"),
        ({"url": "redis://h", "keys": [KEY], "colour": 1}, "colour"),
        ({"url": "redis://h", "keys": KEY}, "keys"),
        ({"url": "redis://h", "keys": [KEY], "scan_count": 0}, "scan_count"),
        ({"url": "redis://h", "keys": [KEY], "timeout": "5"}, "timeout"),
        ({"url": "redis://h", "keys": [{"action": "delete"}]}, "keys[0].template"),
        (
            {"url": "redis://h", "keys": [{"template": "global", "action": "delete"}]},
            "keys[0].template",
        ),
        (
            {"url": "redis://h", "keys": [{"template": "s:{name}", "action": "delete"}]},
            "keys[0].template",
        ),
        (
            {"url": "redis://h", "keys": [{"template": "s:{email!r}", "action": "delete"}]},
            "keys[0].template",
        ),
        (
            {"url": "redis://h", "keys": [{"template": "s:{email", "action": "delete"}]},
            "keys[0].template",
        ),
        (
            {"url": "redis://h", "keys": [{"template": "s:{email}*", "action": "delete"}]},
            "keys[0].template",
        ),
        (
            {"url": "redis://h", "keys": [{"template": "s:*:{email}", "action": "delete"}]},
            "keys[0].template",
        ),
        (
            {"url": "redis://h", "keys": [KEY, {"template": "t:{email}", "action": "drop"}]},
            "keys[1].action",
        ),
        ({"url": "redis://h", "keys": [{**KEY, "type": "stream"}]}, "keys[0].type"),
        ({"url": "redis://h", "keys": [{**KEY, "fields": ["a"]}]}, "keys[0].type"),
        ({"url": "redis://h", "keys": [{**KEY, "type": "hash", "fields": "a"}]}, "keys[0].fields"),
        (
            {"url": "redis://h", "keys": [{**KEY, "action": "rewrite", "type": "string"}]},
            "keys[0].value",
        ),
        (
            {"url": "redis://h", "keys": [{**KEY, "action": "rewrite", "value": "x"}]},
            "keys[0].action",
        ),
        ({"url": "redis://h", "keys": [{**KEY, "value": "x"}]}, "keys[0].value"),
        ({"url": "redis://h", "keys": [{**KEY, "action": "retain"}]}, "keys[0].ground"),
        ({"url": "redis://h", "keys": [{**KEY, "ground": "art17-3-b"}]}, "keys[0].ground"),
        ({"url": "redis://h", "keys": [{**KEY, "ttl": 5}]}, "keys[0].ttl"),
        ({"url": "redis://h", "keys": [KEY, KEY]}, "s:{email}"),
        (
            {"url": "redis://h", "members": [{"key": "k", "type": "set", "action": "remove"}]},
            "members[0].value",
        ),
        (
            {
                "url": "redis://h",
                "members": [{"key": "k", "type": "set", "value": "fixed", "action": "remove"}],
            },
            "members[0].value",
        ),
        (
            {
                "url": "redis://h",
                "members": [{"key": "k:*", "type": "set", "value": "{email}", "action": "remove"}],
            },
            "members[0].key",
        ),
        (
            {
                "url": "redis://h",
                "members": [{"key": "k", "type": "stream", "value": "{email}", "action": "remove"}],
            },
            "members[0].type",
        ),
        (
            {
                "url": "redis://h",
                "members": [{"key": "k", "type": "set", "value": "{email}", "action": "delete"}],
            },
            "members[0].action",
        ),
    ],
)
def test_bad_settings_are_named_by_key(settings, key):
    with pytest.raises(ConfigError) as info:
        RedisConnector("sessions", settings)
    assert info.value.system == "sessions" and info.value.key == key


#: The example of docs/connectors.md, with this test's URL and key prefix.
DOCUMENTED = """
[systems.sessions]
connector = "redis"                 # the built-in Redis connector
label = "Sessions and carts"        # how the system is named to the person and in proofs
url = "{url}"
scan_count = 500                    # optional: SCAN's COUNT, keys per round trip (1-10000)
timeout = 10                        # optional: seconds to connect, and per command

[[systems.sessions.keys]]
template = "{p}session:{{email_hash}}"
action = "delete"

[[systems.sessions.keys]]
template = "{p}sess:{{email_lower}}:*"
action = "delete"

[[systems.sessions.keys]]
template = "{p}cart:{{email}}"
type = "hash"
fields = ["name", "address"]
action = "rewrite"
value = "erased"

[[systems.sessions.keys]]
template = "{p}profile:{{email_lower}}"
type = "hash"
fields = ["phone"]
action = "delete"

[[systems.sessions.keys]]
template = "{p}invoice:{{email}}"
action = "retain"
ground = "art17-3-b"
note = "invoices are kept 10 years under tax law"

[[systems.sessions.members]]
key = "{p}newsletter"
type = "set"
value = "{{email}}"
action = "remove"

[systems.sessions.disclosure]
purposes = ["Keeping you signed in and remembering your cart"]
retention = "Sessions 30 days; carts 90 days"
"""


def test_a_systems_file_loads_and_checks(tmp_path, url, p, r):
    file = tmp_path / "systems.toml"
    file.write_text(DOCUMENTED.format(url=url, p=p), encoding="utf-8")
    systems = load_systems(file)
    fill(r, p, PERSON)  # its sess:* keys keep the address's case: not {email_lower}
    r.set(f"{p}sess:{PERSON.email.lower()}:app", "x")
    with systems.open("sessions") as connector:
        assert connector.check().ok
        plan = connector.plan(PERSON)
        assert plan.warnings == []
        # session, sess:*, the cart's 2 fields, the phone, the invoice (kept), newsletter
        assert plan.total_rows == 1 + 1 + 2 + 1 + 1 + 1
        assert connector.erase(PERSON, plan).outcome == Outcome.COMPLETED
        assert connector.verify(PERSON).clean
    file.write_text(DOCUMENTED.format(url=url, p=p).replace('"delete"', '"drop"', 1))
    with pytest.raises(
        ConfigError, match=r"systems.toml: system 'sessions', key 'keys\[0\].action'"
    ):
        load_systems(file)
