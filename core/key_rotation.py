"""Move every value sealed with DATA_KEY, and every keyed hash, from the old keys to new ones.

The operator puts the new keys in ``LETHE_DATA_KEY`` / ``LETHE_HASH_KEY`` and the old ones
in ``LETHE_DATA_KEY_OLD`` / ``LETHE_HASH_KEY_OLD`` (see :func:`old_keys_from_env`).  A value
that already opens with the new key is left alone, so the work is resumable: a run cut
short commits what it finished batch by batch, and running again picks up the rest.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from core.api_keys import ApiKey
from core.audit import record_event
from core.crypto import DecryptionError, decrypt, encrypt, keyed_hash, normalise_email
from core.exports import _context as export_context
from core.exports import package_path
from core.extensions import db
from core.holds import _context as hold_context
from core.mail_queue import QueuedMail
from core.models import DataSubjectRequest, ExportPackage, LegalHold, StaffUser, SubjectIdentity
from core.retention import SEALED_COLUMNS
from core.sealed_files import SealedWriter, open_sealed
from core.staff import _context as staff_context


class RotationError(ValueError):
    """Keys missing or malformed, or a value that neither the old nor the new key opens."""


@dataclass(frozen=True)
class Keys:
    """The data and hash keys before and after the rotation (equal when one stays)."""

    old_data: bytes
    new_data: bytes
    old_hash: bytes
    new_hash: bytes


@dataclass
class RotationReport:
    """What a run changed (or, in a dry run, would change)."""

    resealed: Counter[str] = field(default_factory=Counter)
    rehashed: int = 0
    unchanged: int = 0
    files: int = 0
    #: Identities whose address was purged: their hash cannot be recomputed and stays.
    purged_hashes: int = 0
    #: Active API keys whose secret hash was made with the old HASH_KEY: they stop working.
    stale_api_keys: int = 0

    @property
    def changed(self) -> int:
        """Return how many values were (or would be) rewritten."""
        return sum(self.resealed.values()) + self.files


def _hex_key(name: str, value: str) -> bytes:
    try:
        key = bytes.fromhex(value)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise RotationError(f"{name} must be 64 hexadecimal characters (32 random bytes)")
    return key


def old_keys_from_env(environ: dict[str, str] | None = None) -> Keys:
    """Return the keys of this rotation: new from the app's config, old from the environment."""
    environ = dict(os.environ if environ is None else environ)
    new_data = _hex_key("LETHE_DATA_KEY", current_app.config["DATA_KEY"])
    new_hash = _hex_key("LETHE_HASH_KEY", current_app.config["HASH_KEY"])
    old_data_text = environ.get("LETHE_DATA_KEY_OLD", "")
    old_hash_text = environ.get("LETHE_HASH_KEY_OLD", "")
    if not old_data_text and not old_hash_text:
        raise RotationError(
            "set LETHE_DATA_KEY_OLD and/or LETHE_HASH_KEY_OLD to the keys being replaced"
        )
    old_data = _hex_key("LETHE_DATA_KEY_OLD", old_data_text) if old_data_text else new_data
    old_hash = _hex_key("LETHE_HASH_KEY_OLD", old_hash_text) if old_hash_text else new_hash
    return Keys(old_data, new_data, old_hash, new_hash)


def sealed_columns() -> tuple[tuple[type, tuple[str, ...], Callable[[Any], bytes]], ...]:
    """Return each model with sealed columns, the columns, and the context they are bound to."""
    return (
        (
            DataSubjectRequest,
            SEALED_COLUMNS,
            lambda request: request.reference.encode(),
        ),
        (StaffUser, ("totp_secret_sealed",), staff_context),
        (LegalHold, ("reason_sealed",), hold_context),
        (QueuedMail, ("body_sealed",), lambda mail: mail.uid.encode()),
    )


def check_coverage() -> None:
    """Fail loudly if a model has a ``*_sealed`` column this module does not rotate."""
    covered = {(m.__tablename__, c) for m, cols, _ in sealed_columns() for c in cols}
    covered.add((SubjectIdentity.__tablename__, "email_sealed"))
    for table in db.metadata.sorted_tables:
        for column in table.columns:
            if column.name.endswith("_sealed") and (table.name, column.name) not in covered:
                raise RotationError(f"{table.name}.{column.name} is sealed but not rotated")


