"""Fake connectors for unit tests: real subclasses of the connector contract."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

from connectors.base import (
    Action,
    CheckResult,
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


class BatchConnector(OneTableConnector):
    """A system that erases people together (``batch_erase``), counting every call.

    ``calls`` holds ``(verb, people)`` and ``erased`` the addresses erased, across
    instances; the setting ``fail_batch`` makes ``erase_many`` fail as a whole (after
    erasing the first person, as a statement half done would).
    """

    name = "batch"
    batch_erase = True
    calls: ClassVar[list[tuple[str, int]]] = []
    erased: ClassVar[set[str]] = set()

    def plan_many(self, subjects: Sequence[Subject]) -> list[Plan]:
        BatchConnector.calls.append(("plan_many", len(subjects)))
        return [self.plan(subject) for subject in subjects]

    def erase(self, subject: Subject, plan: Plan) -> EraseResult:
        BatchConnector.calls.append(("erase", 1))
        BatchConnector.erased.add(subject.email)
        return EraseResult(Outcome.COMPLETED, rows_affected={self.table: 1})

    def erase_many(self, work: Sequence[tuple[Subject, Plan]]) -> list[EraseResult]:
        BatchConnector.calls.append(("erase_many", len(work)))
        if self.settings.get("fail_batch"):
            BatchConnector.erased.add(work[0][0].email)
            raise ConnectorError(f"{self.system}: the batch statement timed out", transient=True)
        BatchConnector.erased.update(subject.email for subject, _ in work)
        return [EraseResult(Outcome.COMPLETED, rows_affected={self.table: 1}) for _ in work]

    def verify(self, subject: Subject) -> VerifyResult:
        return VerifyResult(remaining={self.table: int(subject.email not in self.erased)})

    def verify_many(self, subjects: Sequence[Subject]) -> list[VerifyResult]:
        BatchConnector.calls.append(("verify_many", len(subjects)))
        return [self.verify(subject) for subject in subjects]


class CountingConnector(OneTableConnector):
    """A system that erases one person at a time (no ``batch_erase``), counting erasures."""

    name = "counting"
    erased: ClassVar[list[str]] = []

    def erase(self, subject: Subject, plan: Plan) -> EraseResult:
        CountingConnector.erased.append(subject.email)
        return EraseResult(Outcome.COMPLETED, rows_affected={self.table: 1})
