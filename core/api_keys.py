"""Staff API keys: one role each, shown once, stored only as a keyed hash.

A key reads ``lethe_<id>_<secret>``.  The id is public (it names the key in lists and
finds its row); the secret is 256 random bits.  We keep HMAC-SHA256(HASH_KEY, secret),
not argon2: argon2 protects guessable passwords by being slow, while a random secret
cannot be guessed, and a slow check on every API call would only hand out a way to load
the server.  A stolen database without HASH_KEY gives nothing that authenticates.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from core.audit import record_event
from core.extensions import db
from core.models import Role, StaffUser, UTCDateTime, _enum, utcnow

PREFIX = "lethe"
#: Key names appear in the audit log as ``api:<name>``: short, plain, no spaces.
NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


class ApiKeyError(ValueError):
    """A key that cannot be created or revoked as asked; the message says why."""


class ApiKey(db.Model):
    """A key another system uses to call /api/v1 with the rights of one staff role."""

    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The public part of the key, printed in lists and found in the ``Authorization`` header.
    key_id: Mapped[str] = mapped_column(sa.String(16), unique=True)
    #: HMAC-SHA256 of the secret part under HASH_KEY, hex.
    secret_hash: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role))
    #: The staff account that answers for the key's decisions (shown as the approver on the
    #: request page and the proof); None for a key that only a system is behind.
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("staff_user.id"))
    #: Who created it: ``cli`` or ``staff:<email>``.
    created_by: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    owner: Mapped[StaffUser | None] = relationship()

    @property
    def actor(self) -> str:
        """Return how the audit log names what this key does."""
        return f"api:{self.name}"


def _digest(secret: str) -> str:
    key = bytes.fromhex(current_app.config["HASH_KEY"])
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def create_api_key(
    session: Session,
    name: str,
    role: Role,
    created_by: str,
    owner: StaffUser | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; return it and the full key text, which is never stored or shown again."""
    name = name.strip().lower()
    if not name or len(name) > 64 or not set(name) <= NAME_CHARACTERS:
        raise ApiKeyError("a key name is 1-64 letters, digits, dots or hyphens")
    if session.scalars(sa.select(ApiKey).where(ApiKey.name == name)).first():
        raise ApiKeyError(f"an API key named {name} already exists")
    if owner is not None and owner.role not in (role, Role.ADMIN):
        raise ApiKeyError(f"{owner.email} is {owner.role}: they cannot answer for a {role} key")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    key = ApiKey(
        key_id=key_id,
        secret_hash=_digest(secret),
        name=name,
        role=role,
        owner=owner,
        created_by=created_by,
    )
    session.add(key)
    session.flush()
    record_event(session, created_by, "api_key.created", key=key_id, name=name, role=role.value)
    return key, f"{PREFIX}_{key_id}_{secret}"


def revoke_api_key(session: Session, key_id: str, actor: str) -> ApiKey:
    """Revoke the key ``key_id`` for good."""
    key = session.scalars(sa.select(ApiKey).where(ApiKey.key_id == key_id)).first()
    if key is None:
        raise ApiKeyError(f"there is no API key {key_id}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        record_event(session, actor, "api_key.revoked", key=key.key_id, name=key.name)
    return key


def find_key_for(session: Session, token: str) -> ApiKey | None:
    """Return the live key that ``token`` is, or None (unknown, wrong, revoked, malformed)."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not key_id or not secret or len(token) > 200:
        return None
    key = session.scalars(sa.select(ApiKey).where(ApiKey.key_id == key_id)).first()
    # The digest is computed either way, so the answer takes as long for an unknown id.
    right = hmac.compare_digest(_digest(secret), key.secret_hash if key else "0" * 64)
    if key is None or not right or key.revoked_at is not None:
        return None
    if key.owner is not None and not key.owner.active:
        return None  # a deactivated owner takes their keys with them
    return key
