"""The deadline engine against the worked examples of the legal brief (deadlines.md)."""

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.deadlines import (
    RULES,
    NotExtendable,
    UnknownRule,
    WorkingDayRule,
    acknowledge_by,
    add_months,
    can_extend,
    due_on,
    get_calendar,
    get_rule,
)

D = date
DAY = timedelta(days=1)
PAUSE = [(D(2026, 3, 3), D(2026, 3, 10))]


@pytest.mark.parametrize(
    ("country", "subdivision", "day"),
    [
        (country, subdivision, day)
        for country, subdivision in [("GB", "ENG"), ("IE", None), ("DE", None)]
        for day in [D(2025, 12, 25), D(2025, 12, 26)]
    ]
    + [("GB", "ENG", D(2026, 4, 3)), ("GB", "ENG", D(2026, 4, 6)), ("RU", None, D(2026, 3, 9))],
)
def test_calendars_hold_the_holidays_the_examples_assume(country, subdivision, day):
    assert day in get_calendar(country, subdivision)


# rows of the table: (received, due, extended due)
UK_ROW = (D(2026, 3, 5), D(2026, 4, 7), D(2026, 6, 5))
GDPR_ROWS = [
    (D(2025, 8, 31), D(2025, 9, 30), D(2025, 12, 1)),
    (D(2026, 1, 31), D(2026, 3, 2), D(2026, 4, 30)),
    (D(2024, 1, 31), D(2024, 2, 29), D(2024, 4, 30)),
    (D(2025, 11, 25), D(2025, 12, 29), D(2026, 2, 25)),
]
CALENDARS = [("gdpr-eu", "IE", None), ("gdpr-eu", "DE", None), ("uk-gdpr", None, None)]


@pytest.mark.parametrize(
    ("rule", "country", "subdivision", "row"),
    [("gdpr-eu", "GB", "ENG", UK_ROW), ("uk-gdpr", None, None, UK_ROW)]
    + [(*calendar, row) for calendar in CALENDARS for row in GDPR_ROWS],
)
def test_gdpr_worked_examples(rule, country, subdivision, row):
    received, due, extended = row
    where = {"country": country, "subdivision": subdivision}
    assert due_on(rule, received, **where) == due
    assert due_on(rule, received, extended=True, **where) == extended
    assert acknowledge_by(rule, received, **where) is None


def test_ccpa_worked_example():
    received = D(2026, 3, 2)
    assert due_on("ccpa", received) == D(2026, 4, 15)
    assert acknowledge_by("ccpa", received) == D(2026, 3, 16)
    # 45 days after 15 April is Saturday 30 May; Monday 1 June is the next business day
    assert due_on("ccpa", received, extended=True) == D(2026, 6, 1)


def test_ccpa_has_no_pause():
    assert due_on("ccpa", D(2026, 3, 2), pauses=PAUSE) == D(2026, 4, 15)


def test_ru_worked_example():
    assert due_on("ru-152fz", D(2026, 3, 2)) == D(2026, 3, 17)
    assert due_on("ru-152fz", D(2026, 3, 2), extended=True) == D(2026, 3, 24)
    assert acknowledge_by("ru-152fz", D(2026, 3, 2)) is None


def test_ru_counts_a_transferred_saturday_as_a_working_day():
    # Sat 1 Nov 2025 was worked; Mon 3 and Tue 4 Nov were days off
    assert due_on("ru-152fz", D(2025, 10, 30)) == D(2025, 11, 14)


def test_cn_counts_working_days_with_transfers_and_is_configurable():
    # Spring Festival 2026: Sat 14 and Sat 28 Feb worked, 16-20 and 23 Feb off
    assert due_on("cn-pipl", D(2026, 2, 13)) == D(2026, 3, 12)
    assert due_on(get_rule("cn-pipl").with_days(20), D(2026, 2, 13)) == D(2026, 3, 19)


def test_cn_has_no_extension_unless_configured():
    received = D(2026, 2, 13)
    assert not can_extend("cn-pipl", received, received)
    with pytest.raises(NotExtendable, match="cn-pipl"):
        due_on("cn-pipl", received, extended=True)
    rule = get_rule("cn-pipl").with_days(15, extension_days=15)
    assert can_extend(rule, received, received)
    assert due_on(rule, received, extended=True) == D(2026, 4, 2)


def test_gdpr_pause_moves_the_due_date_by_the_paused_days():
    assert due_on("gdpr-eu", D(2026, 3, 2), country="IE", pauses=PAUSE) == D(2026, 4, 9)


def test_uk_gdpr_restarts_the_month_when_the_information_arrives():
    assert due_on("uk-gdpr", D(2026, 3, 2), pauses=PAUSE) == D(2026, 4, 10)
    second = [*PAUSE, (D(2026, 3, 12), D(2026, 3, 16))]
    assert due_on("uk-gdpr", D(2026, 3, 2), pauses=second) == D(2026, 4, 16)


def test_overlapping_pauses_count_once():
    overlapping = [*PAUSE, (D(2026, 3, 5), D(2026, 3, 8))]
    assert due_on("gdpr-eu", D(2026, 3, 2), country="IE", pauses=overlapping) == D(2026, 4, 9)


@pytest.mark.parametrize(
    "pause", [(D(2026, 3, 1), D(2026, 3, 10)), (D(2026, 3, 10), D(2026, 3, 3))]
)
def test_impossible_pauses_are_refused(pause):
    with pytest.raises(ValueError, match="pause"):
        due_on("gdpr-eu", D(2026, 3, 2), pauses=[pause])


