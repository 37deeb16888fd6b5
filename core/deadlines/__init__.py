"""Compute the legal deadlines of data-subject requests, one rule object per jurisdiction.

Rules (the clocks of the legal brief, deadlines.md):

- ``gdpr-eu``: one month, rolled to a working day; paused days move the date; extension to
  receipt + 3 months. No default country: without one only weekends are skipped, which is
  never later than any member state's date. The app passes ``HOLIDAY_COUNTRY`` (``IE`` unless
  configured).
- ``uk-gdpr``: as ``gdpr-eu`` on England and Wales (GB/ENG), but receiving identity
  information restarts the month from that day (the last pause's end).
- ``ccpa``: 45 calendar days, receipt is day 1, +45 once; no pause; receipt confirmed within
  10 business days; US/CA calendar.
- ``ru-152fz``: 10 working days from the day after receipt, +5 once; RU calendar.
- ``cn-pipl``: 15 working days on the CN calendar and no extension (PIPL has none); a
  deployment picks another period with ``get_rule("cn-pipl").with_days(20)`` and passes that
  rule object wherever a rule name is accepted.

Calendars come from the ``holidays`` library (``country_holidays(country, subdiv=...)``,
public category, ``observed=True``), never from a hand-written list; substitute days are
holidays (Russia's 9 March 2026). Due dates of the month and calendar-day rules roll past
Saturdays, Sundays and holidays. Working-day counts (``ru-152fz``, ``cn-pipl``) follow the
production calendar: the library's ``weekend_workdays`` are working days, so the Russian and
Chinese transfers (a Saturday worked for a bridge day off) count both ways.

A caller's ``country`` overrides the rule's; ``subdivision`` falls back to the rule's only for
the rule's own country (``uk-gdpr`` with ``country="GB"`` is still England and Wales).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from types import MappingProxyType

from core.deadlines.calendars import add_months, get_calendar, roll_forward
from core.deadlines.rules import (
    CalendarDayRule,
    MonthRule,
    NotExtendable,
    Pause,
    PauseMode,
    Rule,
    WorkingDayRule,
)

__all__ = [
    "RULES",
    "CalendarDayRule",
    "MonthRule",
    "NotExtendable",
    "Pause",
    "PauseMode",
    "Rule",
    "UnknownRule",
    "WorkingDayRule",
    "acknowledge_by",
    "add_months",
    "build_rules",
    "can_extend",
    "due_on",
    "get_calendar",
    "get_rule",
    "roll_forward",
]


class UnknownRule(LookupError, ValueError):
    """No deadline rule has this name."""


def build_rules() -> Mapping[str, Rule]:
    """Build the read-only table of the built-in rules, keyed by name."""
    rules = (
        MonthRule(name="gdpr-eu", country=None),
        MonthRule(name="uk-gdpr", country="GB", subdivision="ENG", on_pause=PauseMode.RESTART),
        CalendarDayRule(name="ccpa", country="US", subdivision="CA"),
        WorkingDayRule(name="ru-152fz", country="RU", days=10, extension_days=5),
        WorkingDayRule(name="cn-pipl", country="CN", days=15),
    )
    return MappingProxyType({rule.name: rule for rule in rules})


RULES: Mapping[str, Rule] = build_rules()


def get_rule(name: str) -> Rule:
    """Return the built-in rule called `name`, or raise UnknownRule listing the valid names."""
    try:
        return RULES[name]
    except KeyError:
        valid = ", ".join(sorted(RULES))
        raise UnknownRule(f"unknown deadline rule {name!r}; valid rules: {valid}") from None


def _resolve(rule: str | Rule) -> Rule:
    return rule if isinstance(rule, Rule) else get_rule(rule)


def due_on(
    rule: str | Rule,
    received_on: date,
    *,
    country: str | None = None,
    subdivision: str | None = None,
    pauses: Sequence[Pause] = (),
    extended: bool = False,
) -> date:
    """Return the last day to answer a request received on `received_on` under `rule`."""
    return _resolve(rule).due_on(
        received_on, country=country, subdivision=subdivision, pauses=pauses, extended=extended
    )


def can_extend(
    rule: str | Rule,
    received_on: date,
    today: date,
    *,
    country: str | None = None,
    subdivision: str | None = None,
    pauses: Sequence[Pause] = (),
) -> bool:
    """Say whether `rule`'s extension may still be taken on `today`."""
    return _resolve(rule).can_extend(
        received_on, today, country=country, subdivision=subdivision, pauses=pauses
    )


def acknowledge_by(
    rule: str | Rule,
    received_on: date,
    *,
    country: str | None = None,
    subdivision: str | None = None,
) -> date | None:
    """Return the date by which receipt must be confirmed, or None if `rule` has none."""
    return _resolve(rule).acknowledge_by(received_on, country=country, subdivision=subdivision)
