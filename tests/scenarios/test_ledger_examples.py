"""Worked examples of the ledger (engine.md §2, altcraft-api.md §5.3–5.8), one behaviour per test.

Every example starts with Ann, a fresh member of the example program 123: her first enrolment gave her the
initial 50 stars, in a lot that expires 365 days after the start of the clock. Stars have 2 decimals, so
"100.00" on the wire is 10000 units in the store. After each example the invariants of engine.md §3 are checked
with `verify_all`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from loyalty.services import programfile
from loyalty.services.programfile_schema import validate_document
from loyalty.services.sweeper import sweep_all
from loyalty.services.verify import verify_all
from loyalty.storage import ledger_repo
from loyalty.storage.tables import transactions

ANN = "ann@example.com"
BOB = "bob@example.com"
PROGRAM = 123


# --- helpers ------------------------------------------------------------------------------------------------

def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ok(reply: Any) -> dict[str, Any]:
    assert reply.status == 200 and reply.error == 0, reply.body
    return reply.data


def fails(reply: Any, status: int, code: str) -> str:
    assert reply.status == status and reply.error == status and reply.code == code, reply.body
    return reply.body["error_text"]


def accrue(api: Any, amount: Any, email: str = ANN, program: int = PROGRAM, **kw: Any) -> Any:
    return api.call("loyalty/accrue_points", loyalty_program_id=program, matching="email", email=email,
                    amount=amount, **kw)


def redeem(api: Any, amount: Any, email: str = ANN, program: int = PROGRAM, **kw: Any) -> Any:
    return api.call("loyalty/redeeme_points", loyalty_program_id=program, matching="email", email=email,
                    amount=amount, **kw)


def commit(api: Any, **ref: Any) -> Any:
    return api.call("loyalty/commit_transaction", **ref)


def rollback(api: Any, **ref: Any) -> Any:
    return api.call("loyalty/rollback_transaction", **ref)


def cancel(api: Any, **ref: Any) -> Any:
    return api.call("loyalty/cancel_transaction", **ref)


def balances(api: Any, email: str = ANN, program: int = PROGRAM, **kw: Any) -> dict[str, str]:
    return api.balance(email, program_id=program, **kw)


def active(api: Any, email: str = ANN) -> str:
    return balances(api, email)["active_balance"]


def lot(rt: Any, txn_id: str) -> Any:
    return rt.store.read(lambda conn: ledger_repo.get_lot(conn, txn_id))


def txn(rt: Any, txn_id: str) -> Any:
    return rt.store.read(lambda conn: ledger_repo.get_txn(conn, txn_id))


def txns_of_type(rt: Any, kind: str) -> list[Any]:
    return rt.store.read(lambda conn: conn.execute(
        select(transactions).where(transactions.c.type == kind).order_by(transactions.c.recorded_at)).all())


def assert_invariants(rt: Any) -> None:
    report = verify_all(rt)
    assert report.problems == []


# Examples that only exercise request validation (nothing reaches the store) run on SQLite alone, to keep the
# suite fast; the core of every movement runs on both stores.
validation_only = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
# Variations of an example that already runs on both stores, and whose SQL is the same, run on SQLite alone too:
# the shared fixtures cost about a second per PostgreSQL test.
sqlite_only = validation_only


@pytest.fixture(autouse=True)
def invariants_hold_after_each_example(rt: Any) -> Any:
    yield
    assert_invariants(rt)


@pytest.fixture
def ann(api: Any) -> str:
    api.member(ANN)
    return ANN


@pytest.fixture
def now(clock: Any) -> datetime:
    return clock.now()


SECOND_PROGRAM = {
    "databases": [{"id": 2, "name": "Shop"}],
    "programs": [{
        "id": 200, "name": "Coins", "external_id": "coins_program", "database": 2,
        "currencies": [{"iid": 1, "eid": "coins", "name": "Coins", "kind": "standard", "precision": 0,
                        "lifetime": "never", "default": True}],
    }],
}


@pytest.fixture
def coins_member(rt: Any, api: Any) -> str:
    """Cat, a member of program 200 on database 2, whose only currency `coins` never expires by default."""
    spec, problems = validate_document(SECOND_PROGRAM)
    assert not problems and spec is not None, problems
    programfile.apply_spec(rt, spec)
    api.add_profile("cat@example.com", db_id=2)
    r = api.call("loyalty/register_member", loyalty_program_id=200, matching="email", email="cat@example.com")
    assert r.status == 200, r.body
    return "cat@example.com"


# --- lots and the order in which they are spent ---------------------------------------------------------------

def test_points_accrued_without_dates_are_active_at_once_and_live_for_the_currency_lifetime(api, rt, ann, now):
    r = ok(accrue(api, "100.00"))
    assert r["balance"] == "150.00"
    made = lot(rt, r["transaction_id"])
    assert (made.original, made.remaining, made.is_active) == (10000, 10000, True)
    assert made.expires_at == now + timedelta(days=365)


@sqlite_only
def test_points_live_until_the_last_second_of_their_lifetime(api, ann, clock):
    ok(accrue(api, "100.00"))
    clock.advance(timedelta(days=365) - timedelta(seconds=1))
    assert active(api) == "150.00"
    clock.advance(timedelta(seconds=1))
    assert active(api) == "0.00"


def test_a_redemption_takes_from_the_lot_that_expires_soonest(api, rt, ann, now, clock):
    later = ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=30))))
    sooner = ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=10))))
    ok(redeem(api, "100"))
    assert lot(rt, sooner["transaction_id"]).remaining == 0
    assert lot(rt, later["transaction_id"]).remaining == 10000
    clock.advance(timedelta(days=10, seconds=1))
    assert active(api) == "150.00"  # the spent lot expired with nothing left in it
    clock.advance(timedelta(days=20))
    assert active(api) == "50.00"  # the untouched lot expired whole


def test_a_redemption_spills_over_into_the_next_lot_in_expiry_order(api, rt, ann, now, clock):
    first = ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=10))))
    second = ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=20))))
    assert ok(redeem(api, "120"))["balance"] == "130.00"
    assert lot(rt, first["transaction_id"]).remaining == 0
    assert lot(rt, second["transaction_id"]).remaining == 8000
    clock.advance(timedelta(days=20))
    assert active(api) == "50.00"  # the initial 50 (expiring last) were never touched


def test_lots_expiring_at_the_same_moment_are_spent_oldest_first(api, rt, ann, now, clock):
    expiry = iso(now + timedelta(days=10))
    older = ok(accrue(api, "100", expiration_date=expiry))
    clock.advance(timedelta(minutes=1))
    newer = ok(accrue(api, "100", expiration_date=expiry))
    ok(redeem(api, "30"))
    assert lot(rt, older["transaction_id"]).remaining == 7000
    assert lot(rt, newer["transaction_id"]).remaining == 10000


def test_never_expiring_points_are_spent_last(api, rt, coins_member, now):
    forever = ok(accrue(api, "100", email=coins_member, program=200))
    assert lot(rt, forever["transaction_id"]).expires_at is None
    far = ok(accrue(api, "100", email=coins_member, program=200,
                    expiration_date=iso(now + timedelta(days=3000))))
    assert ok(redeem(api, "30", email=coins_member, program=200))["balance"] == "170"
    assert lot(rt, far["transaction_id"]).remaining == 70
    assert lot(rt, forever["transaction_id"]).remaining == 100


# --- pending activation ---------------------------------------------------------------------------------------

def test_points_with_a_future_activation_date_wait_in_pending_balance(api, ann, now):
    r = ok(accrue(api, "100", activation_date=iso(now + timedelta(days=5))))
    assert r["balance"] == "50.00"  # the response gives the active balance
    assert balances(api) == {"total_balance": "150.00", "active_balance": "50.00", "pending_balance": "100.00",
                             "held_balance": "0.00", "temp_accrued_balance": "0.00"}


def test_pending_points_cannot_be_spent_before_their_activation(api, ann, now):
    ok(accrue(api, "100", activation_date=iso(now + timedelta(days=5))))
    fails(redeem(api, "100"), 422, "insufficient_points")
    assert active(api) == "50.00"


def test_pending_points_become_active_when_the_clock_passes_the_activation_date_without_any_job(api, ann, now,
                                                                                                 clock):
    ok(accrue(api, "100", activation_date=iso(now + timedelta(days=5))))
    clock.advance(timedelta(days=5) - timedelta(seconds=1))
    assert balances(api)["pending_balance"] == "100.00"
    clock.advance(timedelta(seconds=1))
    assert balances(api) == {"total_balance": "150.00", "active_balance": "150.00", "pending_balance": "0.00",
                             "held_balance": "0.00", "temp_accrued_balance": "0.00"}
    assert ok(redeem(api, "150"))["balance"] == "0.00"


@sqlite_only
def test_a_redemption_sees_points_that_activated_since_the_last_read(api, ann, now, clock):
    ok(accrue(api, "100", activation_date=iso(now + timedelta(days=5))))
    clock.advance(timedelta(days=6))
    assert ok(redeem(api, "120"))["balance"] == "30.00"


def test_the_lifetime_of_a_pending_lot_counts_from_its_activation(api, rt, ann, now, clock):
    activation = now + timedelta(days=5)
    r = ok(accrue(api, "100", activation_date=iso(activation)))
    assert lot(rt, r["transaction_id"]).expires_at == activation + timedelta(days=365)
    clock.advance(timedelta(days=366))
    assert active(api) == "100.00"  # the initial 50 expired, the late lot has 4 days left
    clock.advance(timedelta(days=4))
    assert active(api) == "0.00"


# --- expiration -------------------------------------------------------------------------------------------------

def test_expired_points_leave_the_balance_at_read_time(api, ann, now, clock):
    ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=10))))
    clock.advance(timedelta(days=10))
    assert balances(api)["active_balance"] == "50.00"
    assert balances(api)["total_balance"] == "50.00"


@sqlite_only
def test_expired_points_cannot_be_redeemed_even_before_any_job_ran(api, ann, now, clock):
    ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=10))))
    clock.advance(timedelta(days=11))
    text = fails(redeem(api, "60"), 422, "insufficient_points")
    assert "50.00" in text


def test_the_sweeper_writes_an_expiration_transaction_for_a_lot_that_expired(api, rt, ann, now, clock):
    r = ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=10))))
    clock.advance(timedelta(days=11))
    assert txns_of_type(rt, "expiration") == []
    assert sweep_all(rt) >= 1
    [expiration] = txns_of_type(rt, "expiration")
    assert (expiration.amount, expiration.status) == (10000, "committed")
    assert (expiration.balance_before, expiration.balance_after) == (15000, 5000)
    gone = lot(rt, r["transaction_id"])
    assert (gone.remaining, gone.expired) == (0, 10000)
    account = rt.store.read(lambda conn: ledger_repo.read_account(conn, PROGRAM, expiration.profile_id, 1))
    assert account.active == 5000
    assert active(api) == "50.00"


def test_sweeping_twice_expires_nothing_the_second_time(api, rt, ann, now, clock):
    ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=10))))
    clock.advance(timedelta(days=11))
    sweep_all(rt)
    assert sweep_all(rt) == 0
    assert len(txns_of_type(rt, "expiration")) == 1
    assert active(api) == "50.00"


def test_only_the_unspent_rest_of_a_lot_expires(api, rt, ann, now, clock):
    ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=10))))
    ok(redeem(api, "30"))
    clock.advance(timedelta(days=10))
    assert active(api) == "50.00"
    [expiration] = txns_of_type(rt, "expiration")
    assert expiration.amount == 7000


# --- holds (temporary redemptions) ------------------------------------------------------------------------------

def test_a_temporary_redemption_holds_the_points_at_once(api, ann):
    r = ok(redeem(api, "30", is_temp=True))
    assert r["balance"] == "20.00"
    assert balances(api) == {"total_balance": "50.00", "active_balance": "20.00", "pending_balance": "0.00",
                             "held_balance": "30.00", "temp_accrued_balance": "0.00"}


@sqlite_only
def test_held_points_cannot_be_spent_a_second_time(api, ann):
    ok(redeem(api, "30", is_temp=True))
    text = fails(redeem(api, "30"), 422, "insufficient_points")
    assert "30.00" in text and "20.00" in text


def test_committing_a_hold_makes_the_redemption_final_under_the_same_transaction_id(api, rt, ann):
    held = ok(redeem(api, "30", is_temp=True))
    r = ok(commit(api, transaction_id=held["transaction_id"]))
    assert r == {"transaction_id": held["transaction_id"], "balance": "20.00"}
    assert balances(api) == {"total_balance": "20.00", "active_balance": "20.00", "pending_balance": "0.00",
                             "held_balance": "0.00", "temp_accrued_balance": "0.00"}
    assert txn(rt, held["transaction_id"]).status == "committed"


def test_rolling_back_a_hold_returns_the_points(api, rt, ann):
    held = ok(redeem(api, "30", is_temp=True))
    assert ok(rollback(api, transaction_id=held["transaction_id"]))["balance"] == "50.00"
    b = balances(api)
    assert (b["active_balance"], b["held_balance"], b["total_balance"]) == ("50.00", "0.00", "50.00")
    assert txn(rt, held["transaction_id"]).status == "rolled_back"


def test_a_hold_that_reaches_its_timeout_returns_the_points_without_any_job(api, ann, clock):
    ok(redeem(api, "30", is_temp=True, temp_timeout_sec=60))
    clock.advance(timedelta(seconds=59))
    assert balances(api)["held_balance"] == "30.00"
    clock.advance(timedelta(seconds=1))
    b = balances(api)
    assert (b["active_balance"], b["held_balance"]) == ("50.00", "0.00")


@sqlite_only
def test_a_hold_without_a_timeout_lasts_the_default_900_seconds(api, ann, clock):
    ok(redeem(api, "30", is_temp=True))
    clock.advance(timedelta(seconds=899))
    assert balances(api)["held_balance"] == "30.00"
    clock.advance(timedelta(seconds=1))
    assert balances(api)["held_balance"] == "0.00"


def test_the_sweeper_rolls_back_a_hold_that_timed_out(api, rt, ann, clock):
    held = ok(redeem(api, "30", is_temp=True, temp_timeout_sec=60))
    clock.advance(timedelta(seconds=61))
    sweep_all(rt)
    assert txn(rt, held["transaction_id"]).status == "rolled_back"
    assert active(api) == "50.00"


def test_committing_a_hold_after_its_timeout_is_refused_and_names_the_state(api, ann, clock):
    held = ok(redeem(api, "30", is_temp=True, temp_timeout_sec=60))
    clock.advance(timedelta(seconds=61))
    text = fails(commit(api, transaction_id=held["transaction_id"]), 409, "transaction_state")
    assert "rolled_back" in text
    assert active(api) == "50.00"


def test_rolling_back_a_committed_redemption_is_refused_and_names_the_state(api, ann):
    held = ok(redeem(api, "30", is_temp=True))
    ok(commit(api, transaction_id=held["transaction_id"]))
    text = fails(rollback(api, transaction_id=held["transaction_id"]), 409, "transaction_state")
    assert "committed" in text
    assert active(api) == "20.00"


@sqlite_only
def test_rolling_back_a_plain_redemption_is_refused(api, ann):
    spent = ok(redeem(api, "30"))
    fails(rollback(api, transaction_id=spent["transaction_id"]), 409, "transaction_state")
    assert active(api) == "20.00"


def test_committing_a_hold_twice_succeeds_and_spends_once(api, ann):
    held = ok(redeem(api, "30", is_temp=True))
    first = ok(commit(api, transaction_id=held["transaction_id"]))
    second = ok(commit(api, transaction_id=held["transaction_id"]))
    assert first == second == {"transaction_id": held["transaction_id"], "balance": "20.00"}
    assert balances(api)["total_balance"] == "20.00"


def test_rolling_back_a_hold_twice_succeeds_and_returns_the_points_once(api, ann):
    held = ok(redeem(api, "30", is_temp=True))
    ok(rollback(api, transaction_id=held["transaction_id"]))
    assert ok(rollback(api, transaction_id=held["transaction_id"]))["balance"] == "50.00"
    assert balances(api)["total_balance"] == "50.00"


@sqlite_only
def test_rolling_back_a_hold_that_timed_out_succeeds_as_a_repeat(api, ann, clock):
    held = ok(redeem(api, "30", is_temp=True, temp_timeout_sec=10))
    clock.advance(timedelta(seconds=11))
    assert ok(rollback(api, transaction_id=held["transaction_id"]))["balance"] == "50.00"


def test_cancelling_a_redemption_twice_succeeds_and_returns_the_points_once(api, ann):
    spent = ok(redeem(api, "30"))
    assert ok(cancel(api, transaction_id=spent["transaction_id"]))["balance"] == "50.00"
    assert ok(cancel(api, transaction_id=spent["transaction_id"]))["balance"] == "50.00"
    assert balances(api)["total_balance"] == "50.00"


def test_cancelling_an_open_hold_returns_the_points_and_it_can_no_longer_be_committed(api, rt, ann):
    held = ok(redeem(api, "30", is_temp=True))
    assert ok(cancel(api, transaction_id=held["transaction_id"]))["balance"] == "50.00"
    assert txn(rt, held["transaction_id"]).status == "cancelled"
    text = fails(commit(api, transaction_id=held["transaction_id"]), 409, "transaction_state")
    assert "cancelled" in text
    assert balances(api)["held_balance"] == "0.00"


def test_a_hold_is_not_expired_while_open_even_when_its_lot_expires(api, ann, now, clock):
    ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=1))))
    ok(redeem(api, "100", is_temp=True, temp_timeout_sec=3 * 86400))
    clock.advance(timedelta(days=2))
    b = balances(api)
    assert (b["active_balance"], b["held_balance"], b["total_balance"]) == ("50.00", "100.00", "150.00")


@sqlite_only
def test_a_hold_on_a_lot_that_expired_meanwhile_can_still_be_committed(api, ann, now, clock):
    ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=1))))
    held = ok(redeem(api, "100", is_temp=True, temp_timeout_sec=3 * 86400))
    clock.advance(timedelta(days=2))
    assert ok(commit(api, transaction_id=held["transaction_id"]))["balance"] == "50.00"
    assert balances(api)["total_balance"] == "50.00"


def test_held_points_whose_lot_expired_meanwhile_expire_when_the_hold_is_rolled_back(api, rt, ann, now, clock):
    ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=1))))
    held = ok(redeem(api, "100", is_temp=True, temp_timeout_sec=3 * 86400))
    clock.advance(timedelta(days=2))
    assert ok(rollback(api, transaction_id=held["transaction_id"]))["balance"] == "50.00"
    [expiration] = txns_of_type(rt, "expiration")
    assert expiration.amount == 10000
    assert balances(api) == {"total_balance": "50.00", "active_balance": "50.00", "pending_balance": "0.00",
                             "held_balance": "0.00", "temp_accrued_balance": "0.00"}


@sqlite_only
def test_held_points_whose_lot_expired_meanwhile_expire_when_the_hold_times_out(api, rt, ann, now, clock):
    ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=1))))
    ok(redeem(api, "100", is_temp=True, temp_timeout_sec=3 * 86400))
    clock.advance(timedelta(days=4))
    assert balances(api)["total_balance"] == "50.00"
    assert [t.amount for t in txns_of_type(rt, "expiration")] == [10000]


# --- temporary accruals -----------------------------------------------------------------------------------------

def test_a_temporary_accrual_shows_only_in_temp_accrued_balance(api, ann):
    r = ok(accrue(api, "40", is_temp=True))
    assert r["balance"] == "50.00"
    assert balances(api) == {"total_balance": "50.00", "active_balance": "50.00", "pending_balance": "0.00",
                             "held_balance": "0.00", "temp_accrued_balance": "40.00"}


@sqlite_only
def test_temporarily_accrued_points_cannot_be_spent(api, ann):
    ok(accrue(api, "40", is_temp=True))
    fails(redeem(api, "60"), 422, "insufficient_points")


def test_committing_a_temporary_accrual_creates_its_lot(api, rt, ann):
    temp = ok(accrue(api, "40", is_temp=True))
    assert lot(rt, temp["transaction_id"]) is None
    r = ok(commit(api, transaction_id=temp["transaction_id"]))
    assert r == {"transaction_id": temp["transaction_id"], "balance": "90.00"}
    made = lot(rt, temp["transaction_id"])
    assert (made.original, made.remaining, made.is_active) == (4000, 4000, True)
    assert balances(api) == {"total_balance": "90.00", "active_balance": "90.00", "pending_balance": "0.00",
                             "held_balance": "0.00", "temp_accrued_balance": "0.00"}
    assert ok(redeem(api, "90"))["balance"] == "0.00"


@sqlite_only
def test_a_committed_temporary_accrual_with_a_future_activation_date_is_pending(api, ann, now):
    temp = ok(accrue(api, "40", is_temp=True, activation_date=iso(now + timedelta(days=3))))
    ok(commit(api, transaction_id=temp["transaction_id"]))
    b = balances(api)
    assert (b["active_balance"], b["pending_balance"], b["temp_accrued_balance"]) == ("50.00", "40.00", "0.00")


def test_rolling_back_a_temporary_accrual_drops_its_points(api, rt, ann):
    temp = ok(accrue(api, "40", is_temp=True))
    assert ok(rollback(api, transaction_id=temp["transaction_id"]))["balance"] == "50.00"
    assert balances(api)["temp_accrued_balance"] == "0.00"
    assert lot(rt, temp["transaction_id"]) is None


def test_a_temporary_accrual_that_times_out_is_dropped_and_cannot_be_committed(api, rt, ann, clock):
    temp = ok(accrue(api, "40", is_temp=True, temp_timeout_sec=30))
    clock.advance(timedelta(seconds=30))
    assert balances(api)["temp_accrued_balance"] == "0.00"
    fails(commit(api, transaction_id=temp["transaction_id"]), 409, "transaction_state")
    assert txn(rt, temp["transaction_id"]).status == "rolled_back"
    assert active(api) == "50.00"


@sqlite_only
def test_committing_a_temporary_accrual_twice_credits_it_once(api, ann):
    temp = ok(accrue(api, "40", is_temp=True))
    ok(commit(api, transaction_id=temp["transaction_id"]))
    assert ok(commit(api, transaction_id=temp["transaction_id"]))["balance"] == "90.00"
    assert active(api) == "90.00"


# --- cancelling accruals, debt ------------------------------------------------------------------------------------

def test_cancelling_an_unspent_accrual_removes_its_points(api, rt, ann):
    r = ok(accrue(api, "100"))
    assert ok(cancel(api, transaction_id=r["transaction_id"]))["balance"] == "50.00"
    assert balances(api)["total_balance"] == "50.00"
    assert txn(rt, r["transaction_id"]).status == "cancelled"


@sqlite_only
def test_cancelling_a_pending_accrual_removes_its_pending_points(api, ann, now, clock):
    r = ok(accrue(api, "100", activation_date=iso(now + timedelta(days=5))))
    ok(cancel(api, transaction_id=r["transaction_id"]))
    assert balances(api)["pending_balance"] == "0.00"
    clock.advance(timedelta(days=6))
    assert balances(api)["total_balance"] == "50.00"


def test_cancelling_a_partly_spent_accrual_takes_the_spent_part_from_other_lots(api, rt, ann, now):
    initial = ok(api.call("loyalty/account/balance", loyalty_program_id=PROGRAM, matching="email", email=ANN))
    assert initial["active_balance"] == "50.00"
    r = ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=10))))
    ok(redeem(api, "30"))  # taken from the 100, which expires first
    assert ok(cancel(api, transaction_id=r["transaction_id"]))["balance"] == "20.00"
    assert balances(api) == {"total_balance": "20.00", "active_balance": "20.00", "pending_balance": "0.00",
                             "held_balance": "0.00", "temp_accrued_balance": "0.00"}


def test_cancelling_a_spent_accrual_leaves_debt_when_other_lots_cannot_cover_it(api, ann, now):
    r = ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=10))))
    ok(redeem(api, "80"))  # all from the 100; 20 of it and the initial 50 remain
    assert ok(cancel(api, transaction_id=r["transaction_id"]))["balance"] == "-30.00"
    assert balances(api) == {"total_balance": "-30.00", "active_balance": "-30.00", "pending_balance": "0.00",
                             "held_balance": "0.00", "temp_accrued_balance": "0.00"}


@sqlite_only
def test_a_member_in_debt_cannot_redeem(api, ann, now):
    r = ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=10))))
    ok(redeem(api, "150"))
    ok(cancel(api, transaction_id=r["transaction_id"]))
    text = fails(redeem(api, "0.01"), 422, "insufficient_points")
    assert "-100.00" in text


def test_later_accruals_pay_off_debt_first(api, rt, ann, now):
    r = ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=10))))
    ok(redeem(api, "80"))
    ok(cancel(api, transaction_id=r["transaction_id"]))  # debt 30
    small = ok(accrue(api, "20"))
    assert small["balance"] == "-10.00"
    assert lot(rt, small["transaction_id"]).remaining == 0
    assert_invariants(rt)
    big = ok(accrue(api, "50"))
    assert big["balance"] == "40.00"
    assert lot(rt, big["transaction_id"]).remaining == 4000
    assert balances(api)["total_balance"] == "40.00"


def test_debt_is_paid_off_by_points_when_they_activate(api, ann, now, clock):
    r = ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=10))))
    ok(redeem(api, "80"))
    ok(cancel(api, transaction_id=r["transaction_id"]))  # debt 30
    ok(accrue(api, "100", activation_date=iso(now + timedelta(days=2))))
    b = balances(api)
    assert (b["active_balance"], b["pending_balance"], b["total_balance"]) == ("-30.00", "100.00", "70.00")
    clock.advance(timedelta(days=2))
    b = balances(api)
    assert (b["active_balance"], b["pending_balance"], b["total_balance"]) == ("70.00", "0.00", "70.00")


@sqlite_only
def test_a_cancelled_accrual_is_never_kept_by_spending_it_first(api, ann):
    r = ok(accrue(api, "100"))
    ok(redeem(api, "150"))
    ok(cancel(api, transaction_id=r["transaction_id"]))
    ok(accrue(api, "100"))
    assert active(api) == "0.00"


@sqlite_only
def test_cancelling_a_rolled_back_transaction_is_refused(api, ann):
    held = ok(redeem(api, "30", is_temp=True))
    ok(rollback(api, transaction_id=held["transaction_id"]))
    fails(cancel(api, transaction_id=held["transaction_id"]), 409, "transaction_state")
    assert active(api) == "50.00"


# --- cancelling redemptions ----------------------------------------------------------------------------------------

def test_a_cancelled_redemption_gives_back_points_that_keep_their_expiry(api, rt, ann, now, clock):
    r = ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=10))))
    spent = ok(redeem(api, "100"))
    clock.advance(timedelta(days=5))
    assert ok(cancel(api, transaction_id=spent["transaction_id"]))["balance"] == "150.00"
    assert lot(rt, r["transaction_id"]).remaining == 10000
    clock.advance(timedelta(days=5))
    assert active(api) == "50.00"  # they expired on the first lot's day, not 365 days after the cancel


def test_a_cancelled_redemption_returns_points_to_each_lot_it_took_from(api, rt, ann, now):
    first = ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=10))))
    second = ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=20))))
    spent = ok(redeem(api, "170"))
    assert [lot(rt, x["transaction_id"]).remaining for x in (first, second)] == [0, 3000]
    ok(cancel(api, transaction_id=spent["transaction_id"]))
    assert [lot(rt, x["transaction_id"]).remaining for x in (first, second)] == [10000, 10000]
    assert active(api) == "250.00"


def test_a_returned_point_whose_lot_expired_meanwhile_expires_at_once(api, rt, ann, now, clock):
    ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=10))))
    spent = ok(redeem(api, "100"))
    clock.advance(timedelta(days=11))
    assert ok(cancel(api, transaction_id=spent["transaction_id"]))["balance"] == "50.00"
    [expiration] = txns_of_type(rt, "expiration")
    assert (expiration.amount, expiration.status) == (10000, "committed")
    assert balances(api)["total_balance"] == "50.00"


@sqlite_only
def test_a_cancelled_redemption_pays_off_debt_first(api, ann, now):
    r = ok(accrue(api, "100", expiration_date=iso(now + timedelta(days=10))))
    spent = ok(redeem(api, "150"))
    ok(cancel(api, transaction_id=r["transaction_id"]))  # debt 100
    assert ok(cancel(api, transaction_id=spent["transaction_id"]))["balance"] == "50.00"


# --- exactly once with transaction_eid ------------------------------------------------------------------------------

def test_repeating_an_accrual_with_the_same_transaction_eid_returns_the_first_result_and_moves_nothing(api, rt,
                                                                                                      ann):
    first = ok(accrue(api, "10", transaction_eid="order-1"))
    again = ok(accrue(api, "10", transaction_eid="order-1"))
    assert again == first == {"transaction_id": first["transaction_id"], "balance": "60.00"}
    assert active(api) == "60.00"
    assert len(txns_of_type(rt, "accrual")) == 1


@sqlite_only
def test_a_repeat_returns_the_first_balance_even_after_other_movements(api, ann):
    first = ok(accrue(api, "10", transaction_eid="order-1"))
    ok(accrue(api, "5"))
    again = ok(accrue(api, "10", transaction_eid="order-1"))
    assert again == {"transaction_id": first["transaction_id"], "balance": "60.00"}
    assert active(api) == "65.00"


@sqlite_only
def test_an_amount_written_differently_is_the_same_payload(api, ann):
    first = ok(accrue(api, "10", transaction_eid="order-1"))
    assert ok(accrue(api, "10.00", transaction_eid="order-1")) == first
    assert active(api) == "60.00"


def test_reusing_a_transaction_eid_with_a_different_amount_is_refused(api, ann):
    ok(accrue(api, "10", transaction_eid="order-1"))
    fails(accrue(api, "11", transaction_eid="order-1"), 409, "duplicate_transaction_eid")
    assert active(api) == "60.00"


@sqlite_only
def test_reusing_an_accrual_transaction_eid_for_a_redemption_is_refused(api, ann):
    ok(accrue(api, "10", transaction_eid="order-1"))
    fails(redeem(api, "10", transaction_eid="order-1"), 409, "duplicate_transaction_eid")
    assert active(api) == "60.00"


@sqlite_only
def test_a_transaction_eid_is_unique_across_the_members_of_a_program(api, ann):
    api.member(BOB)
    ok(accrue(api, "10", transaction_eid="order-1"))
    fails(accrue(api, "10", email=BOB, transaction_eid="order-1"), 409, "duplicate_transaction_eid")
    assert active(api, BOB) == "50.00"


def test_repeating_a_redemption_with_the_same_transaction_eid_spends_once(api, ann):
    first = ok(redeem(api, "20", transaction_eid="pay-1"))
    assert ok(redeem(api, "20", transaction_eid="pay-1")) == first
    assert active(api) == "30.00"


@sqlite_only
def test_repeating_a_hold_after_it_was_committed_returns_the_first_result(api, ann):
    held = ok(redeem(api, "20", is_temp=True, transaction_eid="pay-1"))
    ok(commit(api, transaction_id=held["transaction_id"]))
    assert ok(redeem(api, "20", is_temp=True, transaction_eid="pay-1")) == held
    assert balances(api)["total_balance"] == "30.00"


def test_a_hold_can_be_committed_by_its_transaction_eid(api, rt, ann):
    held = ok(redeem(api, "20", is_temp=True, transaction_eid="pay-1"))
    r = ok(commit(api, transaction_eid="pay-1"))
    assert r == {"transaction_id": held["transaction_id"], "balance": "30.00"}
    assert txn(rt, held["transaction_id"]).status == "committed"


@sqlite_only
def test_a_hold_can_be_rolled_back_by_its_transaction_eid(api, ann):
    held = ok(redeem(api, "20", is_temp=True, transaction_eid="pay-1"))
    assert ok(rollback(api, transaction_eid="pay-1")) == {"transaction_id": held["transaction_id"],
                                                          "balance": "50.00"}


def test_an_accrual_can_be_cancelled_by_its_transaction_eid(api, ann):
    r = ok(accrue(api, "10", transaction_eid="order-1"))
    assert ok(cancel(api, transaction_eid="order-1")) == {"transaction_id": r["transaction_id"], "balance": "50.00"}


@sqlite_only
def test_a_transaction_id_and_an_eid_that_name_different_transactions_find_nothing(api, ann):
    r = ok(accrue(api, "10", transaction_eid="order-1"))
    ok(accrue(api, "10", transaction_eid="order-2"))
    fails(cancel(api, transaction_id=r["transaction_id"], transaction_eid="order-2"), 404, "transaction_not_found")
    assert active(api) == "70.00"


def test_the_same_transaction_eid_in_two_programs_needs_the_program_id_to_be_resolved(api, ann, coins_member):
    stars = ok(accrue(api, "10", is_temp=True, transaction_eid="shared-1"))
    ok(accrue(api, "10", email=coins_member, program=200, is_temp=True, transaction_eid="shared-1"))
    fails(commit(api, transaction_eid="shared-1"), 409, "ambiguous_match")
    r = ok(commit(api, transaction_eid="shared-1", loyalty_program_id=PROGRAM))
    assert r == {"transaction_id": stars["transaction_id"], "balance": "60.00"}
    assert balances(api, coins_member, program=200)["temp_accrued_balance"] == "10"


# --- amounts ------------------------------------------------------------------------------------------------------

@validation_only
def test_a_currency_with_precision_0_refuses_a_fraction(api, ann):
    text = fails(accrue(api, "1.5", points_currency_eid="status_points"), 400, "invalid_parameter")
    assert "amount" in text
    assert balances(api, points_currency_eid="status_points")["active_balance"] == "0"


@sqlite_only
def test_a_currency_with_precision_0_counts_in_whole_points(api, ann):
    assert ok(accrue(api, "15", points_currency_eid="status_points"))["balance"] == "15"
    assert balances(api, points_currency_eid="status_points") == {
        "total_balance": "15", "active_balance": "15", "pending_balance": "0", "held_balance": "0",
        "temp_accrued_balance": "0"}


@validation_only
def test_stars_refuse_a_third_decimal_rather_than_rounding(api, ann):
    fails(accrue(api, "1.005"), 400, "invalid_parameter")
    fails(redeem(api, "1.005"), 400, "invalid_parameter")
    assert active(api) == "50.00"


@validation_only
def test_a_zero_or_negative_amount_is_refused(api, ann):
    for amount in ["0", "0.00", "-1", "-0.01", 0, -5]:
        fails(accrue(api, amount), 400, "invalid_parameter")
        fails(redeem(api, amount), 400, "invalid_parameter")
    assert active(api) == "50.00"


@validation_only
def test_an_amount_that_is_not_a_plain_decimal_is_refused(api, ann):
    for amount in ["abc", "1e2", "NaN", "Infinity", "", "1,5", True, [1], {"v": 1}]:
        r = accrue(api, amount)
        assert r.status == 400 and r.code in ("invalid_parameter", "missing_parameter"), (amount, r.body)
    assert active(api) == "50.00"


@validation_only
def test_a_missing_amount_is_refused_and_named(api, ann):
    r = api.call("loyalty/accrue_points", loyalty_program_id=PROGRAM, matching="email", email=ANN)
    assert "amount" in fails(r, 400, "missing_parameter")


@sqlite_only
def test_a_json_number_amount_is_accepted_exactly(api, ann):
    r = api.client.post("/api/v1.1/loyalty/accrue_points",
                        content=b'{"token": "%s", "loyalty_program_id": 123, "matching": "email", '
                                b'"email": "ann@example.com", "amount": 10.25}' % api.token.encode(),
                        headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["balance"] == "60.25"


@sqlite_only
def test_the_smallest_unit_is_kept_exactly(api, ann):
    for _ in range(3):
        ok(accrue(api, "0.01"))
    assert active(api) == "50.03"
    assert ok(redeem(api, "0.03"))["balance"] == "50.00"


# --- what may not be redeemed --------------------------------------------------------------------------------------

@sqlite_only
def test_points_of_a_qualification_currency_cannot_be_redeemed(api, ann):
    ok(accrue(api, "100", points_currency_eid="status_points"))
    r = redeem(api, "10", points_currency_eid="status_points")
    assert r.status == 400 and r.code == "invalid_parameter", r.body
    assert balances(api, points_currency_eid="status_points")["active_balance"] == "100"


@sqlite_only
def test_redeeming_more_than_the_active_balance_names_both_figures(api, ann):
    text = fails(redeem(api, "60.5"), 422, "insufficient_points")
    assert "60.50" in text and "50.00" in text
    assert active(api) == "50.00"


# --- currency selector -----------------------------------------------------------------------------------------------

@sqlite_only
def test_without_a_currency_the_program_default_is_used(api, ann):
    ok(accrue(api, "1"))
    assert balances(api, points_currency_iid=1)["active_balance"] == "51.00"
    assert balances(api, points_currency_eid="stars")["active_balance"] == "51.00"


@sqlite_only
def test_a_currency_can_be_chosen_by_iid(api, ann):
    assert ok(accrue(api, "7", points_currency_iid=2))["balance"] == "7"
    assert balances(api, points_currency_eid="status_points")["active_balance"] == "7"


@sqlite_only
def test_a_currency_can_be_chosen_by_eid(api, ann):
    assert ok(accrue(api, "7", points_currency_eid="status_points"))["balance"] == "7"
    assert balances(api, points_currency_iid=2)["active_balance"] == "7"


@sqlite_only
def test_a_currency_can_be_chosen_by_an_agreeing_iid_and_eid(api, ann):
    assert ok(accrue(api, "7", points_currency_iid=2, points_currency_eid="status_points"))["balance"] == "7"


@validation_only
def test_an_iid_and_an_eid_that_disagree_are_refused(api, ann):
    fails(accrue(api, "7", points_currency_iid=1, points_currency_eid="status_points"), 400, "invalid_parameter")
    r = api.call("loyalty/account/balance", loyalty_program_id=PROGRAM, matching="email", email=ANN,
                 points_currency_iid=2, points_currency_eid="stars")
    fails(r, 400, "invalid_parameter")
    assert active(api) == "50.00"


@validation_only
def test_an_unknown_currency_is_not_found(api, ann):
    for selector in ({"points_currency_iid": 9}, {"points_currency_eid": "moons"},
                     {"points_currency_iid": 9, "points_currency_eid": "stars"}):
        fails(accrue(api, "7", **selector), 404, "currency_not_found")
        fails(redeem(api, "7", **selector), 404, "currency_not_found")
        r = api.call("loyalty/account/balance", loyalty_program_id=PROGRAM, matching="email", email=ANN, **selector)
        fails(r, 404, "currency_not_found")


# --- unknown transactions ----------------------------------------------------------------------------------------

@sqlite_only
def test_an_unknown_transaction_is_not_found(api, ann):
    for action in (commit, rollback, cancel):
        fails(action(api, transaction_id="0190b6a4-0000-7000-8000-000000000000"), 404, "transaction_not_found")
        fails(action(api, transaction_eid="never-used"), 404, "transaction_not_found")
