"""loyalty.domain.dates: RFC 3339 in, UTC `Z` out, lifetimes (altcraft-api.md §2 "Dates", program-file.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loyalty.domain.dates import add_months_end, format_datetime, lifetime_expiry, parse_datetime
from loyalty.domain.errors import InvalidParameter


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-09-01T12:34:56Z", datetime(2024, 9, 1, 12, 34, 56, tzinfo=UTC)),
        ("2024-09-01T12:34:56z", datetime(2024, 9, 1, 12, 34, 56, tzinfo=UTC)),
        ("2024-09-01T12:34:56+03:00", datetime(2024, 9, 1, 9, 34, 56, tzinfo=UTC)),
        ("2024-09-01T01:00:00-05:30", datetime(2024, 9, 1, 6, 30, 0, tzinfo=UTC)),
        ("2024-09-01T00:30:00+03:00", datetime(2024, 8, 31, 21, 30, 0, tzinfo=UTC)),
        ("2024-09-01T12:34:56.250Z", datetime(2024, 9, 1, 12, 34, 56, 250000, tzinfo=UTC)),
        ("  2024-09-01T12:34:56+00:00 ", datetime(2024, 9, 1, 12, 34, 56, tzinfo=UTC)),
    ],
)
def test_parse_datetime_with_offset_gives_aware_utc(text, expected):
    parsed = parse_datetime(text, "created_at")
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["2024-09-01T12:34:56", "2024-09-01 12:34:56", "2024-09-01T12:34:56.123"])
def test_parse_datetime_without_offset_is_refused(text):
    with pytest.raises(InvalidParameter) as info:
        parse_datetime(text, "registration_date")
    assert info.value.parameter == "registration_date"
    assert info.value.error == 400


@pytest.mark.parametrize("value", ["2024-09-01", "", "   ", "yesterday", "2024-13-01T00:00:00Z",
                                   "2024-02-30T00:00:00Z", "2024-09-01T25:00:00Z", 1725190496, None,
                                   datetime(2024, 9, 1, tzinfo=UTC), ["2024-09-01T12:34:56Z"]])
def test_parse_datetime_refuses_non_dates_and_date_only(value):
    with pytest.raises(InvalidParameter) as info:
        parse_datetime(value, "date_from")
    assert info.value.parameter == "date_from"


def test_format_datetime_writes_utc_with_z():
    moment = datetime(2024, 9, 1, 15, 34, 56, tzinfo=timezone(timedelta(hours=3)))
    assert format_datetime(moment) == "2024-09-01T12:34:56Z"
    assert format_datetime(datetime(2024, 1, 2, 3, 4, 5, 123, tzinfo=UTC)) == "2024-01-02T03:04:05.000123Z"
    assert format_datetime(None) is None


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=3)),
                                               timezone(timedelta(hours=-9, minutes=-30))])))
def test_format_then_parse_round_trips_the_instant(moment):
    text = format_datetime(moment)
    assert text is not None and text.endswith("Z")
    assert parse_datetime(text, "d") == moment


@pytest.mark.parametrize(
    ("start", "months", "end"),
    [
        (datetime(2024, 1, 31, 10, tzinfo=UTC), 1, datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)),
        (datetime(2023, 1, 15, tzinfo=UTC), 1, datetime(2023, 2, 28, 23, 59, 59, tzinfo=UTC)),
        (datetime(2024, 12, 5, tzinfo=UTC), 1, datetime(2025, 1, 31, 23, 59, 59, tzinfo=UTC)),
        (datetime(2024, 5, 5, tzinfo=UTC), 0, datetime(2024, 5, 31, 23, 59, 59, tzinfo=UTC)),
        (datetime(2024, 5, 5, tzinfo=UTC), 12, datetime(2025, 5, 31, 23, 59, 59, tzinfo=UTC)),
        (datetime(2024, 5, 5, tzinfo=UTC), 20, datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)),
        # 23:30 on 31 May at -03:00 is already June in UTC
        (datetime(2024, 5, 31, 23, 30, tzinfo=timezone(timedelta(hours=-3))), 0,
         datetime(2024, 6, 30, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_add_months_end_is_last_second_of_the_nth_month_in_utc(start, months, end):
    assert add_months_end(start, months) == end


def test_lifetime_expiry_by_kind():
    activation = datetime(2025, 1, 15, 12, tzinfo=UTC)
    assert lifetime_expiry("days", 365, activation) == datetime(2026, 1, 15, 12, tzinfo=UTC)
    assert lifetime_expiry("end_of_month", 1, activation) == datetime(2025, 2, 28, 23, 59, 59, tzinfo=UTC)
    assert lifetime_expiry("never", None, activation) is None
    assert lifetime_expiry("days", None, activation) is None


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
       st.integers(0, 240))
def test_add_months_end_is_after_start_and_at_a_month_end(start, months):
    end = add_months_end(start, months)
    assert end >= start
    assert (end + timedelta(seconds=1)).day == 1
    assert (end.year * 12 + end.month) - (start.year * 12 + start.month) == months
