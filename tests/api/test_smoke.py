"""End-to-end smoke: a member earns and spends over HTTP in both formats, on both stores."""

import pytest


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_member_earns_then_spends_and_balance_follows(api, fmt):
    api.member("ann@example.com")  # initial_balance 50 stars
    r = api.call("loyalty/accrue_points", fmt=fmt, loyalty_program_id=123, matching="email",
                 email="ann@example.com", amount="100.50")
    assert r.status == 200 and r.error == 0, r.body
    assert r.data["balance"] == "150.50"
    r = api.call("loyalty/redeeme_points", fmt=fmt, loyalty_program_id=123, matching="email",
                 email="ann@example.com", amount="0.50")
    assert r.data["balance"] == "150.00"
    b = api.balance("ann@example.com")
    assert b == {"total_balance": "150.00", "active_balance": "150.00", "pending_balance": "0.00",
                 "held_balance": "0.00", "temp_accrued_balance": "0.00"}
