"""The ``lethe`` command: a Flask CLI group with Lethe's own commands."""

from __future__ import annotations

import secrets
import sys
from datetime import date
from pathlib import Path

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from connectors.base import ConfigError, ConnectorError, Subject
from core import create_app, deadlines
from core.audit import record_event, verify_chain
from core.config import ConfigurationError
from core.crypto import keyed_hash, normalise_email
from core.extensions import db
from core.models import Role, StaffUser
from core.security import hash_password


def _fail(message: str) -> None:
    click.secho(message, fg="red", err=True)
    sys.exit(1)


@click.command("create-user")
@click.option("--email", required=True, help="The staff member's sign-in address.")
@click.option(
    "--role", type=click.Choice([r.value for r in Role]), default=Role.DPO.value, show_default=True
)
@click.option("--password", help="Leave out to generate one, printed once.")
@with_appcontext
def create_user(email: str, role: str, password: str | None) -> None:
    """Create a staff account."""
    email = email.strip().lower()
    if db.session.scalars(sa.select(StaffUser).where(StaffUser.email == email)).first():
        _fail(f"a staff account for {email} already exists")
    generated = password is None
    password = password or secrets.token_urlsafe(12)
    db.session.add(StaffUser(email=email, password_hash=hash_password(password), role=Role(role)))
    record_event(db.session, "cli", "staff.created", role=role, staff=email)
    db.session.commit()
    click.echo(f"Created {role} account {email}.")
    if generated:
        click.echo(f"Password (shown once, store it now): {password}")


@click.group("systems")
def systems_group() -> None:
    """Check the connected systems and preview plans."""


@systems_group.command("check")
@with_appcontext
def systems_check() -> None:
    """Reach every system in systems.toml and validate its configuration."""
    systems = current_app.extensions["lethe.systems"]
    if not len(systems):
        _fail(f"no systems configured in {current_app.config['SYSTEMS_FILE']}")
    failed = False
    for system in systems:
        try:
            with systems.open(system.name) as connector:
                result = connector.check()
        except ConfigError as exc:
            result_ok, message = False, str(exc)
        else:
            result_ok, message = result.ok, result.message
        failed |= not result_ok
        click.echo(
            f"{'ok  ' if result_ok else 'FAIL'} {system.name} ({system.connector}): {message}"
        )
    if failed:
        sys.exit(1)


@systems_group.command("plan")
@click.argument("email")
@with_appcontext
def systems_plan(email: str) -> None:
    """Show what erasing EMAIL would do in every system, without changing anything."""
    systems = current_app.extensions["lethe.systems"]
    email_hash = keyed_hash(bytes.fromhex(current_app.config["HASH_KEY"]), normalise_email(email))
    subject = Subject(email=email, email_hash=email_hash)
    for system in systems:
        try:
            with systems.open(system.name) as connector:
                plan = connector.plan(subject)
        except (ConfigError, ConnectorError) as exc:
            _fail(f"{system.name}: {exc}")
        click.echo(f"{system.name} ({system.connector}): {plan.total_rows} rows")
        for step in plan.steps:
            details = ", ".join(f"{c}={m}" for c, m in step.columns.items())
            ground = f" [kept under {step.ground}]" if step.ground else ""
            click.echo(f"  {step.action:<9} {step.rows:>6}  {step.table}  {details}{ground}")
        for warning in plan.warnings:
            click.secho(f"  warning: {warning}", fg="yellow")


@click.command("deadline")
@click.option(
    "--rule", default="gdpr-eu", show_default=True, type=click.Choice(sorted(deadlines.RULES))
)
@click.option(
    "--received",
    required=True,
    type=click.DateTime(["%Y-%m-%d"]),
    help="Day the request reached the controller (YYYY-MM-DD).",
)
@click.option("--country", help="Holiday calendar, e.g. DE, GB (default: the rule's).")
@click.option("--subdivision", help="Region of the calendar, e.g. ENG.")
@click.option("--extended", is_flag=True, help="Print the due date after the one extension.")
def deadline(
    rule: str, received, country: str | None, subdivision: str | None, extended: bool
) -> None:
    """Print the legal due date of a request received on a given day."""
    received_on: date = received.date()
    click.echo(
        deadlines.due_on(
            rule, received_on, country=country, subdivision=subdivision, extended=extended
        ).isoformat()
    )


