"""`loyalty/account/expiring_points` (altcraft-api.md §5.9): remaining points of committed, unspent lots (active or
pending) whose expiry falls in an inclusive period; spending, cancels, holds and pending lots; parameter errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.helpers import ApiClient, assert_failure, ok

EMAIL = "exp@example.com"
MEMBER = {"loyalty_program_id": 123, "matching": "email", "email": EMAIL}

MARCH = "2025-03-01T00:00:00Z"  # lot A (30) expires here
JUNE = "2025-06-01T00:00:00Z"  # lot B (20) expires here
INITIAL_EXPIRY = "2026-01-15T12:00:00Z"  # the 50 initial stars (365 days after registration)



def expiring(api: ApiClient, date_from: str, date_to: str, fmt: str = "json", **params: Any) -> str:
    r = ok(api.call("loyalty/account/expiring_points", fmt=fmt, **MEMBER, points_currency_iid=1,
                    date_from=date_from, date_to=date_to, **params))
    return r.data["expiring_points"]


def accrue(api: ApiClient, amount: str, **params: Any) -> str:
    return ok(api.call("loyalty/accrue_points", **MEMBER, amount=amount, **params)).data["transaction_id"]


def redeem(api: ApiClient, amount: str, **params: Any) -> str:
    return ok(api.call("loyalty/redeeme_points", **MEMBER, amount=amount, **params)).data["transaction_id"]


def three_lots(api: ApiClient) -> tuple[str, str]:
    """Initial 50 (expires 2026-01-15), A = 30 expiring 1 March, B = 20 expiring 1 June."""
    api.member(EMAIL)
    a = accrue(api, "30", expiration_date=MARCH)
    b = accrue(api, "20", expiration_date=JUNE)
    return a, b



@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_expiring_points_counts_lots_expiring_within_inclusive_bounds(api, fmt):
    three_lots(api)
    # both bounds inclusive: a zero-length period exactly at the expiry counts the lot
    assert expiring(api, MARCH, MARCH, fmt) == "30.00"
    assert expiring(api, "2025-02-01T00:00:00Z", MARCH, fmt) == "30.00"
    assert expiring(api, MARCH, "2025-05-31T23:59:59Z", fmt) == "30.00"
    assert expiring(api, MARCH, JUNE, fmt) == "50.00"
    # one second either side leaves the lot out
    assert expiring(api, "2025-02-01T00:00:00Z", "2025-02-28T23:59:59Z", fmt) == "0.00"
    assert expiring(api, "2025-03-01T00:00:01Z", "2025-05-31T23:59:59Z", fmt) == "0.00"
    # the whole year holds all three lots; offsets are honoured (03:00+03:00 is midnight UTC)
    assert expiring(api, "2025-01-01T00:00:00Z", "2026-12-31T23:59:59Z", fmt) == "100.00"
    assert expiring(api, "2025-03-01T03:00:00+03:00", "2025-03-01T03:00:00+03:00", fmt) == "30.00"
    assert expiring(api, INITIAL_EXPIRY, INITIAL_EXPIRY, fmt) == "50.00"


def test_expiring_points_after_a_partial_spend_counts_only_what_remains_soonest_expiring_spent_first(api):
    three_lots(api)
    redeem(api, "40")  # all of A (March), then 10 of B (June); the initial lot is untouched
    assert expiring(api, MARCH, MARCH) == "0.00"
    assert expiring(api, JUNE, JUNE) == "10.00"
    assert expiring(api, INITIAL_EXPIRY, INITIAL_EXPIRY) == "50.00"
    redeem(api, "15")  # the rest of B, then 5 of the initial lot
    assert expiring(api, JUNE, JUNE) == "0.00"
    assert expiring(api, INITIAL_EXPIRY, INITIAL_EXPIRY) == "45.00"
    assert api.balance(EMAIL)["active_balance"] == "45.00"


def test_a_cancelled_accrual_no_longer_expires(api):
    _, b = three_lots(api)
    ok(api.call("loyalty/cancel_transaction", transaction_id=b))
    assert expiring(api, JUNE, JUNE) == "0.00"
    assert expiring(api, MARCH, MARCH) == "30.00"
    assert expiring(api, "2025-01-01T00:00:00Z", "2026-12-31T23:59:59Z") == "80.00"


def test_cancelling_a_partly_spent_accrual_takes_the_spent_part_from_the_soonest_expiring_lot(api):
    a, _ = three_lots(api)
    redeem(api, "10")  # 10 of A (the soonest); A has 20 left
    ok(api.call("loyalty/cancel_transaction", transaction_id=a))
    # A's 20 remaining are removed and its 10 spent points are taken back from B (the next soonest)
    assert expiring(api, MARCH, MARCH) == "0.00"
    assert expiring(api, JUNE, JUNE) == "10.00"
    assert expiring(api, INITIAL_EXPIRY, INITIAL_EXPIRY) == "50.00"
    assert api.balance(EMAIL)["active_balance"] == "60.00"


def test_a_cancelled_redemption_returns_points_that_expire_again_on_their_original_dates(api):
    three_lots(api)
    r = redeem(api, "60")  # A 30, B 20, 10 of the initial lot
    assert expiring(api, "2025-01-01T00:00:00Z", "2026-12-31T23:59:59Z") == "40.00"
    ok(api.call("loyalty/cancel_transaction", transaction_id=r))
    assert expiring(api, MARCH, MARCH) == "30.00"
    assert expiring(api, JUNE, JUNE) == "20.00"
    assert expiring(api, INITIAL_EXPIRY, INITIAL_EXPIRY) == "50.00"


def test_held_points_of_a_temp_redemption_are_not_counted_until_rolled_back(api):
    three_lots(api)
    hold = redeem(api, "40", is_temp=True)
    assert api.balance(EMAIL)["held_balance"] == "40.00"
    assert expiring(api, MARCH, MARCH) == "0.00"
    assert expiring(api, JUNE, JUNE) == "10.00"
    ok(api.call("loyalty/rollback_transaction", transaction_id=hold))
    assert expiring(api, MARCH, MARCH) == "30.00"
    assert expiring(api, JUNE, JUNE) == "20.00"


def test_committed_hold_stays_out_of_expiring_points(api):
    three_lots(api)
    hold = redeem(api, "35", is_temp=True)
    ok(api.call("loyalty/commit_transaction", transaction_id=hold))
    assert expiring(api, MARCH, JUNE) == "15.00"


def test_held_points_return_to_expiring_when_the_hold_times_out(api, clock):
    three_lots(api)
    redeem(api, "30", is_temp=True, temp_timeout_sec=60)
    assert expiring(api, MARCH, MARCH) == "0.00"
    clock.advance(timedelta(seconds=61))
    assert expiring(api, MARCH, MARCH) == "30.00"


def test_pending_lots_are_counted_and_temp_accruals_only_once_committed(api):
    api.member(EMAIL)
    accrue(api, "25", activation_date="2025-02-01T00:00:00Z", expiration_date="2025-04-01T00:00:00Z")
    # default lifetime of a pending lot: 365 days after its activation
    accrue(api, "5", activation_date="2025-02-01T00:00:00Z")
    assert api.balance(EMAIL)["pending_balance"] == "30.00"
    assert expiring(api, "2025-04-01T00:00:00Z", "2025-04-01T00:00:00Z") == "25.00"
    assert expiring(api, "2026-02-01T00:00:00Z", "2026-02-01T00:00:00Z") == "5.00"

    temp = accrue(api, "7", is_temp=True, expiration_date="2025-04-01T00:00:00Z")
    assert expiring(api, "2025-04-01T00:00:00Z", "2025-04-01T00:00:00Z") == "25.00"
    ok(api.call("loyalty/commit_transaction", transaction_id=temp))
    assert expiring(api, "2025-04-01T00:00:00Z", "2025-04-01T00:00:00Z") == "32.00"


def test_points_already_expired_are_no_longer_expiring(api, clock):
    three_lots(api)
    clock.advance(timedelta(days=45))  # 2025-03-01T12:00Z: A has expired, no job ran
    assert expiring(api, "2025-01-01T00:00:00Z", MARCH) == "0.00"
    assert expiring(api, "2025-01-01T00:00:00Z", "2026-12-31T23:59:59Z") == "70.00"


def test_expiring_points_use_the_currency_precision(api):
    api.member(EMAIL)
    ok(api.call("loyalty/accrue_points", **MEMBER, points_currency_eid="status_points", amount="300"))
    r = ok(api.call("loyalty/account/expiring_points", **MEMBER, points_currency_eid="status_points",
                    date_from="2025-01-01T00:00:00Z", date_to="2099-01-01T00:00:00Z"))
    assert r.data["expiring_points"] == "0"  # status points never expire; precision 0
    assert expiring(api, "2025-01-01T00:00:00Z", "2099-01-01T00:00:00Z") == "50.00"


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_expiring_points_parameter_errors(api, fmt):
    api.member(EMAIL)
    call = lambda **p: api.call("loyalty/account/expiring_points", fmt=fmt, **MEMBER, **p)  # noqa: E731
    full = {"points_currency_iid": 1, "date_from": MARCH, "date_to": JUNE}
    # date_from after date_to
    assert_failure(call(**{**full, "date_from": JUNE, "date_to": MARCH}), 400, "invalid_parameter")
    # dates without an offset, or not dates at all
    assert_failure(call(**{**full, "date_from": "2025-03-01T00:00:00"}), 400, "invalid_parameter")
    assert_failure(call(**{**full, "date_to": "2025-06-01T00:00:00"}), 400, "invalid_parameter")
    assert_failure(call(**{**full, "date_to": "June"}), 400, "invalid_parameter")
    # missing dates and missing currency selector
    assert_failure(call(points_currency_iid=1, date_to=JUNE), 400, "missing_parameter")
    assert_failure(call(points_currency_iid=1, date_from=MARCH), 400, "missing_parameter")
    assert_failure(call(date_from=MARCH, date_to=JUNE), 400, "missing_parameter")
