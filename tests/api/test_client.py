"""The Python client speaks the contract: typed results, Decimal amounts, errors with the contract's codes."""

from decimal import Decimal

import pytest

from loyalty.client import Balance, LoyaltyApiError, LoyaltyClient


@pytest.fixture
def client(api):
    # The FastAPI test client is an httpx.Client bound to the app, so the loyalty client can ride on it.
    return LoyaltyClient("http://testserver", api.token, http=api.client)


def test_client_enrols_earns_spends_and_reads_decimal_balances(client, api):
    api.add_profile("cli@example.com")
    assert len(client.register_member(123, email="cli@example.com")) == 24
    earned = client.accrue_points(123, Decimal("10.25"), email="cli@example.com", transaction_eid="c-1")
    assert earned.balance == Decimal("60.25")
    again = client.accrue_points(123, Decimal("10.25"), email="cli@example.com", transaction_eid="c-1")
    assert again == earned  # exactly once: the first result comes back
    held = client.redeem_points(123, "20", email="cli@example.com", is_temp=True)
    assert client.balance(123, email="cli@example.com") == Balance(
        Decimal("60.25"), Decimal("40.25"), Decimal("0.00"), Decimal("20.00"), Decimal("0.00"))
    assert client.commit_transaction(held.transaction_id).balance == Decimal("40.25")


def test_client_raises_the_contract_error_code(client, api):
    api.member("poor@example.com")
    with pytest.raises(LoyaltyApiError) as caught:
        client.redeem_points(123, "1000", email="poor@example.com")
    assert (caught.value.error, caught.value.code) == (422, "insufficient_points")
