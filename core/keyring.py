"""The keys that sign proofs: the current one, and the retired ones that still verify.

The current private key is the file ``SIGNING_KEY_FILE``: the one secret every machine of
a deployment needs, copied to each of them, never stored in the database.  The public
halves live in the ``signing_key`` table, shared by every machine: ``lethe keys rotate``
replaces the key file with a new key, marks the old key retired there (keeping its public
key, never the private one) and records the new one, so that every proof signed before
still verifies and the old key stays published.

Deployments from before the table kept the public keys in ``proof-keys/keyring.json``
beside the key file; migration 0011 imports that file on upgrade, after which it is no
longer read.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flask import current_app
from sqlalchemy.orm import Session

from core.audit import record_event
from core.extensions import db
from core.models import SigningKeyRecord, utcnow
from core.signing import SigningKey, key_id_of, load_public_key_pem, load_signing_key


@dataclass(frozen=True)
class PublishedKey:
    """A public key that signed proofs, as published at the keys URL."""

    key_id: str
    public_key_pem: str
    status: str  # "current" or "retired"
    since: str | None
    retired: str | None = None
    algorithm: str = "Ed25519"

    def as_dict(self) -> dict[str, Any]:
        """Return the key as plain JSON data."""
        return asdict(self)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).replace(microsecond=0).isoformat()


def _key_file() -> Path:
    return Path(current_app.config["SIGNING_KEY_FILE"])


def keyring_file(key_file: Path) -> Path:
    """Return where deployments before migration 0011 kept their retired public keys."""
    return key_file.parent / "proof-keys" / "keyring.json"


def current_signing_key() -> SigningKey:
    """Return the key that signs new proofs, read again if ``lethe keys rotate`` replaced it."""
    path = _key_file()
    try:
        stat = path.stat()
    except OSError:
        return current_app.extensions["lethe.signing_key"]
    stamp = (stat.st_ino, stat.st_mtime_ns)
    if current_app.extensions.get("lethe.signing_key_stamp") != stamp:
        # A web server or worker started before a rotation must not keep signing with the
        # retired key: the file is the truth.
        current_app.extensions["lethe.signing_key"] = load_signing_key(path)
        current_app.extensions["lethe.signing_key_stamp"] = stamp
    return current_app.extensions["lethe.signing_key"]


def _in_use_since(key_file: Path) -> datetime | None:
    """Return when a key never recorded began signing: when its file was written."""
    if not key_file.exists():
        return None
    return datetime.fromtimestamp(key_file.stat().st_mtime, UTC).replace(microsecond=0)


def _records() -> list[SigningKeyRecord]:
    order = (SigningKeyRecord.retired_at.is_(None).desc(), SigningKeyRecord.retired_at.desc())
    return list(db.session.scalars(sa.select(SigningKeyRecord).order_by(*order)))


def published_keys() -> list[PublishedKey]:
    """Return every key that signed proofs: the current one first, then retired, newest first.

    A recorded key that is not this machine's and was never retired is another machine's
    current key (its key file not copied here yet): it is published as current too, so that
    its proofs verify everywhere.
    """
    current = current_signing_key()
    records = _records()
    mine = next((r for r in records if r.key_id == current.key_id), None)
    since = mine.since_at if mine is not None else _in_use_since(_key_file())
    keys = [PublishedKey(current.key_id, current.public_pem(), "current", _iso(since))]
    for record in records:
        if record.key_id == current.key_id:
            continue
        if key_id_of(load_public_key_pem(record.public_key_pem)) != record.key_id:
            raise ValueError(f"signing_key {record.key_id}: its public key has another id")
        status = "current" if record.retired_at is None else "retired"
        keys.append(
            PublishedKey(
                record.key_id,
                record.public_key_pem,
                status,
                _iso(record.since_at),
                _iso(record.retired_at),
            )
        )
    return keys


def trusted_keys() -> dict[str, Ed25519PublicKey]:
    """Return the public keys that verify our proofs, by key id."""
    return {key.key_id: load_public_key_pem(key.public_key_pem) for key in published_keys()}


def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    """Replace ``path`` with ``key`` at once, the file readable by its owner only."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    temporary = path.with_name(f".{path.name}.new")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def rotate_signing_key(session: Session, actor: str) -> tuple[PublishedKey, SigningKey]:
    """Make a new signing key current and retire the old one, keeping its public half.

    Commits before the key file is replaced: a crash in between leaves the old key both
    current and kept, never lost, and the new one recorded but not yet in use.
    """
    old = current_signing_key()
    new = SigningKey(Ed25519PrivateKey.generate())
    now = utcnow().replace(microsecond=0)
    record = session.get(SigningKeyRecord, old.key_id)
    if record is None:
        record = SigningKeyRecord(
            key_id=old.key_id, public_key_pem=old.public_pem(), since_at=_in_use_since(_key_file())
        )
        session.add(record)
    record.retired_at = now
    session.add(SigningKeyRecord(key_id=new.key_id, public_key_pem=new.public_pem(), since_at=now))
    record_event(session, actor, "signing_key.rotated", retired_key=old.key_id, new_key=new.key_id)
    session.commit()
    _write_private(_key_file(), new.private_key)
    retired = PublishedKey(
        old.key_id, old.public_pem(), "retired", _iso(record.since_at), _iso(record.retired_at)
    )
    return retired, current_signing_key()