@click.group("audit")
def audit_group() -> None:
    """Inspect the audit log."""


@audit_group.command("verify")
@with_appcontext
def audit_verify() -> None:
    """Recompute the audit hash chain and report the first break."""
    check = verify_chain(db.session)
    if not check.ok:
        _fail(f"audit chain BROKEN after {check.events - 1} good events: {check.problem}")
    click.echo(f"audit chain intact: {check.events} events, head {check.head_hash}")


@click.group("proof")
def proof_group() -> None:
    """Check proofs of deletion."""


@proof_group.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@with_appcontext
def proof_verify(file: Path) -> None:
    """Say whether a proof-of-deletion PDF is authentic and untouched."""
    from core.proof_issue import check_proof

    check = check_proof(db.session, file.read_bytes())
    if not check.authentic:
        _fail("NOT AUTHENTIC: " + "; ".join(check.reasons))
    click.echo(
        f"authentic: {check.content['reference']}, signed by key {check.key_id}, "
        f"fingerprint {check.fingerprint}"
    )
    for reason in check.reasons:
        click.echo(f"  {reason}")


@click.command("worker")
@click.option(
    "--beat/--no-beat",
    default=False,
    help="Also run the scheduler in this process (one per deployment).",
)
@click.option("--concurrency", type=int, default=1, show_default=True)
@with_appcontext
def worker(beat: bool, concurrency: int) -> None:
    """Run a job worker (any number, on any machine sharing the broker)."""
    argv = ["worker", "--loglevel=INFO", f"--concurrency={concurrency}"]
    if concurrency == 1:
        argv.append("--pool=solo")
    if beat:
        argv.append("--beat")
    current_app.extensions["celery"].worker_main(argv)


@click.group("demo")
def demo_group() -> None:
    """Set up the demo CRM used by ``make run``."""


@demo_group.command("setup")
@with_appcontext
def demo_setup() -> None:
    """Create the demo CRM, a demo systems.toml and a DPO account, once."""
    from core.demo import create_demo_crm, demo_systems_toml

    instance = Path(current_app.instance_path)
    crm = instance / "demo_crm.sqlite"
    systems_file = Path(current_app.config["SYSTEMS_FILE"])
    if not crm.exists():
        count = create_demo_crm(f"sqlite:///{crm}")
        click.echo(f"Demo CRM with {count} customers created in {crm}.")
    if not systems_file.exists():
        systems_file.write_text(demo_systems_toml(f"sqlite:///{crm}"), encoding="utf-8")
        click.echo(f"Demo systems written to {systems_file}.")
    if not db.session.scalars(sa.select(StaffUser).limit(1)).first():
        password = secrets.token_urlsafe(12)
        email = "dpo@example.com"
        db.session.add(StaffUser(email=email, password_hash=hash_password(password), role=Role.DPO))
        record_event(db.session, "cli", "staff.created", role="dpo", staff=email)
        db.session.commit()
        click.secho(f"DPO account: {email}  password: {password}  (shown once)", fg="green")


def register_commands(group: click.Group) -> None:
    """Add Lethe's commands to a Flask CLI group."""
    for command in (
        create_user,
        systems_group,
        deadline,
        audit_group,
        proof_group,
        worker,
        demo_group,
    ):
        group.add_command(command)


@click.group(cls=FlaskGroup, create_app=create_app)
def cli() -> None:
    """Lethe: data-subject requests, erasure across systems, proof of deletion."""


register_commands(cli)


def main() -> None:
    """Run the ``lethe`` command; configuration mistakes end it with their message alone."""
    try:
        cli.main(prog_name="lethe", standalone_mode=True)
    except (ConfigurationError, ConfigError) as exc:
        _fail(f"lethe cannot start: {exc}")
