"""The built-in Redis connector: keys named after the person, hash fields and memberships.

Nothing in Redis says which keys belong to whom, so ``systems.toml`` says it: key
templates over the subject's identifiers (``session:{email_hash}``, optionally with a
trailing wildcard found by SCAN, never KEYS), hash fields holding personal data, and
memberships of the person in sets, lists, sorted sets or hashes.

Erasure is one optimistic transaction per system: the keys are WATCHed, re-read, and
changed in one MULTI/EXEC, retried if someone else touched them in between.  Values from
the subject are only ever key names, field names or members, never part of a script.
Plans name the templates, never the resolved keys, so a stored plan holds no personal data.
"""

from __future__ import annotations

import base64
import string
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from redis import exceptions as rexc
from redis.backoff import NoBackoff
from redis.retry import Retry

from connectors.base import (
    Action,
    CheckResult,
    ConfigError,
    Connector,
    ConnectorError,
    EraseResult,
    Plan,
    Record,
    Subject,
    TablePlan,
    VerifyResult,
)

#: What a template may name: the subject's identifiers (``email_lower`` is NFC, trimmed,
#: lower case, as Lethe normalises addresses).
PLACEHOLDERS = ("email", "email_lower", "email_hash", "customer_id")
KEY_TYPES = ("any", "string", "hash", "list", "set", "zset")
KEY_ACTIONS = ("delete", "rewrite", "retain")
MEMBER_TYPES = ("set", "list", "zset", "hash")
MEMBER_ACTIONS = ("remove", "retain")
#: The commands that test and remove one member, per type (lists are handled apart).
MEMBER_READ = {"set": "sismember", "zset": "zscore", "hash": "hexists"}
MEMBER_REMOVE = {"set": "srem", "zset": "zrem", "hash": "hdel"}
SETTINGS = ("url", "keys", "members", "scan_count", "timeout")
#: How many times erasure re-reads and retries when another client changes a watched key.
ATTEMPTS = 5
#: Keys sent to Redis per round trip when reading many keys matched by a pattern.
CHUNK = 500


class MissingIdentifier(LookupError):
    """A template names an identifier that this subject does not have."""


@dataclass(frozen=True)
class Template:
    """A key or member template: literal text and placeholders, maybe a trailing ``*``."""

    text: str
    parts: tuple[tuple[str, str | None], ...]
    wildcard: bool = False

    def render(self, subject: Subject) -> str:
        """Return the text with the subject's identifiers filled in (without the ``*``)."""
        out = []
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                out.append(_identifier(subject, name))
        return "".join(out)

    def names(self) -> set[str]:
        """Return the placeholders used."""
        return {name for _literal, name in self.parts if name is not None}


def _identifier(subject: Subject, name: str) -> str:
    if name == "email":
        value: str | None = subject.email
    elif name == "email_lower":
        value = unicodedata.normalize("NFC", subject.email).strip().lower()
    else:
        value = getattr(subject, name)
    if not value:
        raise MissingIdentifier(name)
    return str(value)


@dataclass(frozen=True)
class KeyRule:
    """Keys that belong to the person and what erasure does to them."""

    template: Template
    type: str
    action: str
    fields: tuple[str, ...] = ()
    value: str | None = None
    ground: str | None = None
    note: str = ""

    @property
    def name(self) -> str:
        """Return the name of the rule's step in a plan: its template."""
        return self.template.text

    @property
    def step_action(self) -> Action:
        """Return the plan action: a whole key deleted, kept, or partly rewritten."""
        if self.action == "retain":
            return Action.RETAIN
        if self.action == "delete" and not self.fields:
            return Action.DELETE
        return Action.ANONYMISE

    def columns(self) -> dict[str, str]:
        """Return field -> method, as a plan shows it (``delete`` or ``fixed:VALUE``)."""
        if self.action == "rewrite":
            return {f: f"fixed:{self.value}" for f in self.fields or ("value",)}
        return {f: "delete" for f in self.fields} if self.action == "delete" else {}

    def describe(self) -> str:
        """Return how the keys are found and what is touched, for the plan."""
        found = f"SCAN MATCH {self.name}" if self.template.wildcard else f"the key {self.name}"
        if self.fields:
            return f"fields {', '.join(self.fields)} of {found}"
        return found if self.type == "any" else f"{found} ({self.type})"


