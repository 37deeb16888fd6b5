"""The built-in manual connector: a system with no API, where a person does the erasure.

A paper archive or a department's spreadsheet cannot be reached by code.  The plan says
what its owner must do; erasure changes nothing itself and leaves the run waiting
(``action_required``).  Lethe (``core.manual_tasks``) emails the owner a signed link where
they confirm what they did, reminds them and escalates to the DPO; their confirmation
closes the run and stands in the proof where a re-scan would stand for other systems.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from connectors.base import (
    Action,
    CheckResult,
    ConfigError,
    Connector,
    ConnectorError,
    EraseResult,
    Outcome,
    Plan,
    Record,
    Subject,
    TablePlan,
    VerifyResult,
)

#: The one step of every manual plan, and the key the owner's count is recorded under.
STEP = "done by hand"
KEYS = frozenset(
    {
        "owner",
        "instructions",
        "action",
        "remind_every_days",
        "escalate_after_days",
        "grounds",
        "marketing",
    }
)


@dataclass(frozen=True)
class ManualSettings:
    """Who acts in a manual system, what they are told, and how they are chased."""

    owner: str
    instructions: str
    action: Action
    remind_every_days: int
    escalate_after_days: int
    #: The Art. 17(3) grounds under which the owner may report data as kept.
    grounds: tuple[str, ...]
    #: Whether the records are used for direct marketing (then an objection needs a person).
    marketing: bool = False


def _days(system: str, settings: Mapping[str, Any], key: str, default: int) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(system, key, "must be a whole number of days, at least 1")
    return value


def parse_settings(system: str, settings: Mapping[str, Any]) -> ManualSettings:
    """Return the settings of one manual system; raise ConfigError naming the wrong key."""
    unknown = set(settings) - KEYS
    if unknown:
        raise ConfigError(system, sorted(unknown)[0], "unknown setting of the manual connector")
    owner = settings.get("owner")
    if not isinstance(owner, str) or "@" not in owner.strip(" @") or " " in owner.strip():
        raise ConfigError(system, "owner", "required: the email address of who acts, as text")
    instructions = settings.get("instructions")
    if not isinstance(instructions, str) or not instructions.strip():
        raise ConfigError(system, "instructions", "required: what the owner must do, as text")
    try:
        action = Action(settings.get("action", "delete"))
    except ValueError:
        action = None
    if action not in (Action.DELETE, Action.ANONYMISE):
        raise ConfigError(
            system, "action", "must be delete or anonymise (keep a system with a legal hold)"
        )
    remind = _days(system, settings, "remind_every_days", 3)
    escalate = _days(system, settings, "escalate_after_days", 10)
    grounds = settings.get("grounds", [])
    if not (isinstance(grounds, list) and all(isinstance(g, str) and g for g in grounds)):
        raise ConfigError(system, "grounds", 'must be a list of ground codes, e.g. ["art17-3-b"]')
    marketing = settings.get("marketing", False)
    if not isinstance(marketing, bool):
        raise ConfigError(system, "marketing", "must be true or false")
    return ManualSettings(
        owner.strip().lower(),
        instructions.strip(),
        action,
        remind,
        escalate,
        tuple(grounds),
        marketing,
    )


class ManualConnector(Connector):
    """A system a person erases by hand, confirmed through an emailed link."""

    name = "manual"
    version = "1"

    def __init__(self, system: str, settings: Mapping[str, Any]):
        super().__init__(system, settings)
        self.config = parse_settings(system, settings)

    def check(self) -> CheckResult:
        """Return ok: there is nothing to reach, only a person to email."""
        return CheckResult(True, f"done by hand by {self.config.owner}; nothing to connect to")

    def plan(self, subject: Subject) -> Plan:
        """Return the one step a person must do; how many records they hold is unknown."""
        step = TablePlan(
            table=STEP,
            action=self.config.action,
            rows=0,
            via="a person",
            note=f"done by hand by {self.config.owner}: {self.config.instructions}",
        )
        return Plan(system=self.system, connector=self.name, steps=[step])

    def export(self, subject: Subject) -> Iterator[Record]:
        """Raise: nobody can read a paper archive for us."""
        raise ConnectorError(
            f"{self.system}: a system kept by hand cannot be exported automatically; "
            f"ask {self.config.owner} for a copy of what they hold"
        )

    def erase(self, subject: Subject, plan: Plan) -> EraseResult:
        """Change nothing and leave the run waiting for the owner's confirmation."""
        return EraseResult(
            Outcome.ACTION_REQUIRED, message=f"waiting for {self.config.owner} to confirm"
        )

    def verify(self, subject: Subject) -> VerifyResult:
        """Return nothing found: a person's records cannot be re-scanned.

        The owner's confirmation, recorded in the run and shown in the proof, stands in for
        the re-scan; until it arrives the run waits as ``action_required`` and is not clean.
        """
        return VerifyResult()

    def stop_marketing(self, subject: Subject) -> EraseResult:
        """Report no marketing use unless the settings declare some (``marketing = true``).

        Like a SQL system without ``marketing``, a system kept by hand is declared not to
        be used for direct marketing.  One that is fails the run, so that staff act.
        """
        if self.config.marketing:
            return super().stop_marketing(subject)
        return EraseResult(
            Outcome.NOT_FOUND, message="kept by hand; declared not to be used for marketing"
        )
