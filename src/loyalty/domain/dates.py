"""RFC 3339 dates on the wire; aware UTC datetimes inside; UTC `Z` strings out."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

from loyalty.domain.errors import InvalidParameter


def parse_datetime(value: object, name: str) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise InvalidParameter(name, "must be an RFC 3339 date-time string with an offset")
    text = value.strip()
    if "T" not in text and " " not in text:
        raise InvalidParameter(name, f"{value!r} is not an RFC 3339 date-time")
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise InvalidParameter(name, f"{value!r} is not an RFC 3339 date-time") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidParameter(name, f"{value!r} has no UTC offset (use Z or +hh:mm)")
    return parsed.astimezone(UTC)


def format_datetime(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def add_months_end(moment: datetime, months: int) -> datetime:
    """The last instant of the Nth calendar month after `moment` (UTC): end_of_month lifetimes."""
    moment = moment.astimezone(UTC)
    index = moment.year * 12 + (moment.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    last_day = calendar.monthrange(year, month)[1]
    return datetime(year, month, last_day, 23, 59, 59, tzinfo=UTC)


def lifetime_expiry(kind: str, n: int | None, activation: datetime) -> datetime | None:
    if kind == "days" and n is not None:
        return activation + timedelta(days=n)
    if kind == "end_of_month" and n is not None:
        return add_months_end(activation, n)
    return None
