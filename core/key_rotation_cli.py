"""The ``lethe rotate-keys`` command."""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext

from core.extensions import db
from core.key_rotation import RotationError, old_keys_from_env, rotate_keys


@click.command("rotate-keys")
@click.option("--dry-run", is_flag=True, help="Count what would change; write nothing.")
@click.option("--batch-size", type=click.IntRange(1), default=500, show_default=True)
@with_appcontext
def rotate_keys_command(dry_run: bool, batch_size: int) -> None:
    """Re-encrypt personal data and recompute lookup hashes from the old keys to the new.

    New keys in LETHE_DATA_KEY / LETHE_HASH_KEY, old ones in LETHE_DATA_KEY_OLD /
    LETHE_HASH_KEY_OLD.  Safe to run again: values already under the new keys are kept.
    """
    try:
        keys = old_keys_from_env()
        report = rotate_keys(db.session, keys, batch_size=batch_size, dry_run=dry_run)
    except RotationError as exc:
        db.session.rollback()
        click.secho(f"rotation stopped: {exc}", fg="red", err=True)
        sys.exit(1)
    verb = "Would re-encrypt" if dry_run else "Re-encrypted"
    click.echo(f"{verb} {sum(report.resealed.values())} values and {report.files} export files;")
    for column, count in sorted(report.resealed.items()):
        click.echo(f"  {column}: {count}")
    click.echo(f"{report.rehashed} lookup hashes recomputed; {report.unchanged} already current.")
    if report.purged_hashes:
        click.echo(
            f"{report.purged_hashes} purged addresses keep their old hash: with the address "
            "gone it cannot be recomputed; a new request from it starts a new record."
        )
    if report.stale_api_keys:
        click.secho(
            f"{report.stale_api_keys} API keys were made under the old LETHE_HASH_KEY and no "
            "longer authenticate: create new ones (lethe create-api-key) and revoke these.",
            fg="yellow",
        )
