"""Fake connectors for unit tests: real subclasses of the connector contract."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from connectors.base import (
    Action,
    CheckResult,
    Connector,
    Plan,
    Record,
    Subject,
    TablePlan,
    VerifyResult,
)


class OneTableConnector(Connector):
    """A system holding the person in one table; subclasses say how erasure goes."""

    version = "1"
    table: ClassVar[str] = "records"

    def check(self) -> CheckResult:
        return CheckResult(True, "reachable")

    def plan(self, subject: Subject) -> Plan:
        step = TablePlan(table=self.table, action=Action.DELETE, rows=1, note="")
        return Plan(system=self.system, connector=self.name, steps=[step])

    def export(self, subject: Subject) -> Iterator[Record]:
        return iter(())

    def verify(self, subject: Subject) -> VerifyResult:
        return VerifyResult(remaining={self.table: 0})
