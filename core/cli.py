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
from core.api_cli import create_api_key_command, revoke_api_key_command
from core.audit import record_event, verify_chain
from core.config import ConfigurationError
from core.crypto import keyed_hash, normalise_email
from core.extensions import db
from core.key_rotation_cli import rotate_keys_command
from core.models import Role, StaffUser
from core.security import hash_password
from core.staff import StaffError, create_staff, find_staff, unlock_staff
from core.systems import check_systems


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
    try:
        user, generated = create_staff(db.session, "cli", email, Role(role), password)
    except StaffError as exc:
        _fail(str(exc))
    db.session.commit()
    click.echo(f"Created {role} account {user.email}.")
    if generated:
        click.echo(f"Password (shown once, store it now): {generated}")


@click.command("unlock-user")
@click.option("--email", required=True, help="The staff member's sign-in address.")
@with_appcontext
def unlock_user(email: str) -> None:
    """Lift the lock that repeated sign-in failures put on a staff account."""
    user = find_staff(db.session, email)
    if user is None:
        _fail(f"there is no staff account for {email.strip().lower()}")
    unlock_staff(db.session, "cli", user)
    db.session.commit()
    click.echo(f"Unlocked {user.email}; it can sign in again.")


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
    for check in check_systems(systems):
        failed |= not check.ok
        click.echo(
            f"{'ok  ' if check.ok else 'FAIL'} {check.name} ({check.connector}): {check.message}"
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
    _report_signed(check, check.content.get("reference") if check.authentic else "")


@click.group("keys")
def keys_group() -> None:
    """List and rotate the keys that sign proofs."""


@keys_group.command("list")
@with_appcontext
def keys_list() -> None:
    """Print every key that signed proofs: the current one, then the retired ones."""
    from core.keyring import published_keys

    for key in published_keys():
        retired = f", retired {key.retired}" if key.retired else ""
        click.echo(f"{key.key_id}  {key.algorithm}  {key.status:<7}  since {key.since}{retired}")


@keys_group.command("rotate")
@with_appcontext
def keys_rotate() -> None:
    """Sign new proofs with a new key; keep the old public key so old proofs still verify."""
    from core.keyring import rotate_signing_key

    try:
        retired, new = rotate_signing_key(db.session, "cli")
    except OSError as exc:
        _fail(f"the signing key could not be rotated: {exc}")
    db.session.commit()
    click.echo(f"Retired key {retired.key_id}; it still verifies the proofs it signed.")
    click.echo(f"New proofs are signed with key {new.key_id}.")


def _report_signed(check, what: str) -> None:
    """Print whether a signed PDF is authentic, and why not; exit 1 if it is not."""
    if not check.authentic:
        _fail("NOT AUTHENTIC: " + "; ".join(check.reasons))
    click.echo(f"authentic: {what}, signed by key {check.key_id}, fingerprint {check.fingerprint}")
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


@click.command("scheduler")
@with_appcontext
def scheduler() -> None:
    """Run the scheduler alone (exactly one per deployment), when workers run without --beat."""
    current_app.extensions["celery"].start(["beat", "--loglevel=INFO"])


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


@click.group("report")
def report_group() -> None:
    """Export metrics reports."""


@report_group.command("yearly")
@click.option(
    "--year", required=True, type=click.IntRange(1970, 9999), help="The calendar year, e.g. 2026."
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the CSV to this file instead of printing it.",
)
@with_appcontext
def report_yearly(year: int, output: Path | None) -> None:
    """Print the yearly metrics (CCPA §7102) of the requests received in YEAR, as CSV."""
    from core.metrics import yearly_report, yearly_report_csv

    text = yearly_report_csv(yearly_report(db.session, year))
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8", newline="")
    click.echo(f"Wrote the {year} report to {output}.", err=True)


@click.command("remind-dpos")
@click.option("--force", is_flag=True, help="Send even if today's digest has already gone out.")
@with_appcontext
def remind_dpos(force: bool) -> None:
    """Email DPOs and admins today's digest of overdue and soon-due requests now."""
    from core.reminders import Outcome, send_dpo_reminders

    run = send_dpo_reminders(db.session, force=force, actor="cli")
    counts = ", ".join(f"{n} {key.replace('_', ' ')}" for key, n in (run.counts or {}).items())
    messages = {
        Outcome.SENT: f"Sent the digest of {run.day} ({counts}) to {run.sent} recipient(s).",
        Outcome.ALREADY_SENT: f"The digest of {run.day} has already gone out; --force resends.",
        Outcome.NOTHING_DUE: f"Nothing overdue or due within 7 days on {run.day}: no email.",
    }
    if run.outcome in messages:
        click.echo(messages[run.outcome])
    elif run.outcome == Outcome.NO_RECIPIENTS:
        _fail(f"requests are due ({counts}) but there is no active DPO or admin to tell")
    else:
        _fail(f"the digest could not be sent to any of {run.failed} recipient(s); see the log")
    if run.failed and run.outcome == Outcome.SENT:
        _fail(f"{run.failed} recipient(s) could not be reached; see the log")


@click.group("bulk")
def bulk_group() -> None:
    """Check the signed summaries of bulk erasures."""


@bulk_group.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@with_appcontext
def bulk_verify(file: Path) -> None:
    """Say whether a bulk erasure summary PDF is authentic and untouched."""
    from core.bulk_summary import check_summary

    check = check_summary(db.session, file.read_bytes())
    content = check.content if check.authentic else {}
    _report_signed(check, f"{content.get('reference')}, {content.get('people')} people")


def register_commands(group: click.Group) -> None:
    """Add Lethe's commands to a Flask CLI group."""
    for command in (
        create_user,
        unlock_user,
        systems_group,
        deadline,
        audit_group,
        proof_group,
        keys_group,
        worker,
        scheduler,
        demo_group,
        report_group,
        remind_dpos,
        bulk_group,
        create_api_key_command,
        revoke_api_key_command,
        rotate_keys_command,
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
