"""`market/orders/preorder` and `market/orders/preorder_commit` (altcraft-api.md §5.14, §5.15) over HTTP, JSON and
XML, on both stores.

Example program 123: orders earn_rate 0.05, point_value 1.00, max_redeem_share 0.50, return_window_days 14; the
default currency is stars (precision 2, initial balance 50.00). The standard order below is two lines, 19.99 + 10.01
USD = 30.00 goods, plus 5.00 delivery:
- without redemption it earns 0.99 + 0.50 = 1.49 (per line, rounded down; delivery earns nothing);
- the cap is 50 % of the goods = 15.00 points; with "max" and 50.00 active the order spends 15.00, the discount
  15.00 spreads 10.00 / 5.00, and the lines earn 9.99 × 0.05 → 0.49 and 5.01 × 0.05 → 0.25 = 0.74;
  final_total_price = 30.00 − 15.00 + 5.00 = 20.00.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from loyalty.api import xmlcodec
from tests.helpers import ApiClient, Reply, ok, xml_to_dict
from tests.helpers import assert_failure as fail

EMAIL = "buyer@example.com"
PHONE_RAW = "+1 (555) 010-2030"
PHONE = "+15550102030"
BY_EMAIL = {"loyalty_program_id": 123, "matching": "email", "email": EMAIL}
STARS = {"points_currency_iid": 1}
ENDPOINTS = ("market/orders/preorder", "market/orders/preorder_commit")


def order_data(redeem: Any = None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "endpoint": "shop", "status": "new", "currency": "USD", "total_price": "35.00", "delivery_cost": "5.00",
        "create_time": "2025-01-15T12:00:00Z",
        "lines": [
            {"external_id": "a", "sku": "SKU-A", "count": 1, "base_price_per_item": "19.99"},
            {"external_id": "b", "sku": "SKU-B", "count": "1", "base_price_per_item": "12.00",
             "final_price_per_item": "10.01"},
        ],
    }
    if redeem is not None:
        data["redeem_points"] = redeem
    data.update(extra)
    return data




def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def history(api: ApiClient, email: str = EMAIL) -> list[dict[str, Any]]:
    r = ok(api.call("loyalty/account/transactions", loyalty_program_id=123, matching="email", email=email,
                    limit=100, **STARS))
    assert r.body["next_from_id"] is None
    return as_list(r.data)


def member(api: ApiClient) -> str:
    return api.member(EMAIL, phones=[PHONE_RAW])


def commit(api: ApiClient, external_id: str = "ord-1", fmt: str = "json", lookup: dict[str, Any] | None = None,
           **data: Any) -> Reply:
    return api.call("market/orders/preorder_commit", fmt=fmt, external_id=external_id,
                    **(BY_EMAIL if lookup is None else lookup), data=order_data(**data))


# --- preorder: a quote that creates nothing ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_preorder_quotes_and_creates_nothing(api, fmt):
    member(api)
    before = api.balance(EMAIL)
    r = ok(api.call("market/orders/preorder", fmt=fmt, external_id="ord-q", **BY_EMAIL, data=order_data()))
    d = r.data
    assert {k: d[k] for k in ("points_to_accrue", "points_to_redeem", "max_points_to_redeem", "discount",
                              "final_total_price", "balance")} == {
        "points_to_accrue": "1.49", "points_to_redeem": "0.00", "max_points_to_redeem": "15.00",
        "discount": "0.00", "final_total_price": "35.00", "balance": "50.00"}
    lines = as_list(d["lines"])
    assert [(x["external_id"], x["points_to_accrue"], x["discount"]) for x in lines] == [
        ("a", "0.99", "0.00"), ("b", "0.50", "0.00")]

    r = ok(api.call("market/orders/preorder", fmt=fmt, external_id="ord-q", **BY_EMAIL, data=order_data("max")))
    d = r.data
    assert (d["points_to_accrue"], d["points_to_redeem"], d["discount"], d["final_total_price"]) == (
        "0.74", "15.00", "15.00", "20.00")
    assert [(x["points_to_accrue"], x["discount"]) for x in as_list(d["lines"])] == [
        ("0.49", "10.00"), ("0.25", "5.00")]

    # nothing moved, nothing recorded; the same external_id can still be committed afterwards
    assert api.balance(EMAIL) == before
    assert [t["transaction_type"] for t in history(api)] == ["initial"]
    r = ok(commit(api, "ord-q", redeem="max"))
    assert r.data["points_to_redeem"] == "15.00"


def test_preorder_lines_with_counts_and_no_lines_at_all(api):
    member(api)
    # 3 × 3.33 = 9.99 -> 0.4995 -> 0.49; 2 × 0.50 = 1.00 -> 0.05 => 0.54
    data = {"currency": "USD", "total_price": "10.99", "lines": [
        {"external_id": "x", "count": 3, "base_price_per_item": "3.33"},
        {"external_id": "y", "count": 2, "base_price_per_item": "0.50"}]}
    r = ok(api.call("market/orders/preorder", external_id="o", **BY_EMAIL, data=data))
    assert r.data["points_to_accrue"] == "0.54"
    assert r.data["final_total_price"] == "10.99"
    # without lines the whole order (final_total_price or total_price, less delivery) is one line:
    # 25.00 − 5.00 = 20.00 -> 1.00 point; the cap is 10.00.
    data = {"currency": "USD", "total_price": "30.00", "final_total_price": "25.00", "delivery_cost": "5.00"}
    r = ok(api.call("market/orders/preorder", external_id="o", **BY_EMAIL, data=data))
    assert (r.data["points_to_accrue"], r.data["max_points_to_redeem"], r.data["final_total_price"]) == (
        "1.00", "10.00", "25.00")


def test_preorder_in_jpy_and_kwd(api):
    member(api)
    # 1999 JPY -> 99.95 points; cap 999 yen -> 999.00 points but the balance is 50.00 -> max 50.00.
    r = ok(api.call("market/orders/preorder", external_id="j", **BY_EMAIL, data={
        "currency": "JPY", "total_price": "1999", "lines": [{"external_id": "x", "base_price_per_item": "1999"}]}))
    assert (r.data["points_to_accrue"], r.data["max_points_to_redeem"], r.data["final_total_price"]) == (
        "99.95", "50.00", "1999")
    # 1.999 KWD -> 0.09995 -> 0.09; "max" -> cap 0.999 -> 0.99 points, discount 0.990, pays 1.009 -> 0.05.
    r = ok(api.call("market/orders/preorder", external_id="k", **BY_EMAIL, data={
        "currency": "KWD", "total_price": "1.999", "redeem_points": "max",
        "lines": [{"external_id": "x", "base_price_per_item": "1.999"}]}))
    assert (r.data["points_to_accrue"], r.data["points_to_redeem"], r.data["discount"],
            r.data["final_total_price"]) == ("0.05", "0.99", "0.990", "1.009")
    # JPY prices cannot have fractional digits
    fail(api.call("market/orders/preorder", external_id="j", **BY_EMAIL, data={
        "currency": "JPY", "total_price": "19.5", "lines": [{"base_price_per_item": "19.5"}]}),
        400, "invalid_parameter")


# --- preorder_commit ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_commit_redeems_and_accrues_with_order_transactions(api, fmt):
    member(api)
    r = ok(commit(api, "ord-1", fmt=fmt, redeem="max"))
    d = r.data
    assert (d["points_to_accrue"], d["points_to_redeem"], d["discount"], d["final_total_price"]) == (
        "0.74", "15.00", "15.00", "20.00")
    assert d["balance"] == "35.00"  # the accrual is pending for the return window
    assert d["order_id"] not in (None, "")
    redemption_id, accrual_id = d["redemption_transaction_id"], d["accrual_transaction_id"]
    assert redemption_id and accrual_id and redemption_id != accrual_id

    items = history(api)
    assert [t["transaction_type"] for t in items] == ["initial", "order_redemption", "order_accrual"]
    red, acc = items[1], items[2]
    assert (red["transaction_id"], red["amount"], red["status"], red["source_type"], red["source_eid"]) == (
        redemption_id, "15.00", "committed", "order", "ord-1")
    assert (red["balance_before"], red["balance_after"]) == ("50.00", "35.00")
    assert (acc["transaction_id"], acc["amount"], acc["status"], acc["source_type"], acc["source_eid"]) == (
        accrual_id, "0.74", "committed", "order", "ord-1")
    assert (acc["balance_before"], acc["balance_after"]) == ("35.00", "35.00")
    assert acc["activation_date"] == "2025-01-29T12:00:00Z"  # START + 14 days
    assert acc["expiration_date"] == "2026-01-29T12:00:00Z"  # stars live 365 days from activation


def test_order_accrual_is_pending_until_the_return_window_passes(api, clock):
    member(api)
    ok(commit(api, "ord-1", redeem="max"))
    assert api.balance(EMAIL) == {"total_balance": "35.74", "active_balance": "35.00", "pending_balance": "0.74",
                                  "held_balance": "0.00", "temp_accrued_balance": "0.00"}
    clock.advance(timedelta(days=13, hours=23))
    assert api.balance(EMAIL)["pending_balance"] == "0.74"
    # pending points cannot be spent yet: 35.00 active only
    fail(api.call("loyalty/redeeme_points", **BY_EMAIL, amount="35.01"), 422, "insufficient_points")
    clock.advance(timedelta(hours=1, seconds=1))
    assert api.balance(EMAIL) == {"total_balance": "35.74", "active_balance": "35.74", "pending_balance": "0.00",
                                  "held_balance": "0.00", "temp_accrued_balance": "0.00"}
    ok(api.call("loyalty/redeeme_points", **BY_EMAIL, amount="35.74"))


def test_commit_without_redemption_creates_only_the_accrual(api):
    member(api)
    r = ok(commit(api, "ord-2"))
    assert r.data["redemption_transaction_id"] is None
    assert r.data["points_to_accrue"] == "1.49" and r.data["balance"] == "50.00"
    assert [t["transaction_type"] for t in history(api)] == ["initial", "order_accrual"]


def test_a_repeat_returns_the_identical_first_result_and_moves_nothing(api, clock):
    member(api)
    first = ok(commit(api, "ord-1", redeem="max")).body
    clock.advance(timedelta(minutes=5))
    # same order again, and even with another payload: the first result, unchanged
    assert ok(commit(api, "ord-1", redeem="max")).body == first
    assert ok(commit(api, "ord-1", redeem="1.00")).body == first
    assert ok(commit(api, "ord-1", fmt="json", lookup={"email": EMAIL})).body == first
    assert [t["transaction_type"] for t in history(api)] == ["initial", "order_redemption", "order_accrual"]
    assert api.balance(EMAIL)["active_balance"] == "35.00"


def test_concurrent_commits_of_one_order_create_it_once(api):
    member(api)
    n = 12
    barrier = threading.Barrier(n)

    def go(_: int) -> Reply:
        barrier.wait(timeout=30)
        return commit(api, "ord-race", redeem="max")

    with ThreadPoolExecutor(n) as pool:
        replies = list(pool.map(go, range(n)))
    for r in replies:
        ok(r)
    bodies = [r.body for r in replies]
    assert all(b == bodies[0] for b in bodies), bodies
    items = history(api)
    assert [t["transaction_type"] for t in items] == ["initial", "order_redemption", "order_accrual"]
    assert {items[1]["transaction_id"], items[2]["transaction_id"]} == {
        bodies[0]["data"]["redemption_transaction_id"], bodies[0]["data"]["accrual_transaction_id"]}
    assert api.balance(EMAIL)["active_balance"] == "35.00"
    assert api.balance(EMAIL)["pending_balance"] == "0.74"


def test_a_member_in_debt_may_order_without_spending(api):
    member(api)
    accrual = ok(api.call("loyalty/accrue_points", **BY_EMAIL, amount="10.00")).data["transaction_id"]
    ok(api.call("loyalty/redeeme_points", **BY_EMAIL, amount="60.00"))
    ok(api.call("loyalty/cancel_transaction", transaction_id=accrual))
    assert api.balance(EMAIL)["active_balance"] == "-10.00"
    r = ok(api.call("market/orders/preorder", external_id="d", **BY_EMAIL, data=order_data(redeem="max")))
    assert (r.data["points_to_redeem"], r.data["max_points_to_redeem"]) == ("0.00", "0.00")
    r = api.call("market/orders/preorder", external_id="d", **BY_EMAIL, data=order_data(redeem="0"))
    ok(r)
    assert r.data["points_to_accrue"] == "1.49"


def test_concurrent_distinct_orders_never_spend_the_same_point(api):
    # balance 50.00; each order may spend at most 15.00 ("max"): 15 + 15 + 15 + 5, then nothing is left.
    member(api)
    n = 6
    barrier = threading.Barrier(n)

    def go(i: int) -> Reply:
        barrier.wait(timeout=30)
        return commit(api, f"par-{i}", redeem="max")

    with ThreadPoolExecutor(n) as pool:
        replies = [ok(r) for r in pool.map(go, range(n))]
    spent = sorted((r.data["points_to_redeem"] for r in replies), key=Decimal, reverse=True)
    assert spent == ["15.00", "15.00", "15.00", "5.00", "0.00", "0.00"]
    assert api.balance(EMAIL)["active_balance"] == "0.00"
    redemptions = [t for t in history(api) if t["transaction_type"] == "order_redemption"]
    assert len(redemptions) == 4
    assert all(Decimal(t["balance_after"]) >= 0 for t in redemptions)


def test_distinct_orders_each_count(api):
    member(api)
    ok(commit(api, "o1", redeem="10.00"))
    ok(commit(api, "o2", redeem="10.00"))
    assert api.balance(EMAIL)["active_balance"] == "30.00"
    assert [t["transaction_type"] for t in history(api)] == [
        "initial", "order_redemption", "order_accrual", "order_redemption", "order_accrual"]


# --- finding the member ------------------------------------------------------------------------------------------


def test_member_by_profile_id_email_or_phone_with_or_without_matching(api):
    profile_id = member(api)
    n = 0
    for how in ("profile_id", "email", "phone"):
        for with_matching in (True, False):
            value = {"profile_id": profile_id, "email": "  Buyer@Example.com ", "phone": PHONE_RAW}[how]
            lookup: dict[str, Any] = {"loyalty_program_id": 123, how: value}
            if with_matching:
                lookup["matching"] = how
            r = ok(api.call("market/orders/preorder", external_id="o", **lookup, data=order_data()))
            assert r.data["balance"] == "50.00", (how, with_matching)
            r = ok(commit(api, f"o-{how}-{with_matching}", lookup=lookup))
            assert r.data["points_to_accrue"] == "1.49", (how, with_matching)
            n += 1
    assert [t["transaction_type"] for t in history(api)] == ["initial"] + ["order_accrual"] * n


def test_program_defaults_to_the_active_program_of_the_database(api):
    member(api)
    r = ok(api.call("market/orders/preorder_commit", external_id="o", email=EMAIL, data=order_data()))
    assert r.data["points_to_accrue"] == "1.49"


# --- XML ---------------------------------------------------------------------------------------------------------


def test_xml_lines_are_repeated_elements_inside_data(api):
    member(api)
    body = (
        "<xml><token>{t}</token><external_id>ord-x</external_id><loyalty_program_id>123</loyalty_program_id>"
        "<matching>email</matching><email>{e}</email>"
        "<data><currency>USD</currency><total_price>35.00</total_price><delivery_cost>5.00</delivery_cost>"
        "<redeem_points>max</redeem_points>"
        "<lines><external_id>a</external_id><count>1</count><base_price_per_item>19.99</base_price_per_item></lines>"
        "<lines><external_id>b</external_id><count>1</count><base_price_per_item>10.01</base_price_per_item></lines>"
        "</data></xml>").format(t=api.token, e=EMAIL).encode()
    resp = api.raw("market/orders/preorder_commit", body, {"Content-Type": "application/xml"})
    assert resp.status_code == 200, resp.content
    d = xml_to_dict(resp.content)["data"]
    assert (d["points_to_accrue"], d["points_to_redeem"], d["discount"], d["final_total_price"]) == (
        "0.74", "15.00", "15.00", "20.00")
    assert [(x["external_id"], x["discount"]) for x in d["lines"]] == [("a", "10.00"), ("b", "5.00")]

    # one <lines> element is still an array of one
    body = xmlcodec.render({"token": api.token, "external_id": "ord-y", **BY_EMAIL, "data": {
        "currency": "USD", "total_price": "19.99", "lines": [{"external_id": "a", "base_price_per_item": "19.99"}]}})
    resp = api.raw("market/orders/preorder", body, {"Content-Type": "application/xml"})
    assert resp.status_code == 200, resp.content
    d = xml_to_dict(resp.content)["data"]
    assert d["points_to_accrue"] == "0.99"
    assert as_list(d["lines"])[0]["points_to_accrue"] == "0.99"


# --- errors ------------------------------------------------------------------------------------------------------


def test_missing_parameters(api):
    member(api)
    for endpoint in ENDPOINTS:
        for fmt in ("json", "xml"):
            missing_parameters(api, endpoint, fmt)
    assert [t["transaction_type"] for t in history(api)] == ["initial"]


def missing_parameters(api: ApiClient, endpoint: str, fmt: str) -> None:
    fail(api.call(endpoint, fmt=fmt, external_id="o", **BY_EMAIL), 400, "missing_parameter")
    data = order_data()
    del data["currency"]
    fail(api.call(endpoint, fmt=fmt, external_id="o", **BY_EMAIL, data=data), 400, "missing_parameter")
    fail(api.call(endpoint, fmt=fmt, **BY_EMAIL, data=order_data()), 400, "missing_parameter")
    fail(api.call(endpoint, fmt=fmt, external_id="o", loyalty_program_id=123, matching="email",
                  data=order_data()), 400, "missing_parameter")


def test_invalid_values(api):
    member(api)
    for endpoint in ENDPOINTS:
        invalid_values(api, endpoint)
    assert [t["transaction_type"] for t in history(api)] == ["initial"]


def invalid_values(api: ApiClient, endpoint: str) -> None:
    for code in ("usd", "US", "DOLLARS", "12$"):
        fail(api.call(endpoint, external_id="o", **BY_EMAIL, data=order_data(currency=code)),
             400, "invalid_parameter")
    bad_line = order_data()
    bad_line["lines"][0]["base_price_per_item"] = "-1.00"
    fail(api.call(endpoint, external_id="o", **BY_EMAIL, data=bad_line), 400, "invalid_parameter")
    bad_final = order_data()
    bad_final["lines"][1]["final_price_per_item"] = "-0.01"
    fail(api.call(endpoint, external_id="o", **BY_EMAIL, data=bad_final), 400, "invalid_parameter")
    for count in (0, -1, "x"):
        bad_count = order_data()
        bad_count["lines"][0]["count"] = count
        fail(api.call(endpoint, external_id="o", **BY_EMAIL, data=bad_count), 400, "invalid_parameter")
    fail(api.call(endpoint, external_id="o", **BY_EMAIL, data=order_data(delivery_cost="-5")),
         400, "invalid_parameter")
    too_precise = order_data()
    too_precise["lines"][0]["base_price_per_item"] = "19.999"
    fail(api.call(endpoint, external_id="o", **BY_EMAIL, data=too_precise), 400, "invalid_parameter")
    fail(api.call(endpoint, external_id="o", **BY_EMAIL, data=order_data(redeem="0.001")),
         400, "invalid_parameter")
    fail(api.call(endpoint, external_id="o", **BY_EMAIL, data=order_data(redeem="lots")),
         400, "invalid_parameter")


def test_redeem_over_balance_or_cap_is_refused_and_nothing_moves(api):
    member(api)
    for endpoint in ENDPOINTS:
        redeem_refused(api, endpoint)
    # the refused order id is still free
    ok(commit(api, "o", redeem="15.00"))
    assert api.balance(EMAIL)["active_balance"] == "35.00"


def redeem_refused(api: ApiClient, endpoint: str) -> None:
    big = {"currency": "USD", "total_price": "200.00",
           "lines": [{"external_id": "x", "base_price_per_item": "200.00"}]}
    # balance 50.00, cap 100.00: 50.01 is over the balance
    r = api.call(endpoint, external_id="o", **BY_EMAIL, data={**big, "redeem_points": "50.01"})
    fail(r, 422, "insufficient_points")
    assert "50.01" in r.body["error_text"] and "50.00" in r.body["error_text"]
    # order 30.00, cap 15.00: 15.01 is over the share cap although within the balance
    fail(api.call(endpoint, external_id="o", **BY_EMAIL, data=order_data("15.01")), 422, "amount_out_of_bounds")
    assert [t["transaction_type"] for t in history(api)] == ["initial"]
    assert api.balance(EMAIL)["active_balance"] == "50.00"


def test_non_member_and_unknown_profile(api):
    api.add_profile("stranger@example.com")
    for endpoint in ENDPOINTS:
        fail(api.call(endpoint, external_id="o", loyalty_program_id=123, matching="email",
                      email="stranger@example.com", data=order_data()), 404, "not_a_member")
        fail(api.call(endpoint, external_id="o", loyalty_program_id=123, matching="email",
                      email="nobody@example.com", data=order_data()), 404, "profile_not_found")
    # a removed member is not a member either
    member(api)
    ok(api.call("loyalty/delete_member", **BY_EMAIL))
    for endpoint in ENDPOINTS:
        fail(api.call(endpoint, external_id="o", **BY_EMAIL, data=order_data()), 404, "not_a_member")
