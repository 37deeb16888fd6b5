"""The ``lethe`` command line."""

import sqlalchemy as sa

from core.audit import verify_chain
from core.cli import cli
from core.extensions import db
from core.models import StaffUser
from core.security import check_password


def test_deadline_prints_the_gdpr_due_date_rolled_past_the_holidays(app):
    result = app.test_cli_runner().invoke(
        cli, ["deadline", "--rule", "gdpr-eu", "--received", "2025-11-25", "--country", "DE"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "2025-12-29"


def test_deadline_rejects_an_unknown_rule(app):
    result = app.test_cli_runner().invoke(
        cli, ["deadline", "--rule", "mars", "--received", "2026-01-01"]
    )
    assert result.exit_code != 0 and "gdpr-eu" in result.output


def test_create_user_prints_a_generated_password_once_and_audits(app):
    runner = app.test_cli_runner()
    result = runner.invoke(
        cli, ["create-user", "--email", "Auditor@Example.com", "--role", "auditor"]
    )
    assert result.exit_code == 0, result.output
    password = result.output.split("store it now): ")[1].strip()
    with app.app_context():
        user = db.session.scalars(
            sa.select(StaffUser).where(StaffUser.email == "auditor@example.com")
        ).one()
        assert check_password(user.password_hash, password)
        assert user.password_hash.startswith("$argon2id$")
        assert verify_chain(db.session).events == 1
    again = runner.invoke(cli, ["create-user", "--email", "auditor@example.com"])
    assert again.exit_code == 1 and "already exists" in again.output


def test_systems_check_and_plan_reach_the_demo_crm(app):
    runner = app.test_cli_runner()
    check = runner.invoke(cli, ["systems", "check"])
    assert check.exit_code == 0, check.output
    assert check.output.startswith("ok   crm (sql)")
    plan = runner.invoke(cli, ["systems", "plan", "alice@example.com"])
    assert plan.exit_code == 0, plan.output
    assert "support_tickets" in plan.output and "delete" in plan.output


def test_systems_check_fails_when_the_database_is_gone(app, tmp_path):
    (tmp_path / "crm.sqlite").unlink()
    result = app.test_cli_runner().invoke(cli, ["systems", "check"])
    assert result.exit_code == 1
    assert "FAIL crm" in result.output
