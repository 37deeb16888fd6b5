"""`lethe rotate-keys`: everything sealed or hashed under the old keys moves to the new ones."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from core.cli import cli
from core.crypto import DecryptionError, decrypt, keyed_hash, normalise_email
from core.exports import _context as export_context
from core.exports import package_path
from core.extensions import db
from core.holds import hold_reason, place_hold, retention_grounds
from core.key_rotation import sealed_columns
from core.models import (
    DataSubjectRequest,
    ExportPackage,
    LegalHold,
    RequestType,
    StaffUser,
    SubjectIdentity,
    utcnow,
)
from core.operations import find_open_request, hash_email, subject_email, unseal
from core.sealed_files import SealedWriter, open_sealed
from core.staff import pending_totp_secret, totp_secret
from tests.conftest import DPO_EMAIL
from tests.flows import submit, verify_latest

EMAIL = "Rotation.Subject@Example.org"
NEW_DATA, NEW_HASH = os.urandom(32).hex(), os.urandom(32).hex()


def _seed(app, client) -> dict[str, str]:
    """Write a request, a hold, a TOTP secret and an export file under the old keys."""
    submit(client, EMAIL, customer_number="CUST-4711", reason="Please forget me")
    verify_latest(app, client)
    with app.app_context():
        dpo = db.session.scalars(sa.select(StaffUser).where(StaffUser.email == DPO_EMAIL)).one()
        secret = pending_totp_secret(db.session, dpo)
        place_hold(db.session, dpo, ground=retention_grounds()[0], reason="Invoice 99", email=EMAIL)
        request = db.session.scalars(sa.select(DataSubjectRequest)).one()
        package = ExportPackage(
            request=request,
            filename="rotation-test.bin",
            expires_at=utcnow(),
            summary={},
            max_downloads=3,
        )
        db.session.add(package)
        db.session.flush()
        path = package_path(package)
        path.parent.mkdir(parents=True, exist_ok=True)
        with SealedWriter(
            path, bytes.fromhex(app.config["DATA_KEY"]), export_context(package)
        ) as w:
            w.write(b"export contents")
        db.session.commit()
        return {"totp": secret, "data": app.config["DATA_KEY"], "hash": app.config["HASH_KEY"]}


def _sealed_values(app) -> dict[tuple[str, int, str], bytes]:
    """Return every sealed value in the database by (table, id, column)."""
    values = {}
    with app.app_context():
        models = [(SubjectIdentity, ("email_sealed", "email_hash"))]
        models += [(model, columns) for model, columns, _ in sealed_columns()]
        for model, columns in models:
            for row in db.session.scalars(sa.select(model)):
                for column in columns:
                    if getattr(row, column) is not None:
                        values[(model.__tablename__, row.id, column)] = getattr(row, column)
    return values


def _run(app, monkeypatch, *args: str):
    monkeypatch.setenv("LETHE_DATA_KEY_OLD", app.config["_OLD_DATA"])
    monkeypatch.setenv("LETHE_HASH_KEY_OLD", app.config["_OLD_HASH"])
    return app.test_cli_runner().invoke(cli, ["rotate-keys", *args])


def test_rotation_moves_everything_to_the_new_keys_and_a_second_run_changes_nothing(
    app, client, monkeypatch
):
    old = _seed(app, client)
    before = _sealed_values(app)
    app.config.update(
        DATA_KEY=NEW_DATA, HASH_KEY=NEW_HASH, _OLD_DATA=old["data"], _OLD_HASH=old["hash"]
    )

    dry = _run(app, monkeypatch, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "Would re-encrypt" in dry.output and "1 export files" in dry.output
    assert _sealed_values(app) == before  # a dry run writes nothing

    result = _run(app, monkeypatch, "--batch-size", "1")
    assert result.exit_code == 0, result.output
    assert "1 lookup hashes recomputed" in result.output

    old_data, old_hash = bytes.fromhex(old["data"]), bytes.fromhex(old["hash"])
    with app.app_context():
        # Everything reads with the new keys alone ...
        request = db.session.scalars(sa.select(DataSubjectRequest)).one()
        assert subject_email(request) == EMAIL
        assert unseal(request, request.customer_number_sealed) == "CUST-4711"
        assert unseal(request, request.reason_sealed) == "Please forget me"
        dpo = db.session.scalars(sa.select(StaffUser).where(StaffUser.email == DPO_EMAIL)).one()
        assert totp_secret(dpo) == old["totp"]
        hold = db.session.scalars(sa.select(LegalHold)).one()
        assert hold_reason(hold) == "Invoice 99"
        package = db.session.scalars(sa.select(ExportPackage)).one()
        path, context = package_path(package), export_context(package)
        assert b"".join(open_sealed(path, bytes.fromhex(NEW_DATA), context)) == b"export contents"
        # ... a lookup by address still finds the person and their open request ...
        identity = db.session.scalars(
            sa.select(SubjectIdentity).where(SubjectIdentity.email_hash == hash_email(EMAIL))
        ).one()
        assert find_open_request(db.session, identity, RequestType.ERASURE) == request
        # ... and the old keys open nothing and find no one.
        assert identity.email_hash != keyed_hash(old_hash, normalise_email(EMAIL))
        with pytest.raises(DecryptionError):
            b"".join(open_sealed(path, old_data, context))
    after = _sealed_values(app)
    for (table, row_id, column), value in after.items():
        if column != "email_hash":
            with pytest.raises(DecryptionError):
                decrypt(old_data, value, b"")  # wrong context too, but a key check first
            for bound_to in _contexts(app, table, row_id):
                with pytest.raises(DecryptionError):
                    decrypt(old_data, value, bound_to)

    again = _run(app, monkeypatch)
    assert again.exit_code == 0, again.output
    assert "Re-encrypted 0 values and 0 export files" in again.output
    assert _sealed_values(app) == after
    assert b"".join(open_sealed(path, bytes.fromhex(NEW_DATA), context)) == b"export contents"


def _contexts(app, table: str, row_id: int) -> list[bytes]:
    with app.app_context():
        if table == "subject_identity":
            return [db.session.get(SubjectIdentity, row_id).email_hash.encode()]
        for model, _, context_of in sealed_columns():
            if model.__tablename__ == table:
                return [context_of(db.session.get(model, row_id))]
    raise AssertionError(table)


def test_a_new_request_after_rotation_joins_the_open_one(app, client, monkeypatch):
    old = _seed(app, client)
    app.config.update(
        DATA_KEY=NEW_DATA, HASH_KEY=NEW_HASH, _OLD_DATA=old["data"], _OLD_HASH=old["hash"]
    )
    assert _run(app, monkeypatch).exit_code == 0
    submit(client, EMAIL.lower())
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(DataSubjectRequest)) == 1
        assert db.session.scalar(sa.select(sa.func.count()).select_from(SubjectIdentity)) == 1


def test_rotation_refuses_without_old_keys_and_with_a_wrong_old_key(app, client, monkeypatch):
    _seed(app, client)
    monkeypatch.delenv("LETHE_DATA_KEY_OLD", raising=False)
    monkeypatch.delenv("LETHE_HASH_KEY_OLD", raising=False)
    result = app.test_cli_runner().invoke(cli, ["rotate-keys"])
    assert result.exit_code == 1 and "LETHE_DATA_KEY_OLD" in result.output
    before = _sealed_values(app)
    app.config.update(DATA_KEY=NEW_DATA)
    monkeypatch.setenv("LETHE_DATA_KEY_OLD", os.urandom(32).hex())  # not the key in use
    result = app.test_cli_runner().invoke(cli, ["rotate-keys"])
    assert result.exit_code == 1 and "neither the old nor the new key" in result.output
    assert _sealed_values(app) == before
