"""The rule objects: one class per kind of legal clock, one instance per jurisdiction."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from enum import StrEnum

import holidays

from core.deadlines.calendars import add_months, get_calendar, roll_forward

Pause = tuple[date, date]


class NotExtendable(ValueError):
    """The rule has no extension."""


class PauseMode(StrEnum):
    """What a recorded wait for identity information does to a month clock."""

    SHIFT = "shift"  # GDPR: the due date moves by the paused days
    RESTART = "restart"  # UK GDPR: the month runs again from the day the information arrives
    IGNORE = "ignore"  # pausing switched off: the clock runs on


def _check_pauses(received_on: date, pauses: Sequence[Pause]) -> tuple[Pause, ...]:
    """Return the pauses as a tuple, refusing any that end before they start or precede receipt."""
    for asked_on, answered_on in pauses:
        if asked_on < received_on or answered_on < asked_on:
            raise ValueError(
                f"pause {asked_on}..{answered_on} must start on/after receipt {received_on} "
                "and end on/after its start"
            )
    return tuple(pauses)


def _paused_days(pauses: Sequence[Pause]) -> int:
    """Count the days the pauses cover, overlapping ones once."""
    total, covered_to = 0, date.min
    for asked_on, answered_on in sorted(pauses):
        total += max(0, (answered_on - max(asked_on, covered_to)).days)
        covered_to = max(covered_to, answered_on)
    return total


@dataclass(frozen=True, kw_only=True)
class Rule(ABC):
    """A jurisdiction's clock: its length, calendar, pauses and one optional extension."""

    name: str
    country: str | None
    subdivision: str | None = None

    @property
    @abstractmethod
    def extendable(self) -> bool:
        """Say whether the rule allows its one extension."""

    @abstractmethod
    def _due(
        self,
        received_on: date,
        cal: holidays.HolidayBase,
        pauses: tuple[Pause, ...],
        extended: bool,
    ) -> date:
        """Return the due date on an already resolved calendar."""

    def holiday_calendar(
        self, country: str | None = None, subdivision: str | None = None
    ) -> holidays.HolidayBase:
        """Return the holiday calendar to use, the caller's country overriding the default."""
        if country is None or country.upper() == (self.country or ""):
            country, subdivision = self.country, subdivision or self.subdivision
        return get_calendar(country, subdivision)

    def due_on(
        self,
        received_on: date,
        *,
        country: str | None = None,
        subdivision: str | None = None,
        pauses: Sequence[Pause] = (),
        extended: bool = False,
    ) -> date:
        """Return the last day to answer a request received on `received_on`."""
        pauses = _check_pauses(received_on, pauses)
        if extended and not self.extendable:
            raise NotExtendable(f"deadline rule {self.name!r} has no extension")
        return self._due(received_on, self.holiday_calendar(country, subdivision), pauses, extended)

    def can_extend(
        self,
        received_on: date,
        today: date,
        *,
        country: str | None = None,
        subdivision: str | None = None,
        pauses: Sequence[Pause] = (),
    ) -> bool:
        """Say whether the extension may still be taken: only until the first due date passes."""
        first = self.due_on(received_on, country=country, subdivision=subdivision, pauses=pauses)
        return self.extendable and today <= first

    def acknowledge_by(
        self, received_on: date, *, country: str | None = None, subdivision: str | None = None
    ) -> date | None:
        """Return the date by which receipt must be confirmed, or None if the rule has none."""
        return None


@dataclass(frozen=True, kw_only=True)
class MonthRule(Rule):
    """GDPR-style clock: a month, once extendable by two, pausable, rolled to a working day.

    `on_pause` says what recorded waits for identity information do: SHIFT adds the paused
    days (overlaps counted once) before rolling, RESTART counts the months from the last
    pause's end, IGNORE (pausing switched off) leaves the date alone.
    """

    months: int = 1
    extension_months: int = 2
    on_pause: PauseMode = PauseMode.SHIFT

    @property
    def extendable(self) -> bool:
        """Say whether the rule allows its one extension."""
        return self.extension_months > 0

    def _due(self, received_on, cal, pauses, extended):
        start, shift = received_on, 0
        if pauses and self.on_pause is PauseMode.SHIFT:
            shift = _paused_days(pauses)
        elif pauses and self.on_pause is PauseMode.RESTART:
            start = max(answered_on for _, answered_on in pauses)
        months = self.months + (self.extension_months if extended else 0)
        return roll_forward(add_months(start, months) + timedelta(days=shift), cal)


@dataclass(frozen=True, kw_only=True)
class CalendarDayRule(Rule):
    """CCPA-style clock: calendar days with receipt as day 1, no pause, rolled to a working day.

    Pauses are ignored: 11 CCR §7021(b) runs the 45 days regardless of verification time.
    A last day on a weekend or holiday moves to the next business day (Cal. Code Civ. Proc.
    §12a). Receipt is confirmed within `acknowledge_days` business days after receipt.
    """

    days: int = 45
    extension_days: int = 45
    acknowledge_days: int | None = 10

    @property
    def extendable(self) -> bool:
        """Say whether the rule allows its one extension."""
        return self.extension_days > 0

    def _due(self, received_on, cal, pauses, extended):
        days = self.days + (self.extension_days if extended else 0)
        return roll_forward(received_on + timedelta(days=days - 1), cal)

    def acknowledge_by(self, received_on, *, country=None, subdivision=None):
        """Return the date by which receipt must be confirmed."""
        if self.acknowledge_days is None:
            return None
        cal = self.holiday_calendar(country, subdivision)
        return cal.get_nth_working_day(received_on, self.acknowledge_days)


@dataclass(frozen=True, kw_only=True)
class WorkingDayRule(Rule):
    """Working-day clock counted from the day after receipt; pauses are ignored.

    The extension adds `extension_days` working days to the first due date; None means the
    rule has no extension (cn-pipl: PIPL sets no period and provides none).
    """

    days: int
    extension_days: int | None = None

    @property
    def extendable(self) -> bool:
        """Say whether the rule allows its one extension."""
        return bool(self.extension_days)

    def with_days(self, days: int, extension_days: int | None = None) -> WorkingDayRule:
        """Return a copy of the rule with another period, e.g. a deployment's PIPL policy."""
        return replace(self, days=days, extension_days=extension_days)

    def _due(self, received_on, cal, pauses, extended):
        due = cal.get_nth_working_day(received_on, self.days)
        return cal.get_nth_working_day(due, self.extension_days) if extended else due