@dataclass(frozen=True)
class MemberRule:
    """The person as a member of one set, list, sorted set or hash."""

    key: Template
    member: Template
    type: str
    action: str
    ground: str | None = None
    note: str = ""

    @property
    def name(self) -> str:
        """Return the name of the rule's step in a plan."""
        return f"{self.key.text} [{self.type} member {self.member.text}]"

    @property
    def step_action(self) -> Action:
        """Return the plan action: the membership removed, or kept."""
        return Action.RETAIN if self.action == "retain" else Action.DELETE

    def columns(self) -> dict[str, str]:
        """Return the plan's columns: none, a member is removed whole."""
        return {}

    def describe(self) -> str:
        """Return how the membership is found, for the plan."""
        return f"{self.member.text} as a member of the {self.type} {self.key.text}"


Rule = KeyRule | MemberRule


@dataclass(frozen=True)
class Settings:
    """The Redis connector's settings, validated."""

    url: str
    connection: Mapping[str, Any]
    rules: tuple[Rule, ...]
    scan_count: int = 500
    timeout: float = 10.0


# -- settings --------------------------------------------------------------------------------


def _template(system: str, key: str, text: Any, *, wildcard: bool, placeholder: bool) -> Template:
    if not isinstance(text, str) or not text:
        raise ConfigError(system, key, "required, as non-empty text")
    star = text.endswith("*")
    body = text[:-1] if star else text
    if star and not wildcard:
        raise ConfigError(system, key, "a wildcard is allowed only in [[keys]] templates")
    try:
        parsed = list(string.Formatter().parse(body))
    except ValueError as error:
        raise ConfigError(system, key, f"not a template ({error}); write {{{{ for a {{") from None
    parts = []
    for literal, name, spec, conversion in parsed:
        if "*" in literal:
            raise ConfigError(system, key, "only a single trailing * is supported")
        if name is not None and (name not in PLACEHOLDERS or spec or conversion):
            raise ConfigError(
                system, key, f"unknown placeholder {{{name}}}; use {', '.join(PLACEHOLDERS)}"
            )
        parts.append((literal, name))
    template = Template(text, tuple(parts), star)
    if placeholder and not template.names():
        raise ConfigError(
            system, key, f"names nobody: use a placeholder ({', '.join(PLACEHOLDERS)})"
        )
    if star and (not parts or parts[-1][1] is not None or not parts[-1][0]):
        # "session:{email}*" would also match the keys of "{email}x", another person.
        raise ConfigError(
            system, key, "put a separator between the last placeholder and *, e.g. {email}:*"
        )
    return template


