"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger
from sqlalchemy.types import TypeDecorator

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("naive datetime reached the store")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return datetime.fromtimestamp(value // 1_000_000, UTC).replace(microsecond=value % 1_000_000)


class UtcMicros(TypeDecorator[datetime]):
    """An aware datetime stored as integer microseconds since the epoch (UTC).

    SQLite has no timestamp type and SQLAlchemy's emulation drops the offset; an integer sorts, compares and
    indexes identically on both stores and never loses precision.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> int | None:
        return None if value is None else to_micros(value)

    def process_result_value(self, value: int | None, dialect: object) -> datetime | None:
        return None if value is None else from_micros(value)
