"""loyalty/register_member and loyalty/delete_member (altcraft-api.md §5.1–5.2), JSON and XML.

The example program 123 has currencies `stars` (iid 1, precision 2, initial_balance 50, default) and
`status_points` (iid 2, precision 0, no initial balance). Every test gets a fresh store (SQLite and PostgreSQL);
most check both body formats inside one test to keep the number of store set-ups small.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from loyalty.storage.tables import accounts, members, transactions
from tests.helpers import ApiClient, Reply

FORMATS = ("json", "xml")
PROGRAM = 123


def register(api: ApiClient, email: str, fmt: str = "json", **params: Any) -> Reply:
    return api.call("loyalty/register_member", fmt=fmt, loyalty_program_id=PROGRAM, matching="email", email=email,
                    **params)


def delete(api: ApiClient, email: str, fmt: str = "json", **params: Any) -> Reply:
    return api.call("loyalty/delete_member", fmt=fmt, loyalty_program_id=PROGRAM, matching="email", email=email,
                    **params)


def balance(api: ApiClient, email: str, **params: Any) -> Reply:
    return api.call("loyalty/account/balance", loyalty_program_id=PROGRAM, matching="email", email=email, **params)


def assert_error(r: Reply, status: int, code: str, names: str | None = None) -> None:
    assert r.status == status, r.body
    assert r.error == status, r.body
    assert r.code == code, r.body
    assert isinstance(r.body["error_text"], str) and r.body["error_text"]
    if names is not None:
        assert names in r.body["error_text"], r.body


def txns(rt: Any, profile_id: str) -> list[dict[str, Any]]:
    stmt = (select(transactions).where(transactions.c.program_id == PROGRAM, transactions.c.profile_id == profile_id)
            .order_by(transactions.c.id))
    return rt.store.read(lambda conn: [dict(r._mapping) for r in conn.execute(stmt)])


def account_rows(rt: Any, profile_id: str) -> dict[int, dict[str, Any]]:
    stmt = select(accounts).where(accounts.c.program_id == PROGRAM, accounts.c.profile_id == profile_id)
    return rt.store.read(lambda conn: {r.currency_iid: dict(r._mapping) for r in conn.execute(stmt)})


def member_row(rt: Any, profile_id: str) -> dict[str, Any] | None:
    stmt = select(members).where(members.c.program_id == PROGRAM, members.c.profile_id == profile_id)
    row = rt.store.read(lambda conn: conn.execute(stmt).first())
    return dict(row._mapping) if row else None


def utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------------------
# register_member


def test_register_and_delete_answer_with_a_top_level_profile_id_and_no_data(api):
    for fmt in FORMATS:
        email = f"ann.{fmt}@example.com"
        pid = api.add_profile(email)
        for r in (register(api, email, fmt), delete(api, email, fmt)):
            assert r.status == 200 and r.error == 0, r.body
            assert r.body == {"error": r.body["error"], "error_text": "Successful operation", "profile_id": pid}


def test_first_registration_credits_each_currencys_initial_balance_once(api, rt):
    pid = api.add_profile("ann@example.com")
    for fmt in FORMATS:  # the second registration is a repeat: idempotent, nothing changes
        r = register(api, "ann@example.com", fmt)
        assert r.status == 200 and r.body["profile_id"] == pid, r.body
    assert api.balance("ann@example.com") == {"total_balance": "50.00", "active_balance": "50.00",
                                              "pending_balance": "0.00", "held_balance": "0.00",
                                              "temp_accrued_balance": "0.00"}
    assert api.balance("ann@example.com", points_currency_eid="status_points")["total_balance"] == "0"
    history = txns(rt, pid)
    assert [(t["type"], t["status"], t["currency_iid"], t["amount"]) for t in history] == [
        ("initial", "committed", 1, 5000)]
    assert history[0]["balance_before"] == 0 and history[0]["balance_after"] == 5000


def test_repeated_registration_changes_nothing_even_with_another_date(api, rt):
    pid = api.add_profile("ann@example.com")
    assert register(api, "ann@example.com", registration_date="2024-06-01T00:00:00Z").status == 200
    before = member_row(rt, pid)
    r = register(api, "ann@example.com", "xml", registration_date="2024-01-01T00:00:00Z")
    assert r.status == 200 and r.body["profile_id"] == pid
    assert member_row(rt, pid) == before
    assert utc(before["registered_at"]) == datetime(2024, 6, 1, tzinfo=UTC)
    assert len(txns(rt, pid)) == 1
    assert api.balance("ann@example.com")["active_balance"] == "50.00"


def test_registration_date_in_the_past_is_kept_in_utc(api, rt, clock):
    for fmt in FORMATS:
        pid = api.add_profile(f"past.{fmt}@example.com")
        r = register(api, f"past.{fmt}@example.com", fmt, registration_date="2024-12-01T10:00:00+03:00")
        assert r.status == 200, r.body
        assert utc(member_row(rt, pid)["registered_at"]) == datetime(2024, 12, 1, 7, tzinfo=UTC)
    pid = api.add_profile("now@example.com")
    r = register(api, "now@example.com", registration_date=clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert r.status == 200, r.body  # "now" is not the future
    assert utc(member_row(rt, pid)["registered_at"]) == clock.now()


def test_registration_date_in_the_future_or_without_offset_is_400_and_enrols_nobody(api, rt, clock):
    pid = api.add_profile("ann@example.com")
    future = (clock.now() + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for fmt in FORMATS:
        for bad in (future, "2030-01-01T00:00:00+03:00", "2024-09-01T12:34:56", "2024-09-01", "yesterday"):
            r = register(api, "ann@example.com", fmt, registration_date=bad)
            assert_error(r, 400, "invalid_parameter", "registration_date")
    assert member_row(rt, pid) is None
    assert txns(rt, pid) == []
    assert_error(balance(api, "ann@example.com"), 404, "not_a_member")


def test_register_finds_the_profile_by_every_matching_mode(api):
    ids = {
        "phone": api.add_profile("p@example.com", phones=["+7 (912) 345-67-89"]),
        "profile_id": api.add_profile("i@example.com"),
        "custom": api.add_profile("c@example.com", card_no=123456),
    }
    lookups = {"phone": {"phone": "+7 912 345.67.89"}, "profile_id": {"profile_id": ids["profile_id"]},
               "custom": {"field_name": "card_no", "field_value": "123456"}}
    for fmt in FORMATS:
        for mode, lookup in lookups.items():
            r = api.call("loyalty/register_member", fmt=fmt, loyalty_program_id=PROGRAM, matching=mode, **lookup)
            assert r.status == 200 and r.body["profile_id"] == ids[mode], (mode, fmt, r.body)
    for email in ("p@example.com", "i@example.com", "c@example.com"):
        assert api.balance(email)["active_balance"] == "50.00"


def test_register_with_ambiguous_or_missing_lookup_is_refused(api):
    api.add_profile("a@example.com", phones=["+1 555 0100"])
    api.add_profile("b@example.com", phones=["+1-555-0100"])
    for fmt in FORMATS:
        r = api.call("loyalty/register_member", fmt=fmt, loyalty_program_id=PROGRAM, matching="phone",
                     phone="+15550100")
        assert_error(r, 409, "ambiguous_match")
        r = api.call("loyalty/register_member", fmt=fmt, loyalty_program_id=PROGRAM, matching="phone",
                     email="a@example.com")
        assert_error(r, 400, "missing_parameter", "phone")
        r = api.call("loyalty/register_member", fmt=fmt, loyalty_program_id=PROGRAM, email="a@example.com")
        assert_error(r, 400, "missing_parameter", "matching")
    assert_error(balance(api, "a@example.com"), 404, "not_a_member")


# ---------------------------------------------------------------------------------------------------------------
# delete_member


def test_delete_forfeits_every_point_and_keeps_the_history(api, rt, clock):
    pid = api.member("ann@example.com")  # 50.00 initial
    call = {"loyalty_program_id": PROGRAM, "matching": "email", "email": "ann@example.com"}
    assert api.call("loyalty/accrue_points", amount="100.50", **call).status == 200
    r = api.call("loyalty/accrue_points", amount="10", **call,
                 activation_date=(clock.now() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert r.status == 200, r.body
    assert api.call("loyalty/accrue_points", amount="7", points_currency_eid="status_points", **call).status == 200
    assert api.call("loyalty/redeeme_points", amount="5", is_temp=True, **call).status == 200
    assert api.call("loyalty/accrue_points", amount="3", is_temp=True, **call).status == 200
    assert api.balance("ann@example.com") == {"total_balance": "160.50", "active_balance": "145.50",
                                              "pending_balance": "10.00", "held_balance": "5.00",
                                              "temp_accrued_balance": "3.00"}
    history_before = txns(rt, pid)

    r = delete(api, "ann@example.com")
    assert r.status == 200 and r.body["profile_id"] == pid, r.body

    for iid, acc in account_rows(rt, pid).items():
        assert (acc["active"], acc["pending"], acc["held"], acc["temp_accrued"], acc["debt"]) == (0, 0, 0, 0, 0), iid
    history = txns(rt, pid)
    kept = {t["id"] for t in history}
    assert {t["id"] for t in history_before} <= kept  # nothing removed from the history
    forfeits = {t["currency_iid"]: t for t in history if t["type"] == "forfeit"}
    assert set(forfeits) == {1, 2}
    assert forfeits[1]["status"] == "committed" and forfeits[1]["balance_after"] == 0
    # 50 + 100.50 + 10 pending: the hold went back to its lot first; the temp accrual never made a lot
    assert forfeits[1]["amount"] == 16050
    assert forfeits[2]["amount"] == 7 and forfeits[2]["balance_before"] == 7
    assert all(t["status"] != "temp" for t in history)  # open temporary transactions were resolved
    assert member_row(rt, pid)["status"] == "removed"
    assert_error(balance(api, "ann@example.com"), 404, "not_a_member")


def test_re_registration_after_delete_gives_no_new_initial_balance(api, rt):
    for fmt in FORMATS:
        email = f"ann.{fmt}@example.com"
        pid = api.member(email)
        assert delete(api, email, fmt).status == 200
        r = register(api, email, fmt)
        assert r.status == 200 and r.body["profile_id"] == pid, r.body
        assert api.balance(email)["active_balance"] == "0.00"
        assert [t["type"] for t in txns(rt, pid)] == ["initial", "forfeit"]
        assert member_row(rt, pid)["status"] == "active"
        # a member again: points can be earned
        r = api.call("loyalty/accrue_points", loyalty_program_id=PROGRAM, matching="email", email=email, amount="1")
        assert r.status == 200 and r.data["balance"] == "1.00", r.body


def test_delete_of_a_non_member_is_404_not_a_member(api):
    api.add_profile("never@example.com")
    api.member("gone@example.com")
    assert delete(api, "gone@example.com").status == 200
    for fmt in FORMATS:
        assert_error(delete(api, "never@example.com", fmt), 404, "not_a_member")
        assert_error(delete(api, "gone@example.com", fmt), 404, "not_a_member")  # deleting twice


def test_points_for_a_profile_that_is_not_a_member_are_404_not_a_member(api):
    api.add_profile("never@example.com")
    api.member("gone@example.com")
    assert delete(api, "gone@example.com").status == 200
    for fmt in FORMATS:
        for email in ("never@example.com", "gone@example.com"):
            for endpoint in ("loyalty/accrue_points", "loyalty/redeeme_points"):
                r = api.call(endpoint, fmt=fmt, loyalty_program_id=PROGRAM, matching="email", email=email,
                             amount="10")
                assert_error(r, 404, "not_a_member")
            assert_error(balance(api, email), 404, "not_a_member")


def test_unknown_program_is_404_program_not_found(api):
    api.add_profile("ann@example.com")
    for fmt in FORMATS:
        for endpoint in ("loyalty/register_member", "loyalty/delete_member"):
            r = api.call(endpoint, fmt=fmt, loyalty_program_id=999, matching="email", email="ann@example.com")
            assert_error(r, 404, "program_not_found")


def test_unmatched_profile_is_404_profile_not_found(api):
    api.member("ann@example.com")
    for fmt in FORMATS:
        for endpoint in ("loyalty/register_member", "loyalty/delete_member"):
            for lookup in ({"matching": "email", "email": "ghost@example.com"},
                           {"matching": "phone", "phone": "+1 555 0199"},
                           {"matching": "profile_id", "profile_id": "0" * 24},
                           {"matching": "custom", "field_name": "user_id", "field_value": "nobody"}):
                r = api.call(endpoint, fmt=fmt, loyalty_program_id=PROGRAM, **lookup)
                assert_error(r, 404, "profile_not_found")
    assert api.balance("ann@example.com")["active_balance"] == "50.00"  # the real member is untouched
