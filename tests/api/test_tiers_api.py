"""`loyalty/account/tiers` (altcraft-api.md §5.12, engine.md §1): the tiers a member has reached, lowest first;
cumulative promotion and demotion by cancel; `period` groups that drop when the window moves past the earnings
(read time and the daily job); `points_to_next_tier`; errors; JSON and XML."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from loyalty.services import programfile
from loyalty.services.demo import example_path
from loyalty.services.programfile_schema import TierGroupSpec, TierSpec
from loyalty.services.tiers import reevaluate_period_groups
from loyalty.storage import tiers_repo
from tests.helpers import ApiClient, assert_failure, ok

ANN = "ann@example.com"
T0 = "2025-01-15T12:00:00Z"


def member_params(email: str = ANN) -> dict[str, Any]:
    return {"loyalty_program_id": 123, "matching": "email", "email": email}




def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def tiers(api: ApiClient, group: int = 10, fmt: str = "json", email: str = ANN) -> Any:
    return ok(api.call("loyalty/account/tiers", fmt=fmt, **member_params(email), tiers_group_id=group))


def eids(reply: Any) -> list[str]:
    return [t["tier_eid"] for t in as_list(reply.data)]


def earn(api: ApiClient, amount: str, email: str = ANN, **params: Any) -> str:
    r = ok(api.call("loyalty/accrue_points", **member_params(email), points_currency_eid="status_points",
                    amount=amount, **params))
    return r.data["transaction_id"]


SEASON = TierGroupSpec(id=20, external_id="season", name="Season", type="period", window_days=30,
                       currency="status_points",
                       tiers=[TierSpec(id=21, eid="s_base", name="Base", threshold="0"),
                              TierSpec(id=22, eid="s_silver", name="Silver", threshold="100"),
                              TierSpec(id=23, eid="s_gold", name="Gold", threshold="300")])


def with_season(rt: Any) -> None:
    spec = programfile.load(example_path())
    spec.programs[0].tier_groups.append(SEASON)
    programfile.apply_spec(rt, spec)


# --- cumulative ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_a_new_member_holds_the_threshold_zero_tier_with_every_field(api, fmt):
    api.member(ANN)
    r = tiers(api, fmt=fmt)
    items = as_list(r.data)
    assert len(items) == 1
    tier = items[0]
    assert set(tier) >= {"tiers_group_type", "tier_eid", "tier_id", "tier_order", "reached_at"}
    assert tier["tiers_group_type"] == "cumulative"
    assert tier["tier_eid"] == "bronze"
    assert str(tier["tier_id"]) == "12"
    assert str(tier["tier_order"]) == "0"
    assert tier["reached_at"] == T0
    assert r.body["points_to_next_tier"] == "1000"


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_accruing_status_points_promotes_to_silver_then_gold_lowest_first(api, clock, fmt):
    api.member(ANN)
    earn(api, "999")
    r = tiers(api, fmt=fmt)
    assert eids(r) == ["bronze"]
    assert r.body["points_to_next_tier"] == "1"

    clock.advance(timedelta(days=1))
    earn(api, "1")
    r = tiers(api, fmt=fmt)
    assert eids(r) == ["bronze", "silver"]
    bronze, silver = as_list(r.data)
    assert [str(t["tier_order"]) for t in (bronze, silver)] == ["0", "1"]
    assert str(silver["tier_id"]) == "13"
    assert bronze["reached_at"] == T0
    assert silver["reached_at"] == "2025-01-16T12:00:00Z"
    assert r.body["points_to_next_tier"] == "4000"

    clock.advance(timedelta(days=1))
    earn(api, "4000")
    r = tiers(api, fmt=fmt)
    assert eids(r) == ["bronze", "silver", "gold"]
    gold = as_list(r.data)[-1]
    assert (str(gold["tier_id"]), str(gold["tier_order"]), gold["reached_at"]) == ("14", "2", "2025-01-17T12:00:00Z")
    # at the top tier there is no next tier: null in JSON, an empty element in XML
    assert r.body["points_to_next_tier"] is None


def test_one_big_accrual_reaches_every_tier_it_passes(api, clock):
    api.member(ANN)
    clock.advance(timedelta(hours=3))
    earn(api, "7000")
    r = tiers(api)
    assert eids(r) == ["bronze", "silver", "gold"]
    assert [t["reached_at"] for t in r.data] == [T0, "2025-01-15T15:00:00Z", "2025-01-15T15:00:00Z"]
    assert r.body["points_to_next_tier"] is None


def test_stars_do_not_count_toward_status_tiers(api):
    api.member(ANN)
    ok(api.call("loyalty/accrue_points", **member_params(), amount="5000"))
    assert eids(tiers(api)) == ["bronze"]


def test_cancelling_a_status_accrual_lowers_the_tier(api):
    api.member(ANN)
    earn(api, "600")
    second = earn(api, "600")
    assert eids(tiers(api)) == ["bronze", "silver"]
    ok(api.call("loyalty/cancel_transaction", transaction_id=second))
    r = tiers(api)
    assert eids(r) == ["bronze"]
    assert r.body["points_to_next_tier"] == "400"


def test_cancelling_drops_gold_to_silver_and_keeps_silvers_reached_at(api, clock):
    api.member(ANN)
    earn(api, "1500")
    clock.advance(timedelta(days=2))
    top = earn(api, "4000")
    assert eids(tiers(api)) == ["bronze", "silver", "gold"]
    ok(api.call("loyalty/cancel_transaction", transaction_id=top))
    r = tiers(api)
    assert eids(r) == ["bronze", "silver"]
    assert r.data[1]["reached_at"] == T0
    assert r.body["points_to_next_tier"] == "3500"


def test_temp_status_accruals_count_only_once_committed(api):
    api.member(ANN)
    temp = earn(api, "1000", is_temp=True)
    assert eids(tiers(api)) == ["bronze"]
    ok(api.call("loyalty/commit_transaction", transaction_id=temp))
    assert eids(tiers(api)) == ["bronze", "silver"]
    rolled = earn(api, "4000", is_temp=True)
    ok(api.call("loyalty/rollback_transaction", transaction_id=rolled))
    assert eids(tiers(api)) == ["bronze", "silver"]


def test_tiers_errors_unknown_group_missing_group_and_non_member(api):
    api.member(ANN)
    r = api.call("loyalty/account/tiers", **member_params(), tiers_group_id=999)
    assert_failure(r, 404, "tier_group_not_found")
    r = api.call("loyalty/account/tiers", fmt="xml", **member_params(), tiers_group_id=999)
    assert_failure(r, 404, "tier_group_not_found")
    assert_failure(api.call("loyalty/account/tiers", **member_params()), 400, "missing_parameter")
    assert_failure(api.call("loyalty/account/tiers", **member_params(), tiers_group_id="gold"), 400,
                   "invalid_parameter")
    api.add_profile("stranger@example.com")
    r = api.call("loyalty/account/tiers", **member_params("stranger@example.com"), tiers_group_id=10)
    assert_failure(r, 404, "not_a_member")


# --- period groups ---------------------------------------------------------------------------------------------------


def test_period_group_drops_at_read_time_when_the_window_moves_past_the_earnings(api, rt, clock):
    fmt = "xml"
    with_season(rt)
    api.member(ANN)
    r = tiers(api, group=20, fmt=fmt)
    assert eids(r) == ["s_base"]
    assert as_list(r.data)[0]["tiers_group_type"] == "period"
    earn(api, "150")
    r = tiers(api, group=20, fmt=fmt)
    assert eids(r) == ["s_base", "s_silver"]
    assert r.body["points_to_next_tier"] == "150"
    # the cumulative group sees the same points, but never drops
    assert eids(tiers(api, group=10, fmt=fmt)) == ["bronze"]

    clock.advance(timedelta(days=29))
    assert eids(tiers(api, group=20, fmt=fmt)) == ["s_base", "s_silver"]
    clock.advance(timedelta(days=2))  # day 31: the 150 points left the 30-day window; no job ran
    r = tiers(api, group=20, fmt=fmt)
    assert eids(r) == ["s_base"]
    assert r.body["points_to_next_tier"] == "100"


def test_period_group_counts_only_the_earnings_inside_the_window(api, rt, clock):
    with_season(rt)
    api.member(ANN)
    earn(api, "60")
    clock.advance(timedelta(days=20))
    earn(api, "60")
    assert eids(tiers(api, group=20)) == ["s_base", "s_silver"]  # 120 in the window
    clock.advance(timedelta(days=11))  # day 31: only the second 60 remain
    r = tiers(api, group=20)
    assert eids(r) == ["s_base"]
    assert r.body["points_to_next_tier"] == "40"
    earn(api, "250")  # 310 in the window
    r = tiers(api, group=20)
    assert eids(r) == ["s_base", "s_silver", "s_gold"]
    assert r.body["points_to_next_tier"] is None
    assert r.data[-1]["reached_at"] == "2025-02-15T12:00:00Z"


def test_period_group_cancel_lowers_the_tier_within_the_window(api, rt):
    with_season(rt)
    api.member(ANN)
    txn = earn(api, "120")
    assert eids(tiers(api, group=20)) == ["s_base", "s_silver"]
    ok(api.call("loyalty/cancel_transaction", transaction_id=txn))
    assert eids(tiers(api, group=20)) == ["s_base"]


def test_reevaluate_period_groups_drops_stored_tiers_without_any_read(api, rt, clock):
    with_season(rt)
    ann = api.member(ANN)
    bob = api.member("bob@example.com")
    earn(api, "350")
    earn(api, "150", email="bob@example.com")

    def stored(profile_id: str, group: int = 20) -> set[int]:
        return set(rt.store.read(lambda conn: tiers_repo.reached_rows(conn, 123, profile_id, group)))

    assert stored(ann) == {21, 22, 23}
    assert stored(bob) == {21, 22}
    clock.advance(timedelta(days=10))
    assert reevaluate_period_groups(rt) == 0  # nothing left the window yet
    clock.advance(timedelta(days=21))
    assert reevaluate_period_groups(rt) == 2
    assert stored(ann) == {21}
    assert stored(bob) == {21}
    assert stored(ann, group=10) == {12}  # the cumulative group is not touched
    assert reevaluate_period_groups(rt) == 0  # idempotent
    assert eids(tiers(api, group=20)) == ["s_base"]
