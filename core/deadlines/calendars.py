"""Calendar arithmetic for deadlines: holiday calendars, month addition, rolling forward.

Calendars come from the ``holidays`` library, never a hand-written list. Callers must not
mutate the cached calendar objects.
"""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from functools import lru_cache

import holidays


@lru_cache(maxsize=64)
def get_calendar(country: str | None, subdivision: str | None = None) -> holidays.HolidayBase:
    """Return the holiday calendar of a country (weekends only when None), cached per process."""
    if country is None:
        return holidays.HolidayBase()
    try:
        return holidays.country_holidays(country.upper(), subdiv=subdivision)
    except NotImplementedError as exc:  # how the library reports unknown countries/subdivisions
        raise ValueError(f"no holiday calendar for {country!r}: {exc}") from None


def add_months(day: date, months: int) -> date:
    """Return the same day number `months` later, or that month's last day if it is shorter."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def roll_forward(day: date, cal: holidays.HolidayBase) -> date:
    """Return `day`, or the next day that is neither a Saturday, a Sunday nor a holiday of `cal`.

    A Saturday worked by a transfer still rolls: the rule is about Saturdays (EU Reg. 1182/71
    art. 3(4), Cal. Code Civ. Proc. §12a), not about the production calendar.
    """
    while day.weekday() >= 5 or day in cal:
        day += timedelta(days=1)
    return day