def _open(keys: Keys, sealed: bytes, context: bytes) -> tuple[str, bool]:
    """Return the plaintext and whether it was already under the new data key."""
    try:
        return decrypt(keys.new_data, sealed, context), True
    except DecryptionError:
        pass
    try:
        return decrypt(keys.old_data, sealed, context), False
    except DecryptionError:
        raise RotationError("a sealed value opens with neither the old nor the new key") from None


def _batches(session: Session, model: type, size: int) -> Iterator[list[Any]]:
    last = 0
    while True:
        rows = list(
            session.scalars(sa.select(model).where(model.id > last).order_by(model.id).limit(size))
        )
        if not rows:
            return
        last = rows[-1].id  # read before the caller commits and expires the rows
        yield rows


def _rotate_identity(keys: Keys, identity: SubjectIdentity, report: RotationReport) -> None:
    if identity.email_sealed is None:
        report.purged_hashes += keys.old_hash != keys.new_hash
        return
    email, current = _open(keys, identity.email_sealed, identity.email_hash.encode())
    new_hash = keyed_hash(keys.new_hash, normalise_email(email))
    if current and new_hash == identity.email_hash:
        report.unchanged += 1
        return
    # The ciphertext is bound to the hash, so a new hash means sealing it again.
    report.rehashed += new_hash != identity.email_hash
    report.resealed["subject_identity.email_sealed"] += 1
    identity.email_hash = new_hash
    identity.email_sealed = encrypt(keys.new_data, email, new_hash.encode())


def _rotate_row(keys: Keys, row: Any, columns, context_of, report: RotationReport) -> None:
    context = context_of(row)
    for column in columns:
        sealed = getattr(row, column)
        if sealed is None:
            continue
        text, current = _open(keys, sealed, context)
        if current:
            report.unchanged += 1
            continue
        report.resealed[f"{row.__tablename__}.{column}"] += 1
        setattr(row, column, encrypt(keys.new_data, text, context))


def _rotate_file(keys: Keys, path: Path, context: bytes, dry_run: bool) -> bool:
    """Seal an export file again under the new key; return whether it needed it."""
    chunks = open_sealed(path, keys.new_data, context)
    try:
        next(chunks)
        return False
    except DecryptionError:
        pass
    finally:
        chunks.close()
    if dry_run:
        next(open_sealed(path, keys.old_data, context))  # still proves the old key opens it
        return True
    # The writer fills path.part and renames it over path on close: never half-written.
    with SealedWriter(path, keys.new_data, context) as writer:
        for chunk in open_sealed(path, keys.old_data, context):
            writer.write(chunk)
    return True


def rotate_keys(session: Session, keys: Keys, batch_size: int = 500, dry_run: bool = False):
    """Re-seal and re-hash everything under ``keys``; commit per batch unless ``dry_run``."""
    check_coverage()
    report = RotationReport()

    def finish_batch() -> None:
        session.rollback() if dry_run else session.commit()

    for rows in _batches(session, SubjectIdentity, batch_size):
        for identity in rows:
            _rotate_identity(keys, identity, report)
        finish_batch()
    for model, columns, context_of in sealed_columns():
        for rows in _batches(session, model, batch_size):
            for row in rows:
                _rotate_row(keys, row, columns, context_of, report)
            finish_batch()
    packages = session.scalars(
        sa.select(ExportPackage).where(ExportPackage.purged_at.is_(None))
    ).all()
    for package in packages:
        path = package_path(package)
        if path.exists() and keys.old_data != keys.new_data:
            try:
                report.files += _rotate_file(keys, path, export_context(package), dry_run)
            except DecryptionError:
                raise RotationError(
                    f"export file {package.filename} opens with neither key"
                ) from None
    if keys.old_hash != keys.new_hash:
        report.stale_api_keys = session.scalar(
            sa.select(sa.func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
        )
    if not dry_run:
        # Counts only: the event names no person and no key.
        record_event(
            session,
            "cli",
            "keys.data_rotated",
            data_key_changed=keys.old_data != keys.new_data,
            hash_key_changed=keys.old_hash != keys.new_hash,
            resealed=sum(report.resealed.values()),
            rehashed=report.rehashed,
            files=report.files,
        )
        session.commit()
    return report
