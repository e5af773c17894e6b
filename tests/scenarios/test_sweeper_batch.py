"""The background sweep expires lots set-based, a batch of accounts at a time, with the same effect as reading
each account: one expiration transaction per account, balances and journal consistent, nothing left due."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from loyalty.services import ledger, members, profiles, sweeper, tokens
from loyalty.services.commands import AccrueCmd, BalanceCmd, RedeemCmd, RegisterCmd
from loyalty.services.sweeper import sweep_all
from loyalty.services.verify import verify_all
from loyalty.storage.tables import accounts, transactions
from loyalty.storage.tables import profiles as profiles_table

ADMIN = tokens.Principal(1, "t", frozenset(tokens.ROLES), None, None)


def _member(rt, i):
    email = f"sweep{i}@example.com"
    profiles.add(rt, ADMIN, 1, {"email": email})
    members.register(rt, ADMIN, RegisterCmd(loyalty_program_id=123, matching="email", email=email))
    return email


def test_a_batched_sweep_expires_every_due_lot_once_and_keeps_every_invariant(rt, program, clock):
    emails = [_member(rt, i) for i in range(7)]  # initial balance 50.00 each, expiring in 365 days
    for i, email in enumerate(emails):
        # a lot expiring in 5 days, and a pending one whose activation and expiry both pass unseen
        ledger.accrue(rt, ADMIN, AccrueCmd(loyalty_program_id=123, matching="email", email=email, amount="10",
                                           expiration_date="2025-01-20T12:00:00Z"))
        ledger.accrue(rt, ADMIN, AccrueCmd(loyalty_program_id=123, matching="email", email=email, amount="5",
                                           activation_date="2025-01-17T00:00:00Z",
                                           expiration_date="2025-01-18T00:00:00Z"))
        if i % 2:
            # a hold on the soonest-expiring points: held points never expire by the sweep
            ledger.redeem(rt, ADMIN, RedeemCmd(loyalty_program_id=123, matching="email", email=email, amount="4",
                                               is_temp=True, temp_timeout_sec=604800))
    clock.advance(timedelta(days=6))  # the holds (7 days) are still open
    assert sweep_all(rt, batch=3) == 7  # three batches: 3 + 3 + 1 accounts

    def count_expirations(conn):
        return conn.execute(select(func.count()).select_from(transactions)
                            .where(transactions.c.type == "expiration")).scalar_one()

    def still_due(conn):
        return conn.execute(select(func.count()).select_from(accounts)
                            .where(accounts.c.next_event_at <= clock.now())).scalar_one()

    assert rt.store.read(count_expirations) == 7  # one per account and run, pending and active together
    assert rt.store.read(still_due) == 0
    assert not verify_all(rt).problems
    for i, email in enumerate(emails):
        b = ledger.balance(rt, ADMIN, BalanceCmd(loyalty_program_id=123, matching="email", email=email))
        if i % 2:
            # 4 of the 10 were held before expiry: 6 expired, the hold keeps 4
            assert (b.active, b.held, b.pending) == ("50.00", "4.00", "0.00")
        else:
            assert (b.active, b.held, b.pending) == ("50.00", "0.00", "0.00")
    assert sweep_all(rt) == 0  # a second sweep finds nothing to do


def test_a_sweep_also_resolves_temp_deadlines_and_activations_of_the_same_accounts(rt, program, clock):
    email = _member(rt, 0)
    held = ledger.redeem(rt, ADMIN, RedeemCmd(loyalty_program_id=123, matching="email", email=email, amount="20",
                                              is_temp=True, temp_timeout_sec=60))
    ledger.accrue(rt, ADMIN, AccrueCmd(loyalty_program_id=123, matching="email", email=email, amount="7",
                                       activation_date="2025-01-16T00:00:00Z"))
    clock.advance(timedelta(days=2))
    assert sweep_all(rt) == 1

    def status(conn):
        return conn.execute(select(transactions.c.status).where(transactions.c.id == held.transaction_id)).scalar()

    assert rt.store.read(status) == "rolled_back"
    b = ledger.balance(rt, ADMIN, BalanceCmd(loyalty_program_id=123, matching="email", email=email))
    assert (b.active, b.pending, b.held) == ("57.00", "0.00", "0.00")
    assert not verify_all(rt).problems


def test_after_a_sweep_each_account_s_next_event_is_the_earliest_of_its_expiries_activations_and_deadlines(
        rt, program, clock):
    """One account per case, swept in one batch: the next event left is the least of what remains (a later
    expiry, a pending activation, an open hold's deadline), or none."""
    def accrue(email, amount, **dates):
        ledger.accrue(rt, ADMIN, AccrueCmd(loyalty_program_id=123, matching="email", email=email, amount=amount,
                                           **dates))

    start = clock.now()
    emails = [_member(rt, i) for i in range(4)]
    for email in emails:  # due in 2 days: every account is swept
        accrue(email, "3", expiration_date=(start + timedelta(days=2)).isoformat())
    # 0: the initial 50.00 expire in 365 days, nothing sooner
    accrue(emails[1], "7", expiration_date=(start + timedelta(days=30)).isoformat())  # 1: expiry in 30 days
    accrue(emails[2], "7", activation_date=(start + timedelta(days=10)).isoformat(),
           expiration_date=(start + timedelta(days=40)).isoformat())  # 2: activation in 10 days
    accrue(emails[3], "7", activation_date=(start + timedelta(days=10)).isoformat())
    ledger.redeem(rt, ADMIN, RedeemCmd(loyalty_program_id=123, matching="email", email=emails[3], amount="1",
                                       is_temp=True, temp_timeout_sec=7 * 86400))  # 3: hold deadline in 7 days
    clock.advance(timedelta(days=3))
    assert sweep_all(rt) == 4

    def next_events(conn):
        query = (select(accounts.c.next_event_at).join_from(accounts, profiles_table,
                                                             profiles_table.c.id == accounts.c.profile_id)
                 .where(profiles_table.c.email.in_(emails)).order_by(profiles_table.c.email))
        return list(conn.execute(query).scalars())

    expected = [start + timedelta(days=365), start + timedelta(days=30), start + timedelta(days=10),
                start + timedelta(days=7)]
    got = rt.store.read(next_events)
    assert [round((at - start).total_seconds() / 86400) for at in got] == [
        round((at - start).total_seconds() / 86400) for at in expected]
    assert not verify_all(rt).problems


def test_a_sweep_write_is_sized_to_its_time_budget_growing_at_most_twofold_within_bounds():
    assert sweeper.next_batch(100, 0.02, 0.01) == 50  # twice the budget: half the accounts
    assert sweeper.next_batch(100, 0.001, 0.01) == 200  # ten times quicker: only doubles
    assert sweeper.next_batch(100, 0.0, 0.01) == 200  # too quick to time
    assert sweeper.next_batch(sweeper.MIN_BATCH, 1.0, 0.01) == sweeper.MIN_BATCH
    assert sweeper.next_batch(sweeper.MAX_BATCH, 0.000001, 0.01) == sweeper.MAX_BATCH


def test_the_sweep_rests_between_writes_only_while_other_writes_are_being_committed():
    assert sweeper.rest_after(0.01, others_committed=False) == 0.0
    assert sweeper.rest_after(0.01, others_committed=True) == pytest.approx(sweeper.YIELD_FACTOR * 0.01)
    assert sweeper.rest_after(10.0, others_committed=True) == sweeper.MAX_REST_SEC


def _due_members(rt, clock, count):
    for i in range(count):  # initial 50.00 each, expiring in 365 days
        _member(rt, i)
    clock.advance(timedelta(days=366))


def test_a_sweep_alone_on_the_store_never_rests(rt, program, clock):
    _due_members(rt, clock, 5)
    rests = []
    assert sweep_all(rt, batch=2, sleep=rests.append) == 5
    assert rests == []
    assert not verify_all(rt).problems


def test_a_sweep_rests_after_each_full_write_while_requests_commit_beside_it(rt, program, clock, monkeypatch):
    _due_members(rt, clock, 5)
    real = rt.store.commit_stats
    calls = iter(range(1_000_000))

    def busy_store():  # every look finds 100 more units committed by others
        batches, units = real()
        return batches, units + 100 * next(calls)

    monkeypatch.setattr(rt.store, "commit_stats", busy_store)
    rests = []
    assert sweep_all(rt, batch=2, sleep=rests.append) == 5  # writes of 2, 2 and 1 accounts
    assert len(rests) == 2 and all(0 < r <= sweeper.MAX_REST_SEC for r in rests)
    assert rt.store.read(lambda conn: conn.execute(
        select(func.count()).select_from(transactions).where(transactions.c.type == "expiration")).scalar_one()) == 5
    assert not verify_all(rt).problems


def test_a_sweep_with_a_time_limit_stops_after_the_write_that_passes_it_and_the_next_one_goes_on(
        rt, program, clock):
    _due_members(rt, clock, 5)
    assert sweep_all(rt, batch=2, max_sec=0) == 2  # one write of two accounts, then the limit
    assert sweep_all(rt, batch=2) == 3  # the rest: 2 + 1
    assert sweep_all(rt) == 0
    assert not verify_all(rt).problems
