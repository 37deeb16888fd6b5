"""The migrations build exactly the schema the models describe, on every database."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from core.extensions import db


def test_migrations_match_the_models(app):
    with app.app_context(), db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert differences == []


def test_upgrade_imports_the_keyring_file_so_retired_keys_still_verify(app):
    import json
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from flask_migrate import downgrade, upgrade

    from core.keyring import keyring_file, published_keys, trusted_keys
    from core.signing import SigningKey

    current, old = app.extensions["lethe.signing_key"], SigningKey(Ed25519PrivateKey.generate())
    ring = {
        "format": "lethe-keyring/1",
        "current": {"key_id": current.key_id, "since": "2026-03-01T09:00:00+00:00"},
        "retired": [
            {
                "key_id": old.key_id,
                "public_key_pem": old.public_pem(),
                "status": "retired",
                "since": "2025-01-01T00:00:00+00:00",
                "retired": "2026-03-01T09:00:00+00:00",
                "algorithm": "Ed25519",
            }
        ],
    }
    path = keyring_file(Path(app.config["SIGNING_KEY_FILE"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ring), encoding="utf-8")
    with app.app_context():
        db.session.remove()
        downgrade(revision="0010_mail_queue")
        upgrade()
        path.unlink()  # imported: the table alone is read from now on
        keys = [key.as_dict() for key in published_keys()]
        assert [(k["key_id"], k["status"]) for k in keys] == [
            (current.key_id, "current"),
            (old.key_id, "retired"),
        ]
        assert keys[0]["since"] == "2026-03-01T09:00:00+00:00"
        assert keys[1]["since"] == "2025-01-01T00:00:00+00:00"
        assert keys[1]["retired"] == "2026-03-01T09:00:00+00:00"
        trusted_keys()[old.key_id].verify(old.sign(b"proof"), b"proof")  # raises if not
