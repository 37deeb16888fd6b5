"""The manual connector: a system kept by hand, whose owner confirms what they did."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.base import Action, ConfigError, ConnectorError, Outcome, Subject
from connectors.manual import STEP, ManualConnector
from core.systems import check_systems, load_systems

PERSON = Subject(email="alice@example.com")
ARCHIVE = """
[systems.archive]
connector = "manual"
label = "Paper archive"
owner = "Archive-Team@example.com"
instructions = "Shred the customer's file in cabinet B; keep invoices (tax law)."
remind_every_days = 3
escalate_after_days = 10
grounds = ["art17-3-b"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "systems.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_manual_system_loads_by_entry_point_and_checks_ok(tmp_path):
    systems = load_systems(write(tmp_path, ARCHIVE))
    assert systems.configs["archive"].label == "Paper archive"
    [check] = check_systems(systems)
    assert check.ok and "archive-team@example.com" in check.message


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (('owner = "Archive-Team@example.com"', ""), "owner", "email address"),
        (('owner = "Archive-Team@example.com"', 'owner = "archive team"'), "owner", "email"),
        (('instructions = "Shred', 'instructions = " "\n#'), "instructions", "what the owner"),
        (("remind_every_days = 3", "remind_every_days = 0"), "remind_every_days", "at least 1"),
        (("escalate_after_days = 10", 'escalate_after_days = "10"'), "escalate_after_days", "days"),
        (('grounds = ["art17-3-b"]', 'grounds = "art17-3-b"'), "grounds", "list"),
        (("grounds", 'action = "retain"\ngrounds'), "action", "delete or anonymise"),
        (("grounds", 'url = "x"\ngrounds'), "url", "unknown setting"),
        (("grounds", 'marketing = "no"\ngrounds'), "marketing", "true or false"),
    ],
)
def test_wrong_settings_stop_the_app_naming_file_system_and_key(tmp_path, change, key, problem):
    path = write(tmp_path, ARCHIVE.replace(*change))
    with pytest.raises(ConfigError) as error:
        load_systems(path)
    assert (error.value.system, error.value.key) == ("archive", key)
    assert str(path) in str(error.value) and problem in str(error.value)


def test_reminders_and_escalation_have_defaults():
    connector = ManualConnector("archive", {"owner": "a@example.com", "instructions": "Shred"})
    assert (connector.config.remind_every_days, connector.config.escalate_after_days) == (3, 10)
    assert connector.config.grounds == () and connector.config.action == Action.DELETE


def connector(**changes) -> ManualConnector:
    settings = {
        "owner": "Archive-Team@example.com",
        "instructions": "Shred the file in cabinet B",
        "action": "anonymise",
        **changes,
    }
    return ManualConnector("archive", settings)


def test_the_plan_is_one_step_done_by_hand_with_rows_unknown():
    plan = connector().plan(PERSON)
    [step] = plan.steps
    assert (plan.system, plan.connector) == ("archive", "manual")
    assert (step.table, step.action, step.rows) == (STEP, Action.ANONYMISE, 0)
    assert step.note == "done by hand by archive-team@example.com: Shred the file in cabinet B"
    assert PERSON.email not in str(plan.to_dict())


def test_erasure_changes_nothing_and_waits_for_the_owner_every_time():
    manual = connector()
    plan = manual.plan(PERSON)
    first, second = manual.erase(PERSON, plan), manual.erase(PERSON, plan)
    assert first == second
    assert first.outcome == Outcome.ACTION_REQUIRED and first.rows_affected == {}
    assert "archive-team@example.com" in first.message
    # No re-scan is possible: the owner's confirmation stands in for it, so nothing remains.
    assert manual.verify(PERSON).remaining == {}


def test_export_asks_the_owner_instead_of_pretending_nothing_is_held():
    with pytest.raises(ConnectorError, match="cannot be exported automatically; ask archive-team"):
        list(connector().export(PERSON))


def test_a_system_kept_by_hand_declares_no_marketing_use_unless_configured():
    result = connector().stop_marketing(PERSON)
    assert result.outcome == Outcome.NOT_FOUND and "marketing" in result.message
    with pytest.raises(ConnectorError, match="archive: .*stop it by hand"):
        connector(marketing=True).stop_marketing(PERSON)
