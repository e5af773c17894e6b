"""exports.csv_rows formats stored values directly (it runs a million times per export): its text must be the
text the history endpoint gives for the same transaction (history.render_txn)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from loyalty.domain.dates import format_datetime
from loyalty.domain.model import Currency
from loyalty.domain.points import format_amount
from loyalty.services.exports import COLUMNS, csv_rows, instant_text
from loyalty.storage.types import from_micros, to_micros

instants = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31),
                        timezones=st.just(UTC))


@given(st.lists(instants, min_size=1, max_size=20))
def test_instants_read_as_format_datetime_writes_them_in_any_order(moments):
    text = instant_text()  # remembers the last second: repeated and unordered seconds must not confuse it
    for moment in moments + sorted(moments) + moments[:1]:
        assert text(to_micros(moment)) == format_datetime(moment)


def _currency(precision: int) -> Currency:
    return Currency(program_id=1, iid=1, eid="stars", name="Stars", kind="standard", precision=precision,
                    initial_balance=0, lifetime_kind="never", lifetime_n=None, is_default=True)


@given(st.integers(-10**15, 10**15), st.integers(0, 4), instants)
def test_a_row_formats_amounts_and_dates_like_the_history_endpoint(amount, precision, created):
    stored = ("t1", None, to_micros(created), "accrual", "committed", amount, 0, amount, None, None, None,
              None, to_micros(created), "api", None, None, '{"a":1}', "p1")
    (row,) = list(csv_rows([stored], _currency(precision)))
    assert len(row) == len(COLUMNS)
    named = dict(zip(COLUMNS, row, strict=True))
    assert named["amount"] == named["balance_after"] == format_amount(amount, precision)
    assert named["balance_before"] == format_amount(0, precision)
    assert named["created_at"] == named["expiration_date"] == format_datetime(from_micros(to_micros(created)))
    assert (named["transaction_eid"], named["activation_date"], named["promo_iid"]) == ("", "", "")
    assert (named["external_data"], named["profile_id"], named["points_currency_eid"]) == ('{"a":1}', "p1", "stars")
