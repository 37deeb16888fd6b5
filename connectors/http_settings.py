"""The HTTP connector's settings: requests as templates, checked before anything is sent.

Every key is validated when the connector is built, so a wrong ``systems.toml`` stops the
app naming the system and the key.  Secrets are never in the file: the settings name the
environment variables that hold them, read only when a request is sent.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from connectors.base import ConfigError

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: The placeholders each request may use; values come from the subject, a found record's
#: id, or (erasure of an asynchronous system) the signed URL Lethe is called back at.
SUBJECT_FIELDS = ("email", "email_hash", "customer_id")
PLACEHOLDERS = {
    "check": (),
    "find": SUBJECT_FIELDS,
    "export": (*SUBJECT_FIELDS, "id"),
    "erase": (*SUBJECT_FIELDS, "id", "callback_url"),
}
#: ``auth.type`` -> the keys naming environment variables it needs (and plain keys).
AUTH_KEYS = {
    "bearer": ("token_env",),
    "basic": ("user_env", "password_env"),
    "header": ("name", "value_env"),
}
#: Keys a request takes besides method, url and body.
EXTRA_KEYS = {"find": ("records", "id", "not_found"), "export": ("records",)}
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class RequestSpec:
    """One templated request: method, path under ``base_url`` and optional JSON body."""

    key: str
    method: str
    url: str
    body: Any = None
    #: JSON path to the records (find) or to one record (export); "" is the whole body.
    records: str = ""
    #: JSON path of a record's id (find only).
    id: str = "id"
    #: Statuses that mean "no such person" (find only); nothing by default.
    not_found: tuple[int, ...] = ()

    def uses(self, name: str) -> bool:
        """Return whether the URL or the body has the placeholder ``{name}``."""
        return name in placeholders_in(self.url) | placeholders_in(self.body)

    def describe(self) -> str:
        """Return the request as configured, e.g. ``GET /users?email={email}``: no values."""
        return f"{self.method} {self.url}"


@dataclass(frozen=True)
class Auth:
    """How requests authenticate; values are names of environment variables."""

    type: str
    env: Mapping[str, str] = field(default_factory=dict)
    #: For ``header``: the header's name.
    header: str = ""


@dataclass(frozen=True)
class Settings:
    """The HTTP connector's settings, validated."""

    base_url: str
    auth: Auth | None
    timeout_seconds: float
    retries: int
    backoff_seconds: float
    headers: Mapping[str, str]
    find: RequestSpec
    erase: RequestSpec
    export: RequestSpec | None = None
    check: RequestSpec | None = None
    #: Set when the service confirms erasure later by calling Lethe back.
    callback_timeout: dt.timedelta | None = None


def placeholders_in(template: Any) -> set[str]:
    """Return the placeholder names used anywhere in a text or a JSON-like template."""
    if isinstance(template, str):
        return set(PLACEHOLDER.findall(template))
    if isinstance(template, Mapping):
        return set().union(*(placeholders_in(v) for v in template.values()))
    if isinstance(template, list):
        return set().union(*(placeholders_in(v) for v in template))
    return set()


def _number(system: str, settings: Mapping[str, Any], key: str, default: float, top: float):
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= top:
        raise ConfigError(system, key, f"must be a number from 0 to {top}")
    return value


def _request(system: str, raw: Any, key: str, default_method: str) -> RequestSpec:
    if not isinstance(raw, dict):
        raise ConfigError(system, key, f"required: a [systems.NAME.{key}] table with `url`")
    unknown = set(raw) - {"method", "url", "body", *EXTRA_KEYS.get(key, ())}
    if unknown:
        raise ConfigError(system, f"{key}.{sorted(unknown)[0]}", "unknown setting")
    method = raw.get("method", default_method)
    if method not in METHODS:
        raise ConfigError(system, f"{key}.method", f"must be one of {', '.join(METHODS)}")
    url = raw.get("url")
    if not isinstance(url, str) or not url.startswith("/"):
        raise ConfigError(
            system, f"{key}.url", "required: a path under base_url, e.g. /users?email={email}"
        )
    body = raw.get("body")
    if body is not None and not isinstance(body, dict):
        raise ConfigError(system, f"{key}.body", "must be a table, sent as JSON")
    for name in placeholders_in(url) | placeholders_in(body):
        if name not in PLACEHOLDERS[key]:
            known = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS[key]) or "none"
            raise ConfigError(
                system,
                f"{key}.url" if name in placeholders_in(url) else f"{key}.body",
                f"unknown placeholder {{{name}}} (this request may use: {known})",
            )
    paths = {}
    for path_key in ("records", "id"):
        value = raw.get(path_key, "id" if path_key == "id" else "")
        if not isinstance(value, str):
            raise ConfigError(system, f"{key}.{path_key}", 'must be a JSON path like "data.users"')
        paths[path_key] = value
    if key == "find" and not paths["id"]:
        raise ConfigError(system, "find.id", 'required: the JSON path of a record\'s id, e.g. "id"')
    not_found = raw.get("not_found", [])
    if not (isinstance(not_found, list) and all(s in (404, 410) for s in not_found)):
        raise ConfigError(
            system, "find.not_found", "must be a list of 404 and/or 410: statuses meaning nobody"
        )
    return RequestSpec(key, method, url, body, paths["records"], paths["id"], tuple(not_found))