@pytest.mark.parametrize(
    ("rule", "received", "due"),
    [
        ("uk-gdpr", D(2026, 3, 5), D(2026, 4, 7)),
        ("ccpa", D(2026, 3, 2), D(2026, 4, 15)),
        ("ru-152fz", D(2026, 3, 2), D(2026, 3, 17)),
    ],
)
def test_extension_only_until_the_first_due_date_passes(rule, received, due):
    assert can_extend(rule, received, due - DAY)
    assert can_extend(rule, received, due)
    assert not can_extend(rule, received, due + DAY)


def test_can_extend_follows_a_paused_due_date():
    assert can_extend("gdpr-eu", D(2026, 3, 2), D(2026, 4, 9), country="IE", pauses=PAUSE)
    assert not can_extend("gdpr-eu", D(2026, 3, 2), D(2026, 4, 9), country="IE")


def test_unknown_rule_names_the_valid_ones():
    with pytest.raises(UnknownRule) as excinfo:
        due_on("gdpr", D(2026, 3, 2))
    assert isinstance(excinfo.value, ValueError)
    assert isinstance(excinfo.value, LookupError)
    for name in ("gdpr-eu", "uk-gdpr", "ccpa", "ru-152fz", "cn-pipl"):
        assert name in str(excinfo.value)


def test_unknown_country_is_refused():
    with pytest.raises(ValueError, match="XX"):
        due_on("gdpr-eu", D(2026, 3, 2), country="XX")


def test_rules_are_read_only():
    with pytest.raises(TypeError):
        RULES["mine"] = RULES["gdpr-eu"]  # type: ignore[index]


def test_gdpr_eu_without_a_country_skips_weekends_only():
    # never later than a member state's date: Christmas is not assumed
    assert due_on("gdpr-eu", D(2025, 11, 25)) == D(2025, 12, 25)
    assert due_on("gdpr-eu", D(2026, 1, 31)) == D(2026, 3, 2)


def test_a_transferred_working_saturday_still_rolls_a_gdpr_date():
    # China worked Sat 10 Oct 2020, but a one-month GDPR period ending that day still rolls
    assert due_on("gdpr-eu", D(2020, 9, 10), country="CN") == D(2020, 10, 12)


def test_own_country_keeps_the_rules_subdivision():
    # plain GB lacks Easter Monday; uk-gdpr given "gb" still means England and Wales
    assert due_on("uk-gdpr", D(2026, 3, 5), country="gb") == D(2026, 4, 7)
    assert due_on("uk-gdpr", D(2026, 3, 5), country="GB", subdivision="SCT") == D(2026, 4, 6)


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (D(2025, 8, 31), 1, D(2025, 9, 30)),
        (D(2024, 1, 31), 1, D(2024, 2, 29)),
        (D(2025, 1, 31), 1, D(2025, 2, 28)),
        (D(2025, 12, 31), 1, D(2026, 1, 31)),
        (D(2025, 11, 30), 3, D(2026, 2, 28)),
        (D(2026, 3, 15), 12, D(2027, 3, 15)),
    ],
)
def test_add_months(start, months, expected):
    assert add_months(start, months) == expected


# properties over every rule and calendar

DATES = st.dates(min_value=D(2020, 1, 1), max_value=D(2030, 12, 31))
PROPERTIES = settings(max_examples=150, deadline=None, database=None)


def assert_working_day(rule, day, country=None):
    calendar = get_rule(rule).holiday_calendar(country)
    assert day not in calendar
    if isinstance(get_rule(rule), WorkingDayRule):  # production calendar: transfers count
        assert day.weekday() < 5 or day in calendar.weekend_workdays
    else:  # a Saturday always rolls, even one worked by transfer
        assert day.weekday() < 5


@PROPERTIES
@given(rule=st.sampled_from(sorted(RULES)), received=DATES)
def test_due_dates_are_working_days_after_receipt(rule, received):
    due = due_on(rule, received)
    assert due > received
    assert_working_day(rule, due)
    if get_rule(rule).extendable:
        extended = due_on(rule, received, extended=True)
        assert extended >= due
        assert_working_day(rule, extended)
        assert can_extend(rule, received, due)
        assert not can_extend(rule, received, due + DAY)


@PROPERTIES
@given(country=st.sampled_from(["IE", "DE", "FR", "GB", "RU", "CN", "US"]), received=DATES)
def test_gdpr_due_dates_are_working_days_of_the_given_country(country, received):
    due = due_on("gdpr-eu", received, country=country)
    assert due > received
    assert_working_day("gdpr-eu", due, country)
    assert due >= due_on("gdpr-eu", received)  # weekends-only default is never later


@PROPERTIES
@given(
    rule=st.sampled_from(["gdpr-eu", "uk-gdpr"]),
    received=DATES,
    asked_after=st.integers(0, 20),
    waited=st.integers(0, 60),
)
def test_pauses_never_bring_the_due_date_forward(rule, received, asked_after, waited):
    asked = received + asked_after * DAY
    answered = asked + waited * DAY
    paused = due_on(rule, received, pauses=[(asked, answered)])
    assert paused >= due_on(rule, received)
    assert_working_day(rule, paused)


@PROPERTIES
@given(received=DATES)
def test_ccpa_confirmation_comes_before_the_answer(received):
    confirm_by = acknowledge_by("ccpa", received)
    assert received < confirm_by < due_on("ccpa", received)
    assert_working_day("ccpa", confirm_by)
