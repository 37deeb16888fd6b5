"""The keys that sign proofs: the current one, and the retired ones that still verify.

The current private key is the file ``SIGNING_KEY_FILE``.  ``lethe keys rotate`` replaces
it with a new key and keeps the old *public* key (never the private one) in
``proof-keys/keyring.json`` beside it, so that every proof signed before still verifies
and the old key stays published.  Back up that folder with the key file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flask import current_app
from sqlalchemy.orm import Session

from core.audit import record_event
from core.signing import SigningKey, key_id_of, load_public_key_pem, load_signing_key

FORMAT = "lethe-keyring/1"


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


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _key_file() -> Path:
    return Path(current_app.config["SIGNING_KEY_FILE"])


def keyring_file(key_file: Path) -> Path:
    """Return the file that keeps the retired public keys of ``key_file``'s deployment."""
    return key_file.parent / "proof-keys" / "keyring.json"


def _read_keyring(key_file: Path) -> dict[str, Any]:
    path = keyring_file(key_file)
    if not path.exists():
        return {"format": FORMAT, "current": None, "retired": []}
    return json.loads(path.read_text(encoding="utf-8"))


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


def published_keys() -> list[PublishedKey]:
    """Return every key that signed proofs: the current one first, then retired, newest first."""
    key_file = _key_file()
    current = current_signing_key()
    ring = _read_keyring(key_file)
    recorded = ring.get("current") or {}
    if recorded.get("key_id") == current.key_id:
        since = recorded.get("since")
    elif key_file.exists():  # never rotated: in use since its file was written
        mtime = key_file.stat().st_mtime
        since = datetime.fromtimestamp(mtime, UTC).replace(microsecond=0).isoformat()
    else:
        since = None
    keys = [PublishedKey(current.key_id, current.public_pem(), "current", since)]
    for entry in ring.get("retired", []):
        if entry["key_id"] == current.key_id:
            continue
        public_key = load_public_key_pem(entry["public_key_pem"])
        if key_id_of(public_key) != entry["key_id"]:
            raise ValueError(f"{keyring_file(key_file)}: key {entry['key_id']} has another id")
        keys.append(
            PublishedKey(
                entry["key_id"],
                entry["public_key_pem"],
                "retired",
                entry["since"],
                entry["retired"],
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


def _write_keyring(key_file: Path, ring: dict[str, Any]) -> None:
    path = keyring_file(key_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_text(json.dumps(ring, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def rotate_signing_key(session: Session, actor: str) -> tuple[PublishedKey, SigningKey]:
    """Make a new signing key current and retire the old one, keeping its public half."""
    key_file = _key_file()
    old = next(key for key in published_keys() if key.status == "current")
    new = SigningKey(Ed25519PrivateKey.generate())
    now = _now()
    ring = _read_keyring(key_file)
    retired = [entry for entry in ring.get("retired", []) if entry["key_id"] != old.key_id]
    entry = PublishedKey(old.key_id, old.public_key_pem, "retired", old.since, now)
    retired.insert(0, entry.as_dict())
    record_event(session, actor, "signing_key.rotated", retired_key=old.key_id, new_key=new.key_id)
    # The old public key is kept before the private key is replaced: a crash in between
    # leaves the old key both current and kept, never lost.
    _write_keyring(
        key_file,
        {"format": FORMAT, "current": {"key_id": new.key_id, "since": now}, "retired": retired},
    )
    _write_private(key_file, new.private_key)
    return entry, current_signing_key()
