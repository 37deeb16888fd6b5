"""The connected systems: ``systems.toml`` read and checked, connectors found by entry point.

Installed is not enabled: only the connectors that ``systems.toml`` names are loaded, and
one that fails to load stops the app with a message naming the file, system and key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from connectors.base import ConfigError, Connector, ConnectorError

ENTRY_POINT_GROUP = "lethe.connectors"
#: Keys of a system's table that Lethe itself reads; the rest belong to the connector.
COMMON_KEYS = ("connector", "label", "disclosure", "recipients")
#: What a system tells the person about its use of their data (GDPR Art. 15(1)), shown in
#: their export package.
DISCLOSURE_KEYS = ("purposes", "categories", "recipients", "retention", "source")
#: The keys of one ``[[systems.NAME.recipients]]`` entry (GDPR Art. 19).
RECIPIENT_KEYS = ("name", "email", "webhook", "secret_env")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
#: A webhook carries the person's address: plain http only to this machine.
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Recipient:
    """A processor or recipient told of each erasure in a system (GDPR Art. 19)."""

    name: str
    #: Exactly one of ``email`` and ``webhook`` is set.
    email: str | None = None
    webhook: str | None = None
    #: The environment variable holding the webhook's HMAC-SHA256 signing key.
    secret_env: str | None = None

    @property
    def channel(self) -> str:
        """Return ``email`` or ``webhook``."""
        return "email" if self.email else "webhook"


@dataclass(frozen=True)
class SystemConfig:
    """One system declared in ``systems.toml``."""

    name: str
    connector: str
    label: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: ``[systems.NAME.disclosure]``: key of DISCLOSURE_KEYS -> list of sentences.
    disclosure: Mapping[str, list[str]] = field(default_factory=dict)
    #: ``[[systems.NAME.recipients]]``: whom to tell of an erasure here (Art. 19).
    recipients: tuple[Recipient, ...] = ()


@dataclass
class Systems:
    """The enabled systems of one app, with the connector classes they name."""

    file: Path | None
    configs: dict[str, SystemConfig]
    classes: dict[str, type[Connector]]

    def __iter__(self) -> Iterator[SystemConfig]:
        return iter(self.configs.values())

    def __len__(self) -> int:
        return len(self.configs)

    def build(self, name: str) -> Connector:
        """Return a new connector instance for the system ``name``."""
        config = self.configs[name]
        return self.classes[config.connector](config.name, config.settings)

    @contextmanager
    def open(self, name: str) -> Iterator[Connector]:
        """Yield a connector for ``name`` and close it afterwards."""
        connector = self.build(name)
        try:
            yield connector
        finally:
            connector.close()


def _load_class(system: str, connector: str, file: str) -> type[Connector]:
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if connector not in found:
        known = ", ".join(sorted(found)) or "none"
        raise ConfigError(
            system,
            "connector",
            f"no installed connector is called {connector!r} (installed: {known})",
            file,
        )
    try:
        cls = found[connector].load()
    except Exception as exc:  # a broken plugin must stop the app, with its cause
        raise ConfigError(
            system, "connector", f"connector {connector!r} failed to load: {exc}", file
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Connector)) or cls.name != connector:
        raise ConfigError(
            system,
            "connector",
            f"entry point {connector!r} is not a Connector whose name is {connector!r}",
            file,
        )
    return cls


def _disclosure(system: str, raw: Any, file: str) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        raise ConfigError(system, "disclosure", "must be a table: [systems.NAME.disclosure]", file)
    result = {}
    for key, value in raw.items():
        if key not in DISCLOSURE_KEYS:
            raise ConfigError(
                system, f"disclosure.{key}", f"unknown; use {', '.join(DISCLOSURE_KEYS)}", file
            )
        items = [value] if isinstance(value, str) else value
        if not (isinstance(items, list) and all(isinstance(i, str) and i for i in items)):
            raise ConfigError(system, f"disclosure.{key}", "must be text or a list of texts", file)
        result[key] = list(items)
    return result


def _recipient(system: str, key: str, raw: Any, file: str) -> Recipient:
    if not isinstance(raw, dict):
        raise ConfigError(system, key, "must be a table: [[systems.NAME.recipients]]", file)
    for unknown in raw.keys() - set(RECIPIENT_KEYS):
        raise ConfigError(
            system, f"{key}.{unknown}", f"unknown; use {', '.join(RECIPIENT_KEYS)}", file
        )
    values = {}
    for name in RECIPIENT_KEYS:
        value = raw.get(name)
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise ConfigError(system, f"{key}.{name}", "must be non-empty text", file)
        values[name] = value.strip() if value else None
    if not values["name"] or len(values["name"]) > 128:
        raise ConfigError(
            system, f"{key}.name", "missing; name the recipient (128 characters at most)", file
        )
    if bool(values["email"]) == bool(values["webhook"]):
        raise ConfigError(system, key, "give exactly one of email and webhook", file)
    if values["email"]:
        if not _EMAIL.match(values["email"]):
            raise ConfigError(system, f"{key}.email", "is not an email address", file)
        if values["secret_env"]:
            raise ConfigError(system, f"{key}.secret_env", "only a webhook is signed", file)
        return Recipient(values["name"], email=values["email"])
    url = urlsplit(values["webhook"])
    if not url.hostname or not (
        url.scheme == "https" or (url.scheme == "http" and url.hostname in _LOOPBACK)
    ):
        raise ConfigError(
            system, f"{key}.webhook", "must be an https:// URL (http:// only to localhost)", file
        )
    secret_env = values["secret_env"]
    if not secret_env:
        raise ConfigError(
            system,
            f"{key}.secret_env",
            "missing; name the environment variable of the webhook's signing key",
            file,
        )
    if not os.environ.get(secret_env):
        raise ConfigError(
            system, f"{key}.secret_env", f"the environment variable {secret_env} is not set", file
        )
    return Recipient(values["name"], webhook=values["webhook"], secret_env=secret_env)


def _recipients(system: str, raw: Any, file: str) -> tuple[Recipient, ...]:
    if not isinstance(raw, list):
        raise ConfigError(system, "recipients", "must be tables: [[systems.NAME.recipients]]", file)
    recipients = tuple(_recipient(system, f"recipients[{i}]", r, file) for i, r in enumerate(raw))
    names = [r.name for r in recipients]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(system, f"recipients[{i}].name", f"{name!r} is listed twice", file)
    return recipients


def load_systems(path: Path) -> Systems:
    """Read ``path`` and return the enabled systems; raise ConfigError naming what is wrong."""
    if not path.exists():
        return Systems(None, {}, {})
    file = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("*", "*", f"not valid TOML: {exc}", file) from None
    unknown = set(data) - {"systems"}
    if unknown:
        raise ConfigError(
            "*", sorted(unknown)[0], "unknown top-level key; use [systems.NAME]", file
        )
    configs: dict[str, SystemConfig] = {}
    classes: dict[str, type[Connector]] = {}
    for name, table in data.get("systems", {}).items():
        if not isinstance(table, dict):
            raise ConfigError(name, name, "must be a table: [systems.NAME]", file)
        connector = table.get("connector")
        if not isinstance(connector, str) or not connector:
            raise ConfigError(name, "connector", "missing; name an installed connector", file)
        label = table.get("label", name)
        if not isinstance(label, str):
            raise ConfigError(name, "label", "must be text", file)
        if connector not in classes:
            classes[connector] = _load_class(name, connector, file)
        settings = {k: v for k, v in table.items() if k not in COMMON_KEYS}
        disclosure = _disclosure(name, table.get("disclosure", {}), file)
        recipients = _recipients(name, table.get("recipients", []), file)
        config = SystemConfig(name, connector, label, settings, disclosure, recipients)
        try:
            # Constructing validates the settings; the instance holds no connection yet.
            classes[connector](name, settings).close()
        except ConfigError as exc:
            raise ConfigError(exc.system, exc.key, exc.problem, file) from None
        configs[name] = config
    return Systems(path, configs, classes)


@dataclass(frozen=True)
class SystemCheck:
    """The outcome of reaching one configured system."""

    name: str
    label: str
    connector: str
    ok: bool
    message: str


def check_systems(systems: Systems) -> list[SystemCheck]:
    """Reach every system and validate its configuration against the real schema."""
    results = []
    for system in systems:
        try:
            with systems.open(system.name) as connector:
                result = connector.check()
        except ConfigError as exc:
            # A key checked against the real schema is wrong in this file: say which file.
            file = exc.file or str(systems.file)
            ok, message = False, str(ConfigError(exc.system, exc.key, exc.problem, file))
        except ConnectorError as exc:
            ok, message = False, str(exc)
        else:
            ok, message = result.ok, result.message
        results.append(SystemCheck(system.name, system.label, system.connector, ok, message))
    return results
