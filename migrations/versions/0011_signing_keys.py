"""The public keys that sign proofs, in the database: every machine shares them.

Imports an existing ``proof-keys/keyring.json`` (kept beside the signing key file until
now) on upgrade, so that proofs signed with retired keys still verify.  Run the upgrade on
a machine that holds that file, with the deployment's ``LETHE_SIGNING_KEY_FILE``.

Revision ID: 0011_signing_keys
Revises: 0010_mail_queue
"""

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from cryptography.hazmat.primitives import serialization
from flask import current_app, has_app_context

revision = "0011_signing_keys"
down_revision = "0010_mail_queue"
branch_labels = None
depends_on = None


def upgrade():
    table = op.create_table(
        "signing_key",
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("since_at", sa.DateTime(), nullable=True),
        sa.Column("retired_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
    )
    if has_app_context() and current_app.config.get("SIGNING_KEY_FILE"):
        rows = keyring_rows(Path(current_app.config["SIGNING_KEY_FILE"]))
        if rows:
            op.bulk_insert(table, rows)


def downgrade():
    op.drop_table("signing_key")


def keyring_rows(key_file: Path) -> list[dict]:
    """Return the rows for the keys kept in ``proof-keys/keyring.json`` beside ``key_file``."""
    path = key_file.parent / "proof-keys" / "keyring.json"
    if not path.exists():
        return []
    ring = json.loads(path.read_text(encoding="utf-8"))
    rows = {
        entry["key_id"]: {
            "key_id": entry["key_id"],
            "public_key_pem": entry["public_key_pem"],
            "since_at": _moment(entry.get("since")),
            "retired_at": _moment(entry.get("retired")) or datetime.now(UTC).replace(tzinfo=None),
        }
        for entry in ring.get("retired", [])
    }
    current = ring.get("current") or {}
    public = _public_key(key_file)
    if public and current.get("key_id") == public[0] and public[0] not in rows:
        rows[public[0]] = {
            "key_id": public[0],
            "public_key_pem": public[1],
            "since_at": _moment(current.get("since")),
            "retired_at": None,
        }
    return list(rows.values())


def _moment(text: str | None) -> datetime | None:
    """Return an ISO timestamp as the naive UTC datetime the columns store."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _public_key(key_file: Path) -> tuple[str, str] | None:
    """Return the key id and public PEM of the private key in ``key_file``, if readable."""
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    public = key.public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(raw).hexdigest()[:16], pem.decode("ascii")