def _auth(system: str, raw: Any) -> Auth | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type") not in AUTH_KEYS:
        raise ConfigError(system, "auth.type", f"must be one of {', '.join(AUTH_KEYS)}")
    needed = AUTH_KEYS[raw["type"]]
    unknown = set(raw) - {"type", *needed}
    if unknown:
        key = sorted(unknown)[0]
        hint = (
            " (secrets go in environment variables: name one with *_env)"
            if (key in {"token", "password", "value", "user"})
            else ""
        )
        raise ConfigError(system, f"auth.{key}", f"unknown setting{hint}")
    for key in needed:
        if not isinstance(raw.get(key), str) or not raw[key]:
            what = "the header's name" if key == "name" else "the name of an environment variable"
            raise ConfigError(system, f"auth.{key}", f"required: {what}")
    env = {key: raw[key] for key in needed if key.endswith("_env")}
    return Auth(raw["type"], env, raw.get("name", ""))


def _callback_timeout(system: str, raw: Any) -> dt.timedelta | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"callback_timeout_hours"}:
        raise ConfigError(system, "async", "must be a table with callback_timeout_hours only")
    hours = raw.get("callback_timeout_hours")
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 < hours <= 24 * 90:
        raise ConfigError(
            system,
            "async.callback_timeout_hours",
            "required: hours, more than 0 and at most 2160, e.g. 72",
        )
    return dt.timedelta(hours=hours)


def parse_settings(system: str, settings: Mapping[str, Any]) -> Settings:
    """Return the settings of one system; raise ConfigError naming the wrong key."""
    known = {"base_url", "auth", "timeout_seconds", "retries", "backoff_seconds", "headers"}
    unknown = set(settings) - known - {"find", "erase", "export", "check", "async"}
    if unknown:
        raise ConfigError(system, sorted(unknown)[0], "unknown setting of the http connector")
    base_url = settings.get("base_url")
    parts = urlsplit(base_url) if isinstance(base_url, str) else None
    if not parts or parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ConfigError(system, "base_url", "required: an http(s) URL without a query")
    if parts.username or parts.password:
        raise ConfigError(system, "base_url", "must hold no credentials: use [auth] instead")
    headers = settings.get("headers", {})
    if not (isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())):
        raise ConfigError(system, "headers", "must be a table of header = text (no secrets)")
    retries = settings.get("retries", 3)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
        raise ConfigError(system, "retries", "must be a whole number from 0 to 10")
    timeout = _number(system, settings, "timeout_seconds", 10, 300)
    if not timeout:
        raise ConfigError(system, "timeout_seconds", "must be more than 0")
    callback_timeout = _callback_timeout(system, settings.get("async"))
    erase = _request(system, settings.get("erase"), "erase", "DELETE")
    if callback_timeout is None and erase.uses("callback_url"):
        raise ConfigError(system, "erase", "{callback_url} needs an [systems.NAME.async] table")
    if callback_timeout is not None and not erase.uses("callback_url"):
        if erase.body is not None:
            raise ConfigError(
                system,
                "erase.body",
                "an asynchronous system must be sent {callback_url}: "
                'e.g. callback = "{callback_url}"',
            )
        erase = RequestSpec("erase", erase.method, erase.url, {"callback_url": "{callback_url}"})
    optional = {
        key: _request(system, settings[key], key, "GET") if key in settings else None
        for key in ("export", "check")
    }
    return Settings(
        base_url=base_url.rstrip("/"),
        auth=_auth(system, settings.get("auth")),
        timeout_seconds=timeout,
        retries=retries,
        backoff_seconds=_number(system, settings, "backoff_seconds", 0.5, 60),
        headers=dict(headers),
        find=_request(system, settings.get("find"), "find", "GET"),
        erase=erase,
        export=optional["export"],
        check=optional["check"],
        callback_timeout=callback_timeout,
    )
