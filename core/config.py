"""Read the configuration from ``LETHE_*`` environment variables, with embedded defaults.

Development needs nothing set: the database, the broker and the secrets live under
``instance/``.  Production (``LETHE_ENV=production``) refuses to start with any of those
development secrets, so a copied demo never ends up serving real people.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.deadlines import RULES

#: Secrets generated once per development instance and kept in ``instance/secrets.json``.
DEV_SECRETS = ("SECRET_KEY", "DATA_KEY", "HASH_KEY")
#: Who the person may complain to when no authority is configured; emails translate it.
DEFAULT_SUPERVISORY_AUTHORITY = "your data protection supervisory authority"
#: The EDPB's list of every EU/EEA supervisory authority, for the same case.
DEFAULT_SUPERVISORY_AUTHORITY_URL = "https://www.edpb.europa.eu/about-edpb/about-edpb/members_en"


class ConfigurationError(RuntimeError):
    """The configuration cannot be used; the message says which variable to fix."""


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get(f"LETHE_{name}", default)


def _flag(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    if raw not in ("0", "1"):
        raise ConfigurationError(f"LETHE_{name} must be 0 or 1, not {raw!r}")
    return raw == "1"


def _rule_name(name: str, value: str) -> str:
    if value not in RULES:
        raise ConfigurationError(
            f"LETHE_{name}: unknown deadline rule {value!r}; use one of {', '.join(sorted(RULES))}"
        )
    return value


_EU_EEA = (
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE IS LI NO"
)
#: The clock of each country whose law Lethe knows (EU/EEA: ``gdpr-eu``); others get the
#: deployment's default.
DEFAULT_COUNTRY_RULES = {
    **dict.fromkeys(_EU_EEA.split(" "), "gdpr-eu"),
    "GB": "uk-gdpr",
    "US-CA": "ccpa",
    "RU": "ru-152fz",
    "CN": "cn-pipl",
}


def _country_rules(raw: str) -> dict[str, str]:
    rules = dict(DEFAULT_COUNTRY_RULES)
    for pair in filter(None, (part.strip() for part in raw.split(","))):
        country, _, rule = pair.partition("=")
        country = country.strip().upper()
        if not country or not rule:
            raise ConfigurationError(
                f"LETHE_JURISDICTION_BY_COUNTRY: {pair!r} is not COUNTRY=rule (e.g. GB=uk-gdpr)"
            )
        rules[country] = _rule_name("JURISDICTION_BY_COUNTRY", rule.strip())
    return rules


def _int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"LETHE_{name} must be a whole number, not {raw!r}") from None


def load_dev_secrets(instance: Path) -> dict[str, str]:
    """Return the development secrets, creating ``instance/secrets.json`` on first use."""
    path = instance / "secrets.json"
    stored: dict[str, str] = {}
    if path.exists():
        stored = json.loads(path.read_text())
    missing = [name for name in DEV_SECRETS if name not in stored]
    if missing:
        for name in missing:
            stored[name] = secrets.token_hex(32)
        instance.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stored, indent=2))
        path.chmod(0o600)
    return stored


def load_config(instance: Path) -> dict[str, Any]:
    """Return the Flask configuration built from the environment."""
    production = _env("ENV", "development") == "production"
    instance = Path(_env("INSTANCE_PATH", instance)).resolve()
    config: dict[str, Any] = {
        "LETHE_ENV": "production" if production else "development",
        "INSTANCE": instance,
        "SQLALCHEMY_DATABASE_URI": _env("DATABASE_URL", f"sqlite:///{instance / 'lethe.sqlite'}"),
        "BROKER_URL": _env("BROKER_URL", f"sqla+sqlite:///{instance / 'broker.sqlite'}"),
        "BASE_URL": _env("BASE_URL", "http://127.0.0.1:5000").rstrip("/"),
        "SMTP_HOST": _env("SMTP_HOST"),
        "SMTP_PORT": _int("SMTP_PORT", 25),
        "SMTP_USER": _env("SMTP_USER"),
        "SMTP_PASSWORD": _env("SMTP_PASSWORD"),
        "SMTP_STARTTLS": _env("SMTP_STARTTLS", "0") == "1",
        "MAIL_FROM": _env("MAIL_FROM", "Lethe privacy desk <privacy@localhost>"),
        "OUTBOX": Path(_env("OUTBOX", instance / "outbox")),
        "SYSTEMS_FILE": Path(_env("SYSTEMS_FILE", instance / "systems.toml")),
        "SIGNING_KEY_FILE": Path(_env("SIGNING_KEY_FILE", instance / "signing_key.pem")),
        "CONTROLLER_NAME": _env("CONTROLLER_NAME", "Example Ltd"),
        # The controller's address, printed on acts of destruction (Roskomnadzor Order 179).
        "CONTROLLER_ADDRESS": _env("CONTROLLER_ADDRESS", ""),
        # Named in refusals and extensions: where the person may complain (GDPR Art. 77).
        "SUPERVISORY_AUTHORITY": _env("SUPERVISORY_AUTHORITY", DEFAULT_SUPERVISORY_AUTHORITY),
        "SUPERVISORY_AUTHORITY_URL": _env(
            "SUPERVISORY_AUTHORITY_URL", DEFAULT_SUPERVISORY_AUTHORITY_URL
        ),
        "JURISDICTION": _rule_name("JURISDICTION", _env("JURISDICTION", "gdpr-eu")),
        # Where the person lives picks the clock when staff record it: COUNTRY=rule pairs
        # added to (or replacing) the built-in map.
        "JURISDICTION_BY_COUNTRY": _country_rules(_env("JURISDICTION_BY_COUNTRY", "")),
        # Pausing the clock while identity is being checked (deadlines.md rule 5).
        "ALLOW_PAUSE": _flag("ALLOW_PAUSE", True),
        "HOLIDAY_COUNTRY": _env("HOLIDAY_COUNTRY"),
        "HOLIDAY_SUBDIVISION": _env("HOLIDAY_SUBDIVISION"),
        "VERIFY_LINK_DAYS": _int("VERIFY_LINK_DAYS", 7),
        # Export packages (access, portability): where the encrypted files live (a folder
        # every worker and web process shares), how long a download link lives, and how
        # many downloads one package allows.
        "EXPORT_DIR": Path(_env("EXPORT_DIR", instance / "exports")),
        "EXPORT_LINK_DAYS": _int("EXPORT_LINK_DAYS", 7),
        "EXPORT_MAX_DOWNLOADS": _int("EXPORT_MAX_DOWNLOADS", 5),
        "COOLING_OFF_MINUTES": _int("COOLING_OFF_MINUTES", 3 * 24 * 60),
        # Bulk erasure: the largest CSV of addresses staff may upload, in bytes and in rows.
        "BULK_MAX_BYTES": _int("BULK_MAX_BYTES", 5 * 1024 * 1024),
        "BULK_MAX_ROWS": _int("BULK_MAX_ROWS", 100_000),
        "TIMEZONE": _env("TIMEZONE", "Europe/Dublin"),
        # The hour (0-23, controller's time zone) of the DPO's daily digest of due requests.
        "REMINDER_HOUR": _int("REMINDER_HOUR", 8),
        "RUN_JOBS_INLINE": _env("RUN_JOBS_INLINE", "0") == "1",
        # A system that fails for a passing reason is tried again after an exponential
        # backoff with full jitter (base, cap in seconds), this many attempts in all; a run
        # whose worker has shown no sign of life for RUN_STALL_SECONDS, or a planned one
        # still waiting that long after it was due, is requeued or failed by the watchdog,
        # which looks every WATCHDOG_SECONDS.
        "RETRY_MAX_ATTEMPTS": _int("RETRY_MAX_ATTEMPTS", 5),
        "RETRY_BASE_SECONDS": _int("RETRY_BASE_SECONDS", 30),
        "RETRY_MAX_SECONDS": _int("RETRY_MAX_SECONDS", 3600),
        "RUN_STALL_SECONDS": _int("RUN_STALL_SECONDS", 600),
        "WATCHDOG_SECONDS": _int("WATCHDOG_SECONDS", 60),
        # Webhooks out on every change of a request's state (core/webhooks.py): the URLs
        # (comma-separated), the HMAC secret that signs them, and how they are retried.
        "WEBHOOK_URLS": [u.strip() for u in _env("WEBHOOK_URLS", "").split(",") if u.strip()],
        "WEBHOOK_SECRET": _env("WEBHOOK_SECRET", ""),
        "WEBHOOK_MAX_ATTEMPTS": _int("WEBHOOK_MAX_ATTEMPTS", 10),
        "WEBHOOK_BASE_SECONDS": _int("WEBHOOK_BASE_SECONDS", 30),
        "WEBHOOK_MAX_SECONDS": _int("WEBHOOK_MAX_SECONDS", 6 * 3600),
        "WEBHOOK_TIMEOUT_SECONDS": _int("WEBHOOK_TIMEOUT_SECONDS", 10),
        # Emails that could not go out wait in the mail queue (core/mail_queue.py): the
        # first backoff, its ceiling, and the tries after which one is given up.
        "MAIL_RETRY_BASE_SECONDS": _int("MAIL_RETRY_BASE_SECONDS", 60),
        "MAIL_RETRY_MAX_SECONDS": _int("MAIL_RETRY_MAX_SECONDS", 3600),
        "MAIL_MAX_ATTEMPTS": _int("MAIL_MAX_ATTEMPTS", 100),
        # Days after a request closed before its personal data (address, what the person
        # typed, staff's notes) is purged; the proof and the audit log stay.
        "RETENTION_DAYS": _int("RETENTION_DAYS", 365),
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True, "hide_parameters": True},
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": production,
        "REMEMBER_COOKIE_SECURE": production,
        # Staff sign-in: failures in a row before a lock, and for how long; two-factor for
        # admins; when an idle or long session ends.
        "LOGIN_MAX_FAILURES": _int("LOGIN_MAX_FAILURES", 5),
        "LOGIN_LOCKOUT_MINUTES": _int("LOGIN_LOCKOUT_MINUTES", 15),
        "TOTP_REQUIRED_FOR_ADMIN": _flag("TOTP_REQUIRED_FOR_ADMIN", False),
        "STAFF_IDLE_MINUTES": _int("STAFF_IDLE_MINUTES", 30),
        "STAFF_SESSION_HOURS": _int("STAFF_SESSION_HOURS", 12),
        "WTF_CSRF_TIME_LIMIT": None,
        "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
        # Rate limits are counted here; share one Redis between web servers in production.
        "RATELIMIT_STORAGE_URI": _env("RATELIMIT_STORAGE_URL", "memory://"),
        "RATELIMIT_HEADERS_ENABLED": True,
    }
    env_secrets = {name: _env(name) for name in DEV_SECRETS}
    if production:
        missing = [f"LETHE_{name}" for name, value in env_secrets.items() if not value]
        if missing:
            raise ConfigurationError(
                "production mode needs its own secrets; set " + ", ".join(missing)
            )
        if not _env("SIGNING_KEY_FILE"):
            raise ConfigurationError("production mode needs LETHE_SIGNING_KEY_FILE")
        if config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
            raise ConfigurationError("production mode needs LETHE_DATABASE_URL (PostgreSQL)")
        config.update(env_secrets)
    else:
        generated = load_dev_secrets(instance)
        config.update({name: value or generated[name] for name, value in env_secrets.items()})
    try:
        ZoneInfo(config["TIMEZONE"])
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"LETHE_TIMEZONE {config['TIMEZONE']!r} is not a time zone name such as Europe/Berlin"
        ) from None
    if not 0 <= config["REMINDER_HOUR"] <= 23:
        raise ConfigurationError(
            f"LETHE_REMINDER_HOUR must be an hour from 0 to 23, not {config['REMINDER_HOUR']}"
        )
    for name in ("RETRY_MAX_ATTEMPTS", "RUN_STALL_SECONDS", "WATCHDOG_SECONDS", "RETENTION_DAYS"):
        if config[name] < 1:
            raise ConfigurationError(f"LETHE_{name} must be at least 1, not {config[name]}")
    for name in ("RETRY_BASE_SECONDS", "RETRY_MAX_SECONDS"):
        if config[name] < 0:
            raise ConfigurationError(f"LETHE_{name} cannot be negative, not {config[name]}")
    if config["WEBHOOK_URLS"] and len(config["WEBHOOK_SECRET"]) < 16:
        raise ConfigurationError("LETHE_WEBHOOK_URLS needs LETHE_WEBHOOK_SECRET (16+ characters)")
    for name in ("DATA_KEY", "HASH_KEY"):
        try:
            if len(bytes.fromhex(config[name])) != 32:
                raise ValueError
        except ValueError:
            raise ConfigurationError(
                f"LETHE_{name} must be 64 hexadecimal characters (32 random bytes)"
            ) from None
    return config
