"""The ``lethe create-api-key`` and ``lethe revoke-api-key`` commands."""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext

from core.api_keys import ApiKeyError, create_api_key, revoke_api_key
from core.extensions import db
from core.models import Role
from core.staff import find_staff


def _fail(message: str) -> None:
    click.secho(message, fg="red", err=True)
    sys.exit(1)


@click.command("create-api-key")
@click.option("--name", required=True, help="Names the key in lists and the audit log.")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option(
    "--owner",
    help="Address of the staff account that answers for the key's decisions "
    "(shown as the approver on the request page and the proof).",
)
@with_appcontext
def create_api_key_command(name: str, role: str, owner: str | None) -> None:
    """Create an API key with the rights of ROLE; print it once."""
    staff = None
    if owner:
        staff = find_staff(db.session, owner)
        if staff is None or not staff.active:
            _fail(f"there is no active staff account {owner}")
    try:
        key, token = create_api_key(db.session, name, Role(role), "cli", owner=staff)
    except ApiKeyError as exc:
        _fail(str(exc))
    db.session.commit()
    click.echo(f"Created {role} API key {key.name} (id {key.key_id}).")
    click.echo(f"Key (shown once, store it now): {token}")


@click.command("revoke-api-key")
@click.option("--id", "key_id", required=True, help="The key's id, as create-api-key printed.")
@with_appcontext
def revoke_api_key_command(key_id: str) -> None:
    """Revoke an API key: it stops working at once."""
    try:
        key = revoke_api_key(db.session, key_id, "cli")
    except ApiKeyError as exc:
        _fail(str(exc))
    db.session.commit()
    click.echo(f"Revoked API key {key.name} (id {key.key_id}).")
