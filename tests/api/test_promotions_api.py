"""Trigger promotions (altcraft-api.md §5.3, §5.4, §5.13): the list endpoint, applying a promotion to accruals and
redemptions by numeric or external id, its rules and limits (per member, per UTC day), and the history fields."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loyalty.domain.errors import LoyaltyError, PromotionLimitReached
from loyalty.services import ledger, programfile, tokens
from loyalty.services.commands import AccrueCmd
from loyalty.services.demo import example_path
from loyalty.services.programfile_schema import LimitsSpec, PromotionSpec, RuleSpec
from tests.helpers import ApiClient, assert_failure, ok

ANN = "ann@example.com"
BOB = "bob@example.com"


def member_params(email: str) -> dict[str, Any]:
    return {"loyalty_program_id": 123, "matching": "email", "email": email}




def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def accrue(api: ApiClient, email: str = ANN, fmt: str = "json", **params: Any) -> Any:
    return api.call("loyalty/accrue_points", fmt=fmt, **member_params(email), **params)


def redeem(api: ApiClient, email: str = ANN, fmt: str = "json", **params: Any) -> Any:
    return api.call("loyalty/redeeme_points", fmt=fmt, **member_params(email), **params)


def promotions(api: ApiClient, fmt: str = "json", **params: Any) -> Any:
    return ok(api.call("loyalty/trigger_promotions", fmt=fmt, **params))


def history(api: ApiClient, email: str = ANN) -> list[dict[str, Any]]:
    return ok(api.call("loyalty/account/transactions", **member_params(email), points_currency_iid=1,
                       limit=100)).data


def apply_with(rt: Any, *extra: PromotionSpec) -> None:
    """Apply the example program with extra promotions appended."""
    spec = programfile.load(example_path())
    spec.programs[0].promotions.extend(extra)
    programfile.apply_spec(rt, spec)


START = datetime(2024, 1, 1, tzinfo=UTC)

DAILY = PromotionSpec(id=7, external_id="daily_gift", name="Daily gift", start_date=START,
                      limits=LimitsSpec(per_day=2), accrual_rules=[RuleSpec(currency="stars", static_amount="1")])
RETIRED = PromotionSpec(id=8, external_id="retired", name="Retired", start_date=START, is_active=False,
                        accrual_rules=[RuleSpec(currency="stars", min_amount="1")])
FUTURE = PromotionSpec(id=9, external_id="summer", name="Summer", start_date=datetime(2025, 6, 1, tzinfo=UTC),
                       end_date=datetime(2025, 8, 31, tzinfo=UTC),
                       accrual_rules=[RuleSpec(currency="status_points", max_amount="500")])

WELCOME = {"id": 5, "name": "Welcome bonus", "description": "A one-time gift", "external_id": "welcome_bonus",
           "start_date": "2024-01-01T00:00:00Z", "end_date": None, "is_active": True,
           "accrual_rules": [{"points_currency_iid": 1, "points_currency_eid": "stars", "static_amount": "100.00",
                              "min_amount": None, "max_amount": None}],
           "redeem_rules": []}
REVIEW = {"id": 6, "name": "Review reward", "description": "", "external_id": "review_reward",
          "start_date": "2024-01-01T00:00:00Z", "end_date": "2030-12-31T23:59:59Z", "is_active": True,
          "accrual_rules": [{"points_currency_iid": 1, "points_currency_eid": "stars", "static_amount": None,
                             "min_amount": "10.00", "max_amount": "50.00"}],
          "redeem_rules": [{"points_currency_iid": 1, "points_currency_eid": "stars", "static_amount": None,
                            "min_amount": "1.00", "max_amount": "1000.00"}]}


# --- the list endpoint -----------------------------------------------------------------------------------------


def test_trigger_promotions_lists_every_field_with_both_rule_arrays_and_nulls_for_unset_values(api):
    r = promotions(api)
    assert r.data == [WELCOME, REVIEW]
    assert r.body["next_from_id"] is None
    assert r.body["total_count"] == 2


def test_trigger_promotions_xml_writes_rule_arrays_as_repeated_elements(api, rt):
    apply_with(rt, FUTURE)
    r = promotions(api, fmt="xml", limit=10)
    items = as_list(r.data)
    assert [i["id"] for i in items] == ["5", "6", "9"]
    welcome, review, summer = items
    assert welcome["end_date"] is None and welcome["is_active"] == "true"
    assert as_list(welcome["accrual_rules"]) == [{"points_currency_iid": "1", "points_currency_eid": "stars",
                                                  "static_amount": "100.00", "min_amount": None,
                                                  "max_amount": None}]
    assert "redeem_rules" not in welcome  # an empty array is no element at all
    assert as_list(review["redeem_rules"])[0]["max_amount"] == "1000.00"
    assert as_list(summer["accrual_rules"]) == [{"points_currency_iid": "2", "points_currency_eid": "status_points",
                                                 "static_amount": None, "min_amount": None, "max_amount": "500"}]
    assert r.body["total_count"] == "3"
    assert r.body["next_from_id"] is None


def test_trigger_promotions_xml_repeats_rule_elements_when_there_are_several(api, rt):
    two_rules = PromotionSpec(id=11, name="Both currencies", start_date=START,
                              accrual_rules=[RuleSpec(currency="stars", min_amount="5"),
                                             RuleSpec(currency="status_points", static_amount="10")])
    apply_with(rt, two_rules)
    r = promotions(api, fmt="xml", from_id=6)
    item = as_list(r.data)[0]
    assert item["id"] == "11"
    assert item["external_id"] is None and item["end_date"] is None
    assert [rule["points_currency_eid"] for rule in item["accrual_rules"]] == ["stars", "status_points"]
    assert item["accrual_rules"][1]["static_amount"] == "10"


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_trigger_promotions_pages_by_integer_from_id_with_next_from_id_and_total_count(api, rt, fmt):
    apply_with(rt, DAILY, RETIRED, FUTURE)
    seen = []
    cursor: Any = 0
    pages = 0
    while True:
        r = promotions(api, fmt=fmt, from_id=cursor, limit=2)
        ids = [int(i["id"]) for i in as_list(r.data)]
        seen.extend(ids)
        pages += 1
        assert int(r.body["total_count"]) == 5
        cursor = r.body["next_from_id"]
        if cursor is None:
            break
        assert int(cursor) == ids[-1]
    assert seen == [5, 6, 7, 8, 9]
    assert pages == 3
    r = promotions(api, fmt=fmt, from_id=7, limit=1)
    assert [int(i["id"]) for i in as_list(r.data)] == [8]
    assert int(r.body["next_from_id"]) == 8
    assert [int(i["id"]) for i in as_list(promotions(api, fmt=fmt, from_id=9).data)] == []


def test_trigger_promotions_is_active_filter_and_its_total_count(api, rt):
    apply_with(rt, DAILY, RETIRED)
    active = promotions(api, is_active=True)
    assert [p["id"] for p in active.data] == [5, 6, 7]
    assert active.body["total_count"] == 3
    inactive = promotions(api, is_active=False)
    assert [(p["id"], p["is_active"]) for p in inactive.data] == [(8, False)]
    assert inactive.body["total_count"] == 1
    r = promotions(api, is_active=True, limit=2)
    assert r.body["next_from_id"] == 6 and r.body["total_count"] == 3
    assert [p["id"] for p in promotions(api, is_active=True, from_id=6).data] == [7]
    assert [p["id"] for p in as_list(promotions(api, fmt="xml", is_active="false").data)] == ["8"]
    assert promotions(api).body["total_count"] == 4


def test_trigger_promotions_parameter_errors(api):
    for params in ({"limit": 0}, {"limit": 101}, {"from_id": -1}, {"from_id": "abc"}, {"is_active": "maybe"}):
        r = api.call("loyalty/trigger_promotions", **params)
        assert_failure(r, 400, "invalid_parameter")
    assert len(promotions(api, limit=1).data) == 1
    assert len(promotions(api, limit=100).data) == 2


# --- applying a promotion ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["5", "welcome_bonus"])
def test_static_promotion_accrues_its_amount_when_amount_is_omitted_by_id_or_external_id(api, ref):
    api.member(ANN)
    r = ok(accrue(api, promotion_id=ref))
    assert r.data["balance"] == "150.00"
    item = history(api)[-1]
    assert item["transaction_id"] == r.data["transaction_id"]
    assert item["amount"] == "100.00"
    assert (item["promo_iid"], item["promo_eid"]) == (5, "welcome_bonus")
    assert (item["source_type"], item["source_iid"], item["source_eid"]) == ("promotion", 5, "welcome_bonus")


def test_static_promotion_accepts_the_same_amount_and_refuses_a_different_one(api):
    api.member(ANN)
    api.member(BOB)
    assert_failure(accrue(api, promotion_id="5", amount="99.99"), 422, "amount_out_of_bounds")
    assert_failure(accrue(api, promotion_id="5", amount="100.01"), 422, "amount_out_of_bounds")
    assert api.balance(ANN)["active_balance"] == "50.00"
    assert ok(accrue(api, promotion_id="5", amount="100")).data["balance"] == "150.00"
    assert ok(accrue(api, BOB, fmt="xml", promotion_id="5", amount="100.00")).data["balance"] == "150.00"


def test_min_max_rules_bound_accruals_and_redemptions(api):
    fmt = "json"
    api.member(ANN)
    for amount in ("9.99", "50.01"):
        assert_failure(accrue(api, fmt=fmt, promotion_id="review_reward", amount=amount), 422,
                       "amount_out_of_bounds")
    assert ok(accrue(api, fmt=fmt, promotion_id="review_reward", amount="10")).data["balance"] == "60.00"
    assert ok(accrue(api, fmt=fmt, promotion_id="6", amount="50.00")).data["balance"] == "110.00"
    assert_failure(redeem(api, fmt=fmt, promotion_id="6", amount="0.99"), 422, "amount_out_of_bounds")
    assert_failure(redeem(api, fmt=fmt, promotion_id="6", amount="1000.01"), 422, "amount_out_of_bounds")
    assert ok(redeem(api, fmt=fmt, promotion_id="review_reward", amount="1")).data["balance"] == "109.00"
    r = ok(redeem(api, fmt=fmt, promotion_id="6", amount="9"))
    assert r.data["balance"] == "100.00"
    # a promotion needs the amount when its rule has no static amount
    assert_failure(accrue(api, fmt=fmt, promotion_id="6"), 400, "missing_parameter")
    assert_failure(redeem(api, fmt=fmt, promotion_id="6"), 400, "missing_parameter")
    # the same rules over XML
    assert_failure(accrue(api, fmt="xml", promotion_id="6", amount="50.01"), 422, "amount_out_of_bounds")
    assert ok(accrue(api, fmt="xml", promotion_id="review_reward", amount="25")).data["balance"] == "125.00"


def test_redemption_under_a_promotion_records_promo_fields_in_history(api):
    api.member(ANN)
    r = ok(redeem(api, promotion_id="review_reward", amount="5", transaction_eid="rev-1"))
    item = history(api)[-1]
    assert item["transaction_id"] == r.data["transaction_id"]
    assert item["transaction_type"] == "redemption" and item["amount"] == "5.00"
    assert (item["promo_iid"], item["promo_eid"]) == (6, "review_reward")
    assert (item["source_type"], item["source_iid"], item["source_eid"]) == ("promotion", 6, "review_reward")
    plain = ok(redeem(api, amount="1"))
    item = history(api)[-1]
    assert item["transaction_id"] == plain.data["transaction_id"]
    assert item["promo_iid"] is None and item["source_type"] == "api"


def test_a_promotion_without_a_rule_for_the_currency_or_side_is_invalid_parameter(api):
    api.member(ANN)
    # welcome_bonus has no redeem rule at all
    assert_failure(redeem(api, promotion_id="5", amount="1"), 400, "invalid_parameter")
    # review_reward has no rule for status_points
    assert_failure(accrue(api, promotion_id="6", amount="20", points_currency_eid="status_points"), 400,
                   "invalid_parameter")
    assert api.balance(ANN)["active_balance"] == "50.00"
    assert len(history(api)) == 1


def test_an_unknown_promotion_is_promotion_not_found(api):
    api.member(ANN)
    for ref in ("999", "no_such_promo"):
        assert_failure(accrue(api, promotion_id=ref, amount="10"), 404, "promotion_not_found")


def test_an_inactive_or_not_yet_started_or_ended_promotion_is_promotion_inactive(api, rt, clock):
    apply_with(rt, RETIRED, FUTURE)
    api.member(ANN)
    assert_failure(accrue(api, promotion_id="retired", amount="10"), 409, "promotion_inactive")
    assert_failure(accrue(api, promotion_id="9", amount="10", points_currency_iid=2), 409, "promotion_inactive")
    clock.set(datetime(2025, 6, 1, tzinfo=UTC))  # the summer promotion starts (inclusive)
    ok(accrue(api, promotion_id="summer", amount="10", points_currency_iid=2))
    clock.set(datetime(2025, 8, 31, 0, 0, 1, tzinfo=UTC))  # a second after it ended
    assert_failure(accrue(api, promotion_id="summer", amount="10", points_currency_iid=2), 409,
                   "promotion_inactive")
    clock.set(datetime(2030, 12, 31, 23, 59, 59, tzinfo=UTC))  # review_reward's last second
    ok(accrue(api, promotion_id="6", amount="10"))
    clock.advance(timedelta(seconds=1))
    assert_failure(accrue(api, promotion_id="6", amount="10"), 409, "promotion_inactive")
    assert_failure(redeem(api, promotion_id="6", amount="1"), 409, "promotion_inactive")


# --- limits ------------------------------------------------------------------------------------------------------


def test_per_member_limit_allows_one_use_per_member(api):
    api.member(ANN)
    api.member(BOB)
    ok(accrue(api, promotion_id="welcome_bonus"))
    assert_failure(accrue(api, promotion_id="welcome_bonus"), 409, "promotion_limit_reached")
    assert_failure(accrue(api, promotion_id="5"), 409, "promotion_limit_reached")
    ok(accrue(api, BOB, promotion_id="5"))
    assert api.balance(ANN)["active_balance"] == "150.00"
    # an unlimited promotion is not affected
    for _ in range(3):
        ok(accrue(api, promotion_id="6", amount="10"))


def test_a_retried_transaction_eid_replays_instead_of_hitting_the_limit(api):
    api.member(ANN)
    first = ok(accrue(api, promotion_id="5", transaction_eid="welcome-ann"))
    again = ok(accrue(api, promotion_id="5", transaction_eid="welcome-ann"))
    assert again.data["transaction_id"] == first.data["transaction_id"]
    assert api.balance(ANN)["active_balance"] == "150.00"


def test_a_temp_use_holds_the_limit_and_a_rollback_frees_it(api):
    api.member(ANN)
    temp = ok(accrue(api, promotion_id="5", is_temp=True)).data["transaction_id"]
    assert_failure(accrue(api, promotion_id="5"), 409, "promotion_limit_reached")
    ok(api.call("loyalty/rollback_transaction", transaction_id=temp))
    ok(accrue(api, promotion_id="5"))
    assert api.balance(ANN)["active_balance"] == "150.00"


def test_a_timed_out_temp_use_frees_the_limit(api, clock):
    api.member(ANN)
    ok(accrue(api, promotion_id="5", is_temp=True, temp_timeout_sec=30))
    clock.advance(timedelta(seconds=31))
    ok(accrue(api, promotion_id="5"))
    assert api.balance(ANN)["active_balance"] == "150.00"


def test_a_cancelled_use_frees_the_limit(api):
    api.member(ANN)
    used = ok(accrue(api, promotion_id="5")).data["transaction_id"]
    ok(api.call("loyalty/cancel_transaction", transaction_id=used))
    ok(accrue(api, promotion_id="5"))
    assert api.balance(ANN)["active_balance"] == "150.00"


def test_per_member_limit_under_concurrent_requests_lets_exactly_one_through(api, rt, admin_token):
    api.member(ANN)
    principal = tokens.authenticate(rt, admin_token)
    n = 8
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def use() -> None:
        cmd = AccrueCmd(**member_params(ANN), promotion_id="welcome_bonus")
        barrier.wait()
        try:
            ledger.accrue(rt, principal, cmd)
            result = "ok"
        except PromotionLimitReached:
            result = "limit"
        except LoyaltyError as exc:  # pragma: no cover - reported in the assertion
            result = exc.code
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=use) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["limit"] * (n - 1) + ["ok"]
    assert api.balance(ANN)["active_balance"] == "150.00"
    assert sum(1 for i in history(api) if i["promo_iid"] == 5) == 1


def test_per_day_limit_counts_program_wide_uses_and_resets_on_the_next_utc_day(api, rt, clock):
    apply_with(rt, DAILY)
    emails = [f"m{i}@example.com" for i in range(4)]
    for e in emails:
        api.member(e)
    ok(accrue(api, emails[0], promotion_id="daily_gift"))
    ok(accrue(api, emails[1], promotion_id="7"))
    # two uses today, by two members: a third member is refused, and so is a repeat
    assert_failure(accrue(api, emails[2], promotion_id="daily_gift"), 409, "promotion_limit_reached")
    assert_failure(accrue(api, emails[0], promotion_id="daily_gift"), 409, "promotion_limit_reached")
    clock.set(datetime(2025, 1, 15, 23, 59, 59, tzinfo=UTC))
    assert_failure(accrue(api, emails[3], promotion_id="daily_gift"), 409, "promotion_limit_reached")
    clock.set(datetime(2025, 1, 16, 0, 0, 0, tzinfo=UTC))  # a new UTC day
    ok(accrue(api, emails[2], promotion_id="daily_gift"))
    ok(accrue(api, emails[0], promotion_id="daily_gift"))
    assert_failure(accrue(api, emails[3], promotion_id="daily_gift"), 409, "promotion_limit_reached")
    assert api.balance(emails[0])["active_balance"] == "52.00"
    assert api.balance(emails[3])["active_balance"] == "50.00"


def test_per_day_limit_is_freed_by_a_rolled_back_temp_use(api, rt):
    apply_with(rt, DAILY)
    api.member(ANN)
    api.member(BOB)
    ok(accrue(api, ANN, promotion_id="7"))
    temp = ok(accrue(api, ANN, promotion_id="7", is_temp=True)).data["transaction_id"]
    assert_failure(accrue(api, BOB, promotion_id="7"), 409, "promotion_limit_reached")
    ok(api.call("loyalty/rollback_transaction", transaction_id=temp))
    ok(accrue(api, BOB, promotion_id="7"))
    assert api.balance(BOB)["active_balance"] == "51.00"