def _choice(system: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(system, key, f"must be one of {', '.join(choices)}")
    return value


def _optional_text(system: str, key: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(system, key, "must be non-empty text")
    return value


def _check_keys(system: str, path: str, rule: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(rule) - allowed
    if unknown:
        raise ConfigError(system, f"{path}.{sorted(unknown)[0]}", "unknown setting")


def _key_rule(system: str, path: str, raw: Any) -> KeyRule:
    if not isinstance(raw, dict):
        raise ConfigError(system, path, "must be a table: [[systems.NAME.keys]]")
    allowed = {"template", "type", "action", "fields", "value", "ground", "note"}
    _check_keys(system, path, raw, allowed)
    template = _template(
        system, f"{path}.template", raw.get("template"), wildcard=True, placeholder=True
    )
    action = _choice(system, f"{path}.action", raw.get("action"), KEY_ACTIONS)
    type_ = _choice(system, f"{path}.type", raw.get("type", "any"), KEY_TYPES)
    fields = raw.get("fields", [])
    if not (isinstance(fields, list) and all(isinstance(f, str) and f for f in fields)):
        raise ConfigError(system, f"{path}.fields", "must be a list of field names")
    if len(set(fields)) != len(fields):
        raise ConfigError(system, f"{path}.fields", "names a field twice")
    if fields and type_ != "hash":
        raise ConfigError(system, f"{path}.type", 'fields belong to hashes: set type = "hash"')
    value = _optional_text(system, f"{path}.value", raw.get("value"))
    ground = _optional_text(system, f"{path}.ground", raw.get("ground"))
    if action == "rewrite":
        if value is None:
            raise ConfigError(system, f"{path}.value", "rewrite needs the value to write")
        if not (type_ == "string" or (type_ == "hash" and fields)):
            raise ConfigError(
                system,
                f"{path}.action",
                'rewrite works on type = "string" or on the fields of type = "hash"',
            )
    elif value is not None:
        raise ConfigError(system, f"{path}.value", f"{action} takes no value")
    if action == "retain":
        if ground is None:
            raise ConfigError(system, f"{path}.ground", "retain needs the legal ground")
        if fields:
            raise ConfigError(system, f"{path}.fields", "retain keeps whole keys: no fields")
    elif ground is not None:
        raise ConfigError(system, f"{path}.ground", f"{action} takes no ground")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise ConfigError(system, f"{path}.note", "must be text")
    return KeyRule(template, type_, action, tuple(fields), value, ground, note)


def _member_rule(system: str, path: str, raw: Any) -> MemberRule:
    if not isinstance(raw, dict):
        raise ConfigError(system, path, "must be a table: [[systems.NAME.members]]")
    _check_keys(system, path, raw, {"key", "type", "value", "action", "ground", "note"})
    key = _template(system, f"{path}.key", raw.get("key"), wildcard=False, placeholder=False)
    member = _template(system, f"{path}.value", raw.get("value"), wildcard=False, placeholder=True)
    type_ = _choice(system, f"{path}.type", raw.get("type"), MEMBER_TYPES)
    action = _choice(system, f"{path}.action", raw.get("action"), MEMBER_ACTIONS)
    ground = _optional_text(system, f"{path}.ground", raw.get("ground"))
    if action == "retain" and ground is None:
        raise ConfigError(system, f"{path}.ground", "retain needs the legal ground")
    if action != "retain" and ground is not None:
        raise ConfigError(system, f"{path}.ground", f"{action} takes no ground")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise ConfigError(system, f"{path}.note", "must be text")
    return MemberRule(key, member, type_, action, ground, note)


def _number(system: str, key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(system, key, f"must be a number from {low:g} to {high:g}")
    return value


def parse_settings(system: str, settings: Mapping[str, Any]) -> Settings:
    """Return the settings of one system; raise ConfigError naming the wrong key."""
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise ConfigError(system, sorted(unknown)[0], "unknown setting of the redis connector")
    url = settings.get("url")
    if not isinstance(url, str) or not url:
        raise ConfigError(system, "url", "required, e.g. redis://127.0.0.1:6379/0")
    try:
        connection = redis.connection.parse_url(url)
    except ValueError as error:
        raise ConfigError(system, "url", f"not a Redis URL: {error}") from None
    rules: list[Rule] = []
    for section, build in (("keys", _key_rule), ("members", _member_rule)):
        raw = settings.get(section, [])
        if not isinstance(raw, list):
            raise ConfigError(system, section, f"must be an array: [[systems.NAME.{section}]]")
        rules.extend(build(system, f"{section}[{i}]", item) for i, item in enumerate(raw))
    if not rules:
        raise ConfigError(
            system, "keys", "declare at least one [[systems.NAME.keys]] or [[...members]]"
        )
    names: set[str] = set()
    for rule in rules:
        if rule.name in names:
            raise ConfigError(system, rule.name, "declared twice")
        names.add(rule.name)
    scan_count = int(_number(system, "scan_count", settings.get("scan_count", 500), 1, 10000))
    timeout = float(_number(system, "timeout", settings.get("timeout", 10), 0.1, 300))
    return Settings(url, connection, tuple(rules), scan_count, timeout)


# -- reading what matches --------------------------------------------------------------------


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _decode(value: bytes) -> str | dict[str, str]:
    """Return ``value`` as text, or as ``{"base64": ...}`` when it is not UTF-8."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode("ascii")}


def _name(value: bytes) -> str:
    """Return a key or field name as text; one that is not UTF-8 as ``base64:...``."""
    decoded = _decode(value)
    return decoded if isinstance(decoded, str) else "base64:" + decoded["base64"]


def _chunks(items: list[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class Finding:
    """What one rule matches now: key -> how many fields, members or keys (1) it counts."""

    rule: Rule
    counts: dict[bytes, int] = field(default_factory=dict)
    #: Keys whose type is not the one ``systems.toml`` declares.
    mistyped: dict[bytes, str] = field(default_factory=dict)
    #: The keys looked at: those the template names, or those SCAN found for a pattern.
    candidates: list[bytes] = field(default_factory=list)
    #: Every key of the rule that exists, whatever it holds (all of it is the person's).
    existing: list[bytes] = field(default_factory=list)
    #: For hash rules: key -> the configured fields it holds (to rewrite: not yet rewritten).
    fields: dict[bytes, tuple[str, ...]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Return the number of keys, fields or members matched."""
        return sum(self.counts.values())


class RedisConnector(Connector):
    """Find, export, erase and verify a person's keys, fields and memberships in Redis."""

    name = "redis"
    version = "1"

    def __init__(self, system: str, settings: Mapping[str, Any]):
        super().__init__(system, settings)
        self.config: Settings = parse_settings(system, settings)
        self._client: redis.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        """Return the client, created on first use (it connects on the first command)."""
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.config.url,
                socket_connect_timeout=self.config.timeout,
                socket_timeout=self.config.timeout,
                retry=Retry(NoBackoff(), 1),
            )
        return self._client

    def _where(self) -> str:
        conn = self.config.connection
        if "path" in conn:
            return f"{conn['path']} (db {conn.get('db', 0)})"
        return f"{conn.get('host', 'localhost')}:{conn.get('port', 6379)}/{conn.get('db', 0)}"

    def _failure(self, error: rexc.RedisError, doing: str) -> ConnectorError:
        # Pipeline errors quote the command, whose key may be made of the person's address.
        text = str(error).rpartition("caused error: ")[2]
        detail = text.splitlines()[0][:300] if text else type(error).__name__
        where = self._where()
        if isinstance(error, rexc.AuthenticationError):
            return ConnectorError(
                f"{self.system}: Redis at {where} refused the credentials while {doing} "
                f"({detail}); fix the user and password in `url` in systems.toml"
            )
        if isinstance(error, rexc.NoPermissionError):
            return ConnectorError(
                f"{self.system}: the Redis user lacks a permission needed for {doing} "
                f"({detail}); grant it read and write access to the configured keys"
            )
        if isinstance(error, rexc.ConnectionError | rexc.TimeoutError):
            return ConnectorError(
                f"{self.system}: cannot reach Redis at {where} while {doing} ({detail}); "
                "check that it runs and that `url` in systems.toml points at it",
                transient=True,
            )
        return ConnectorError(f"{self.system}: Redis failed while {doing}: {detail}")

    def _missing(self, rule: Rule, name: str) -> str:
        return (
            f"{rule.name}: this request gives no {name} for the person, so these keys "
            f"cannot be found; erasure of {self.system} is blocked until the template or "
            "the request provides it"
        )

    def _keys(self, rule: Rule, subject: Subject) -> list[bytes]:
        """Return the keys a rule names for the subject; a pattern's are found by SCAN."""
        if isinstance(rule, MemberRule):
            return [rule.key.render(subject).encode("utf-8")]
        prefix = rule.template.render(subject)
        if not rule.template.wildcard:
            return [prefix.encode("utf-8")]
        raw = prefix.encode("utf-8")
        found = {
            key
            for key in self.client.scan_iter(
                match=_glob_escape(prefix) + "*", count=self.config.scan_count
            )
            if key.startswith(raw)
        }
        return sorted(found)

    def _find(self, rule: Rule, subject: Subject) -> Finding:
        """Return what ``rule`` matches now; raise MissingIdentifier when it cannot say."""
        finding = Finding(rule)
        keys = finding.candidates = self._keys(rule, subject)
        member = rule.member.render(subject) if isinstance(rule, MemberRule) else None
        for chunk in _chunks(keys):
            pipe = self.client.pipeline(transaction=False)
            for key in chunk:
                pipe.type(key)
            types = [t.decode() for t in pipe.execute()]
            present = [(k, t) for k, t in zip(chunk, types, strict=True) if t != "none"]
            finding.existing.extend(key for key, _type in present)
            for key, type_ in present:
                if rule.type not in ("any", type_):
                    finding.mistyped[key] = type_
            present = [(k, t) for k, t in present if k not in finding.mistyped]
            pipe = self.client.pipeline(transaction=False)
            for key, _type in present:
                self._queue_count(pipe, rule, key, member)
            for (key, _type), answer in zip(present, pipe.execute(), strict=True):
                count, fields = self._count(rule, answer)
                if count:
                    finding.counts[key] = count
                    finding.fields[key] = fields
        return finding

    @staticmethod
    def _queue_count(pipe: Any, rule: Rule, key: bytes, member: str | None) -> None:
        if isinstance(rule, MemberRule):
            if rule.type == "list":
                pipe.lpos(key, member, count=0)  # every position: a list may repeat it
            else:
                getattr(pipe, MEMBER_READ[rule.type])(key, member)
        elif rule.fields:
            pipe.hmget(key, list(rule.fields))
        elif rule.action == "rewrite":
            pipe.get(key)
        else:
            pipe.exists(key)

    @staticmethod
    def _count(rule: Rule, answer: Any) -> tuple[int, tuple[str, ...]]:
        """Return how much of the answer matches, and for hash rules which fields."""
        if isinstance(rule, MemberRule):
            if rule.type == "list":
                return len(answer or []), ()
            return int(answer is not None if rule.type == "zset" else bool(answer)), ()
        target = None if rule.value is None else rule.value.encode("utf-8")
        if rule.fields:  # HMGET: the fields present (and, to rewrite, not yet rewritten)
            fields = tuple(
                f
                for f, v in zip(rule.fields, answer, strict=True)
                if v is not None and (rule.action != "rewrite" or v != target)
            )
            return len(fields), fields
        if rule.action == "rewrite":  # GET of a string
            return int(answer is not None and answer != target), ()
        return int(bool(answer)), ()

    def _find_all(self, subject: Subject) -> list[Finding]:
        """Return every rule's finding; raise ConnectorError if one cannot be searched."""
        findings = []
        for rule in self.config.rules:
            try:
                findings.append(self._find(rule, subject))
            except MissingIdentifier as missing:
                raise ConnectorError(
                    f"{self.system}: {self._missing(rule, str(missing))}"
                ) from None
        return findings

    # -- verbs --------------------------------------------------------------------------------

    def check(self) -> CheckResult:
        """Return whether Redis answers, with its version."""
        try:
            self.client.ping()
            version = self.client.info("server").get("redis_version", "unknown")
        except rexc.RedisError as error:
            return CheckResult(False, str(self._failure(error, "connecting")))
        return CheckResult(
            True, f"reachable; Redis {version}; {len(self.config.rules)} rules configured"
        )

    def plan(self, subject: Subject) -> Plan:
        """Count, per template, the keys, fields or members found and say what erasure does."""
        plan = Plan(system=self.system, connector=self.name)
        try:
            for rule in self.config.rules:
                try:
                    finding = self._find(rule, subject)
                except MissingIdentifier as missing:
                    plan.warnings.append(self._missing(rule, str(missing)))
                    continue
                if finding.mistyped:
                    found = ", ".join(sorted(set(finding.mistyped.values())))
                    plan.warnings.append(
                        f"{rule.name}: {len(finding.mistyped)} matching keys are {found}, not "
                        f"{rule.type} as systems.toml says; erasure of {self.system} is blocked"
                    )
                note = rule.note
                if isinstance(rule, KeyRule) and rule.step_action == Action.ANONYMISE:
                    kept = "the key's name, which is made of the person's identifiers, is kept"
                    note = f"{note}; {kept}" if note else kept
                plan.steps.append(
                    TablePlan(
                        table=rule.name,
                        action=rule.step_action,
                        rows=finding.total,
                        via=rule.describe(),
                        columns=rule.columns(),
                        ground=rule.ground,
                        note=note,
                    )
                )
        except rexc.RedisError as error:
            raise self._failure(error, "planning") from None
        return plan

    def export(self, subject: Subject) -> Iterator[Record]:
        """Yield each key named after the person (its whole value) and each membership."""
        try:
            for finding in self._find_all(subject):
                rule = finding.rule
                if isinstance(rule, MemberRule):
                    for key in finding.counts:
                        yield Record(rule.name, self._membership(rule, key, subject))
                else:
                    # A key named after the person is theirs whole, not only the fields
                    # that erasure rewrites.
                    for key in finding.existing:
                        yield Record(rule.name, self._dump(key))
        except rexc.RedisError as error:
            raise self._failure(error, "exporting") from None

    def _membership(self, rule: MemberRule, key: bytes, subject: Subject) -> dict[str, Any]:
        member = rule.member.render(subject)
        data: dict[str, Any] = {"key": _name(key), "type": rule.type, "member": member}
        if rule.type == "zset":
            data["score"] = self.client.zscore(key, member)
        elif rule.type == "hash":
            value = self.client.hget(key, member)
            data["value"] = None if value is None else _decode(value)
        elif rule.type == "list":
            data["occurrences"] = len(self.client.lpos(key, member, count=0) or [])
        return data

    def _dump(self, key: bytes) -> dict[str, Any]:
        client, count = self.client, self.config.scan_count
        type_ = client.type(key).decode()
        value: Any
        if type_ == "string":
            raw = client.get(key)
            value = None if raw is None else _decode(raw)
        elif type_ == "hash":
            value = {_name(f): _decode(v) for f, v in client.hscan_iter(key, count=count)}
        elif type_ == "list":
            value, start = [], 0
            while batch := client.lrange(key, start, start + count - 1):
                value.extend(_decode(v) for v in batch)
                start += len(batch)
        elif type_ == "set":
            value = sorted((_decode(v) for v in client.sscan_iter(key, count=count)), key=str)
        elif type_ == "zset":
            value = [
                {"member": _decode(m), "score": s} for m, s in client.zscan_iter(key, count=count)
            ]
        elif type_ == "stream":
            value = [
                {"id": _name(i), "fields": {_name(f): _decode(v) for f, v in fields.items()}}
                for i, fields in client.xrange(key)
            ]
        elif type_ == "none":  # gone between the scan and now
            value = None
        else:
            raise ConnectorError(
                f"{self.system}: a key holds a Redis {type_}, which this connector cannot "
                "export; export it by hand or narrow the template"
            )
        return {"key": _name(key), "type": type_, "value": value}

    def erase(self, subject: Subject, plan: Plan) -> EraseResult:
        """Carry out ``plan`` in one MULTI/EXEC over WATCHed keys: all of it, or nothing."""
        if plan.warnings:
            raise ConnectorError(f"{self.system}: erasure blocked: " + "; ".join(plan.warnings))
        steps = {step.table: step for step in plan.steps}
        rules = {rule.name: rule for rule in self.config.rules}
        for name, step in steps.items():
            rule = rules.get(name)
            if step.action == Action.RETAIN:
                continue
            if rule is None or (rule.step_action, rule.columns()) != (step.action, step.columns):
                raise ConnectorError(
                    f"{self.system}: systems.toml changed for {name} since the plan was "
                    "approved; review the plan again"
                )
        try:
            affected = self._erase(subject, steps)
        except rexc.RedisError as error:
            raise self._failure(error, "erasing") from None
        return EraseResult(plan.erase_outcome(), affected)

    def _erase(self, subject: Subject, steps: Mapping[str, TablePlan]) -> dict[str, int]:
        with self.client.pipeline(transaction=True) as pipe:
            for _attempt in range(ATTEMPTS):
                findings = self._to_erase(subject, steps)
                if not any(f.counts for f in findings):
                    return {f.rule.name: 0 for f in findings}
                # Watching a key that does not exist yet catches its creation too.
                watched = {key for f in findings for key in f.candidates}
                pipe.watch(*watched)
                # Read again under WATCH: what EXEC changes is exactly what is read here.
                findings = self._to_erase(subject, steps)
                if {key for f in findings for key in f.candidates} - watched:
                    pipe.unwatch()  # a pattern found a new key: watch it as well
                    continue
                pipe.multi()
                for finding in findings:
                    self._queue_erase(pipe, finding, subject)
                try:
                    pipe.execute()
                except rexc.WatchError:
                    continue
                return {f.rule.name: f.total for f in findings}
        raise ConnectorError(
            f"{self.system}: the person's keys kept changing during erasure; retry it",
            transient=True,
        )

    def _to_erase(self, subject: Subject, steps: Mapping[str, TablePlan]) -> list[Finding]:
        findings = []
        for finding in self._find_all(subject):
            step = steps.get(finding.rule.name)
            if finding.mistyped:
                raise ConnectorError(
                    f"{self.system}: keys matching {finding.rule.name} are not "
                    f"{finding.rule.type} as systems.toml says; review the plan again"
                )
            if step is None:
                if finding.total:
                    raise ConnectorError(
                        f"{self.system}: {finding.rule.name} matches data of the person but "
                        "is not in the approved plan; review the plan again"
                    )
                continue
            if step.action != Action.RETAIN:
                findings.append(finding)
        return findings

    @staticmethod
    def _queue_erase(pipe: Any, finding: Finding, subject: Subject) -> None:
        rule = finding.rule
        keys = list(finding.counts)
        if isinstance(rule, MemberRule):
            member = rule.member.render(subject)
            for key in keys:
                if rule.type == "list":
                    pipe.lrem(key, 0, member)  # 0: every occurrence
                else:
                    getattr(pipe, MEMBER_REMOVE[rule.type])(key, member)
        elif rule.action == "delete" and not rule.fields:
            for chunk in _chunks(keys):
                pipe.unlink(*chunk)
        elif rule.action == "delete":
            for key in keys:
                pipe.hdel(key, *finding.fields[key])
        elif rule.fields:  # rewrite the fields of a hash, only those present
            for key in keys:
                pipe.hset(key, mapping=dict.fromkeys(finding.fields[key], rule.value))
        else:  # rewrite a string, keeping its expiry
            for key in keys:
                pipe.set(key, rule.value, xx=True, keepttl=True)

    def verify(self, subject: Subject) -> VerifyResult:
        """Count, per rule that should be cleared, what still matches the subject."""
        try:
            findings = self._find_all(subject)
        except rexc.RedisError as error:
            raise self._failure(error, "verifying") from None
        # A key of another type than declared is counted: it may hold the person's data.
        return VerifyResult(
            {f.rule.name: f.total + len(f.mistyped) for f in findings if f.rule.action != "retain"}
        )

    def close(self) -> None:
        """Release the client's connections."""
        if self._client is not None:
            self._client.close()
