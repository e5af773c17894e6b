"""Randomized runs of the ledger against a reference model, on SQLite and PostgreSQL (engine.md §2, §3).

A hypothesis state machine registers and deletes members, accrues and redeems (committed and temp, with
activation and expiration dates), commits, rolls back and cancels known transactions, replays transaction_eids,
moves the clock and runs the sweeper. After every step it checks:

- `verify_all` finds no problem (cached balances vs lots, open holds, open temp accruals and journal replay);
- every member's balance read gives total = active + pending + held, and equals the reference model (active,
  pending, held, temp accrued) — the model replays the movements of engine.md §2 lot by lot;
- after the reads no temp transaction past its deadline is still `temp` (invariant 4), and every transaction the
  model knows has the status the model expects;
- a removed member's accounts are all zero (forfeit), and cancelling into them is refused.

Examples: LOYALTY_STATEFUL_EXAMPLES (default 12 on SQLite, 6 on PostgreSQL),
steps per example: LOYALTY_STATEFUL_STEPS (default 30).
"""

from __future__ import annotations

import itertools
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import create_engine, inspect, select, text

from loyalty.domain.clock import FrozenClock
from loyalty.domain.dates import format_datetime
from loyalty.domain.errors import DuplicateTransactionEid, LoyaltyError
from loyalty.domain.points import format_amount
from loyalty.services import ledger, members, profiles, programfile, sweeper, tokens
from loyalty.services.commands import AccrueCmd, BalanceCmd, DeleteCmd, RedeemCmd, RegisterCmd, TxnRefCmd
from loyalty.services.demo import example_path
from loyalty.services.verify import verify_all
from loyalty.storage.tables import accounts, transactions
from tests.conftest import START, STORES, make_runtime

# PostgreSQL commits cost several times SQLite's here, hence fewer default examples there.
EXAMPLES = {"sqlite": 12, "postgresql": 6}
if os.environ.get("LOYALTY_STATEFUL_EXAMPLES"):
    EXAMPLES = dict.fromkeys(EXAMPLES, int(os.environ["LOYALTY_STATEFUL_EXAMPLES"]))
STEPS = int(os.environ.get("LOYALTY_STATEFUL_STEPS", "30"))
# LOYALTY_STATEFUL_SHRINK=0 reports the first failing sequence unshrunk (shrinking replays many examples).
PHASES = [p for p in Phase if p is not Phase.shrink or os.environ.get("LOYALTY_STATEFUL_SHRINK", "1") != "0"]

PROGRAM = 123
STARS, STATUS = 1, 2
PRECISION = {STARS: 2, STATUS: 0}
EIDS = {STARS: "stars", STATUS: "status_points"}
INITIAL = {STARS: 5000, STATUS: 0}  # 50.00 stars, in units of the currency's precision
LIFETIME = {STARS: timedelta(days=365), STATUS: None}
DEFAULT_TEMP_TIMEOUT = 900
EMAILS = ["m0@example.com", "m1@example.com", "m2@example.com"]
ADMIN = tokens.Principal(1, "t", frozenset(tokens.ROLES), None, None)

def truncate_existing(url: str) -> None:
    """conftest.truncate_all, limited to the tables the migrated store has (tables.py may run ahead of the
    migrations while someone is adding a table)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        # change_counters keeps its rows (they belong to the schema, like alembic_version).
        names = ", ".join(n for n in inspect(conn).get_table_names()
                          if n not in ("alembic_version", "change_counters"))
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


# --- the reference model ----------------------------------------------------------------------------------------

@dataclass
class MLot:
    id: str
    seq: int  # order of the transaction ids (UUIDv7): the last tie-breaker of the consumption order
    original: int
    remaining: int
    activates_at: datetime
    expires_at: datetime | None
    is_active: bool
    created_at: datetime
    held: int = 0
    expired: int = 0

    def key(self) -> tuple[Any, ...]:
        return (self.expires_at is None, self.expires_at or datetime.max.replace(tzinfo=START.tzinfo),
                self.created_at, self.seq)


@dataclass
class MTxn:
    id: str
    seq: int
    email: str
    cur: int
    type: str  # accrual | redemption | initial
    status: str
    amount: int
    deadline: datetime | None = None
    activation: datetime | None = None
    expiration: datetime | None = None
    consumed: list[tuple[str, int]] = field(default_factory=list)
    eid: str | None = None


@dataclass
class MAccount:
    lots: dict[str, MLot] = field(default_factory=dict)
    debt: int = 0

    @property
    def active(self) -> int:
        return sum(lot.remaining for lot in self.lots.values() if lot.is_active) - self.debt

    @property
    def pending(self) -> int:
        return sum(lot.remaining for lot in self.lots.values() if not lot.is_active)

    def spendable(self, now: datetime) -> list[MLot]:
        return sorted((lot for lot in self.lots.values() if lot.remaining > 0 and lot.is_active
                       and (lot.expires_at is None or lot.expires_at > now)), key=MLot.key)


def plan_take(lots: list[MLot], amount: int) -> tuple[list[tuple[MLot, int]], int]:
    plan, left = [], amount
    for lot in lots:
        if left <= 0:
            break
        take = min(lot.remaining, left)
        if take > 0:
            plan.append((lot, take))
            left -= take
    return plan, left


class Model:
    """engine.md §2, lot by lot, in the order the engine applies due effects (deadlines, expiry, activation)."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {e: "none" for e in EMAILS}  # none | active | removed
        self.accounts: dict[tuple[str, int], MAccount] = {(e, c): MAccount() for e in EMAILS for c in PRECISION}
        self.txns: dict[str, MTxn] = {}
        self.seq = itertools.count()

    def acc(self, email: str, cur: int) -> MAccount:
        return self.accounts[(email, cur)]

    def open_temps(self, email: str, cur: int) -> list[MTxn]:
        return [t for t in self.txns.values() if t.email == email and t.cur == cur and t.status == "temp"]

    def held(self, email: str, cur: int) -> int:
        return sum(t.amount for t in self.open_temps(email, cur) if t.type == "redemption")

    def temp_accrued(self, email: str, cur: int) -> int:
        return sum(t.amount for t in self.open_temps(email, cur) if t.type == "accrual")

    # time
    def settle(self, email: str, cur: int, now: datetime) -> None:
        a = self.acc(email, cur)
        due = sorted((t for t in self.open_temps(email, cur) if t.deadline is not None and t.deadline <= now),
                     key=lambda t: (t.deadline, t.seq))
        for t in due:
            self.release(t, "rolled_back", now)
        self.expire_due(a, now)
        for lot in a.lots.values():
            if lot.remaining > 0 and not lot.is_active and lot.activates_at <= now:
                lot.is_active = True
        self.pay_debt(a, now)

    def expire_due(self, a: MAccount, now: datetime) -> None:
        for lot in a.lots.values():
            if lot.remaining > 0 and lot.expires_at is not None and lot.expires_at <= now:
                lot.expired += lot.remaining
                lot.remaining = 0

    def pay_debt(self, a: MAccount, now: datetime) -> None:
        if a.debt <= 0:
            return
        plan, _ = plan_take(a.spendable(now), a.debt)
        for lot, taken in plan:
            lot.remaining -= taken
            a.debt -= taken

    # movements
    def add_lot(self, t: MTxn, activation: datetime, expiry: datetime | None, now: datetime) -> None:
        a = self.acc(t.email, t.cur)
        lot = MLot(t.id, t.seq, t.amount, t.amount, activation, expiry, activation <= now, now)
        a.lots[t.id] = lot
        if lot.is_active:
            self.pay_debt(a, now)

    def credit(self, t: MTxn, now: datetime) -> None:
        activation = t.activation or now
        lifetime = LIFETIME[t.cur]
        expiry = t.expiration or (max(activation, now) + lifetime if lifetime else None)
        self.add_lot(t, activation, expiry, now)

    def take(self, t: MTxn, hold: bool, now: datetime) -> None:
        plan, left = plan_take(self.acc(t.email, t.cur).spendable(now), t.amount)
        assert left == 0, "model: active balance and lots disagree"
        for lot, taken in plan:
            lot.remaining -= taken
            if hold:
                lot.held += taken
        t.consumed = [(lot.id, taken) for lot, taken in plan]

    def return_points(self, t: MTxn, was_hold: bool, now: datetime) -> None:
        a = self.acc(t.email, t.cur)
        for lot_id, amount in t.consumed:
            lot = a.lots[lot_id]
            if was_hold:
                lot.held -= amount
            lot.remaining += amount
        self.expire_due(a, now)
        self.pay_debt(a, now)

    def release(self, t: MTxn, status: str, now: datetime) -> None:
        if t.type == "redemption":
            self.return_points(t, was_hold=True, now=now)
        t.status = status

    def commit(self, t: MTxn, now: datetime) -> None:
        if t.type == "redemption":
            a = self.acc(t.email, t.cur)
            for lot_id, amount in t.consumed:
                a.lots[lot_id].held -= amount
        else:
            self.credit(t, now)
        t.status = "committed"

    def cancel_committed(self, t: MTxn, now: datetime) -> None:
        a = self.acc(t.email, t.cur)
        if t.type in ("accrual", "initial"):
            lot = a.lots[t.id]
            spent = lot.original - lot.remaining - lot.expired
            lot.remaining = 0
            if spent > 0:
                plan, shortfall = plan_take(a.spendable(now), spent)
                for other, taken in plan:
                    other.remaining -= taken
                a.debt += shortfall
        else:
            self.return_points(t, was_hold=False, now=now)
        t.status = "cancelled"

    def forfeit(self, email: str, now: datetime) -> None:
        for cur in PRECISION:
            self.settle(email, cur, now)
            for t in self.open_temps(email, cur):
                self.release(t, "rolled_back", now)
            a = self.acc(email, cur)
            for lot in a.lots.values():
                lot.expired += lot.remaining
                lot.remaining = 0
            a.debt = 0


# --- the machine ------------------------------------------------------------------------------------------------

AMOUNTS = {STARS: st.integers(1, 12_000), STATUS: st.integers(1, 500)}
REDEEMED = st.integers(1, 2_000) | st.integers(1, 15_000)
MOVERS = st.sampled_from(EMAILS[:2] * 2 + EMAILS[2:])  # mostly the members enrolled from the start
OFFSETS = st.sampled_from([timedelta(minutes=1), timedelta(minutes=30), timedelta(hours=6), timedelta(days=1),
                           timedelta(days=3), timedelta(days=30)])
TIMEOUTS = st.sampled_from([None, 30, 600, 3600, 86_400])
ADVANCES = st.sampled_from([timedelta(minutes=1), timedelta(minutes=1), timedelta(minutes=10),
                            timedelta(minutes=16), timedelta(minutes=16), timedelta(hours=2), timedelta(days=1),
                            timedelta(days=2), timedelta(days=31), timedelta(days=366)])


def member(email: str) -> dict[str, Any]:
    return {"loyalty_program_id": PROGRAM, "matching": "email", "email": email}


def fmt(cur: int, units: int) -> str:
    return format_amount(units, PRECISION[cur])


class LedgerMachine(RuleBasedStateMachine):
    fresh_store: Any = None  # set by the test: () -> URL of an empty migrated store

    def __init__(self) -> None:
        super().__init__()
        self.clock = FrozenClock(START)
        self.rt = make_runtime(type(self).fresh_store(), self.clock)
        programfile.apply_spec(self.rt, programfile.load(example_path()))
        self.profile_ids = {e: profiles.add(self.rt, ADMIN, 1, {"email": e}) for e in EMAILS}
        self.model = Model()
        self.eids = itertools.count()
        self.sent: list[tuple[str, Any, str]] = []  # (kind, cmd, transaction_id) of successful eid requests
        for email in EMAILS[:2]:  # two members from the start; the third joins (or not) during the run
            self._register(email)

    def teardown(self) -> None:
        self.rt.close()

    @property
    def now(self) -> datetime:
        return self.clock.now()

    def expect_error(self, exc: LoyaltyError, *codes: str) -> None:
        assert exc.code in codes, f"unexpected {exc.code}: {exc.message}"

    # membership ---------------------------------------------------------------------------------------------

    @rule(email=st.sampled_from(EMAILS))
    def register(self, email: str) -> None:
        self._register(email)

    def _register(self, email: str) -> None:
        members.register(self.rt, ADMIN, RegisterCmd(**member(email)))
        m = self.model
        if m.status[email] == "none":
            pid = self.profile_ids[email]
            rows = self.rt.store.read(lambda conn: conn.execute(
                select(transactions.c.id).where(transactions.c.profile_id == pid,
                                                transactions.c.type == "initial")).all())
            assert len(rows) == 1, rows
            t = MTxn(rows[0].id, next(m.seq), email, STARS, "initial", "committed", INITIAL[STARS])
            m.txns[t.id] = t
            m.settle(email, STARS, self.now)
            m.add_lot(t, self.now, self.now + LIFETIME[STARS], self.now)
        m.status[email] = "active"

    @rule(email=st.sampled_from(EMAILS))
    def delete(self, email: str) -> None:
        try:
            members.delete(self.rt, ADMIN, DeleteCmd(**member(email)))
        except LoyaltyError as exc:
            self.expect_error(exc, "not_a_member")
            assert self.model.status[email] != "active"
            return
        assert self.model.status[email] == "active"
        self.model.forfeit(email, self.now)
        self.model.status[email] = "removed"

    # accrue / redeem ----------------------------------------------------------------------------------------

    @rule(email=MOVERS, data=st.data(), is_temp=st.booleans(),
          activation=st.none() | OFFSETS, expiration=st.none() | OFFSETS, timeout=TIMEOUTS,
          with_eid=st.booleans())
    def accrue(self, email: str, data: st.DataObject, is_temp: bool, activation: timedelta | None,
               expiration: timedelta | None, timeout: int | None, with_eid: bool) -> None:
        cur = data.draw(st.sampled_from([STARS, STARS, STARS, STATUS]), label="currency")
        amount = data.draw(AMOUNTS[cur], label="amount")
        now = self.now
        act_at = now + activation if activation else None
        exp_at = (act_at or now) + expiration if expiration else None
        cmd = AccrueCmd(**member(email), points_currency_iid=cur, amount=fmt(cur, amount), is_temp=is_temp,
                        temp_timeout_sec=timeout if is_temp else None, activation_date=format_datetime(act_at),
                        expiration_date=format_datetime(exp_at),
                        transaction_eid=f"eid-{next(self.eids)}" if with_eid else None)
        self._move("accrual", cmd, email, cur, amount)

    @rule(email=MOVERS, amount=REDEEMED, is_temp=st.booleans(), timeout=TIMEOUTS,
          with_eid=st.booleans())
    def redeem(self, email: str, amount: int, is_temp: bool, timeout: int | None, with_eid: bool) -> None:
        cmd = RedeemCmd(**member(email), amount=fmt(STARS, amount), is_temp=is_temp,
                        temp_timeout_sec=timeout if is_temp else None,
                        transaction_eid=f"eid-{next(self.eids)}" if with_eid else None)
        self._move("redemption", cmd, email, STARS, amount)

    def _move(self, kind: str, cmd: Any, email: str, cur: int, amount: int) -> None:
        m, now = self.model, self.now
        if m.status[email] == "active":
            m.settle(email, cur, now)
        expected_error = None
        if m.status[email] != "active":
            expected_error = "not_a_member"
        elif kind == "redemption" and m.acc(email, cur).active < amount:
            expected_error = "insufficient_points"
        call = ledger.accrue if kind == "accrual" else ledger.redeem
        try:
            result = call(self.rt, ADMIN, cmd)
        except LoyaltyError as exc:
            assert exc.code == expected_error, f"{exc.code}: {exc.message} (expected {expected_error})"
            event(f"{kind}: {exc.code}")
            return
        assert expected_error is None, f"succeeded, expected {expected_error}"
        timeout = cmd.temp_timeout_sec or DEFAULT_TEMP_TIMEOUT
        t = MTxn(result.transaction_id, next(m.seq), email, cur, kind, "temp" if cmd.is_temp else "committed",
                 amount, deadline=now + timedelta(seconds=timeout) if cmd.is_temp else None, eid=cmd.transaction_eid)
        if kind == "accrual":
            t.activation = datetime.fromisoformat(cmd.activation_date) if cmd.activation_date else None
            t.expiration = datetime.fromisoformat(cmd.expiration_date) if cmd.expiration_date else None
        assert t.id not in m.txns
        m.txns[t.id] = t
        if kind == "accrual" and not cmd.is_temp:
            m.credit(t, now)
        elif kind == "redemption":
            m.take(t, hold=cmd.is_temp, now=now)
        assert result.balance == fmt(cur, m.acc(email, cur).active), (result, m.acc(email, cur))
        if cmd.transaction_eid:
            self.sent.append((kind, cmd, t.id))

    # the frequent steps count twice, so that membership changes stay the exception
    accrue_again = accrue
    redeem_again = redeem

    # transaction_eid replays --------------------------------------------------------------------------------

    @precondition(lambda self: self.sent)
    @rule(data=st.data(), change=st.sampled_from([None, "amount", "profile", "is_temp"]))
    def replay(self, data: st.DataObject, change: str | None) -> None:
        kind, cmd, txn_id = data.draw(st.sampled_from(self.sent), label="original")
        email = cmd.email
        if change == "amount":
            cmd = cmd.model_copy(update={"amount": str(Decimal(cmd.amount) + 1)})
        elif change == "profile":
            email = EMAILS[(EMAILS.index(email) + 1) % len(EMAILS)]
            cmd = cmd.model_copy(update={"email": email})
        elif change == "is_temp":
            cmd = cmd.model_copy(update={"is_temp": not cmd.is_temp})
        call = ledger.accrue if kind == "accrual" else ledger.redeem
        try:
            result = call(self.rt, ADMIN, cmd)
        except DuplicateTransactionEid:
            # The eid is looked up before anything that can change with time or membership, so a changed
            # payload always conflicts and the same payload always gets the first result.
            assert change is not None, "the same payload must replay, not conflict"
            return
        assert change is None, f"a changed payload ({change}) was accepted: {result}"
        assert result.transaction_id == txn_id  # even if the member was removed since: a retry is not a new move

    # commit / rollback / cancel -----------------------------------------------------------------------------

    @precondition(lambda self: self.model.txns)
    @rule(data=st.data(), action=st.sampled_from(["commit", "rollback", "cancel"]), by_eid=st.booleans())
    def resolve(self, data: st.DataObject, action: str, by_eid: bool) -> None:
        known = sorted(self.model.txns.values(), key=lambda x: x.seq)
        self._resolve(data.draw(st.sampled_from(known), label="transaction"), action, by_eid)

    def _resolve(self, t: MTxn, action: str, by_eid: bool) -> None:
        m, now = self.model, self.now
        removed = m.status[t.email] != "active"
        if not removed:
            m.settle(t.email, t.cur, now)
        ref = TxnRefCmd(transaction_eid=t.eid, loyalty_program_id=PROGRAM) if by_eid and t.eid else \
            TxnRefCmd(transaction_id=t.id)
        allowed: set[str] = {"not_a_member"} if removed else set()
        before = t.status
        if action == "commit":
            ok = before in ("temp", "committed")
        elif action == "rollback":
            ok = before in ("temp", "rolled_back")
        else:
            ok = before != "rolled_back"
        if removed and action == "cancel" and before == "committed":
            ok = False  # a removed member's accounts were forfeited: cancelling must not put points back
        if not ok:
            allowed.add("transaction_state")
        try:
            result = getattr(ledger, action)(self.rt, ADMIN, ref)
        except LoyaltyError as exc:
            assert exc.code in allowed, f"{action} of {before} {t.type}: {exc.code}: {exc.message}"
            event(f"{action} of {before} {t.type}: {exc.code}")
            return
        event(f"{action} of {before} {t.type}: ok")
        assert ok, f"{action} of a {before} {t.type} succeeded: {result}"
        assert result.transaction_id == t.id
        if before == "temp":
            if action == "commit":
                m.commit(t, now)
            else:
                m.release(t, "rolled_back" if action == "rollback" else "cancelled", now)
        elif before == "committed" and action == "cancel":
            m.cancel_committed(t, now)
        if not removed:
            assert result.balance == fmt(t.cur, m.acc(t.email, t.cur).active), (action, before, t, result)

    @precondition(lambda self: any(t.status == "temp" and t.deadline > self.now for t in self.model.txns.values()))
    @rule(data=st.data(), action=st.sampled_from(["commit", "commit", "rollback", "cancel"]), by_eid=st.booleans())
    def resolve_open_temp(self, data: st.DataObject, action: str, by_eid: bool) -> None:
        """Like `resolve`, aimed at a temp transaction whose deadline has not passed."""
        temps = [t for t in sorted(self.model.txns.values(), key=lambda x: x.seq)
                 if t.status == "temp" and t.deadline > self.now]
        self._resolve(data.draw(st.sampled_from(temps), label="open temp"), action, by_eid)

    # time ---------------------------------------------------------------------------------------------------

    @rule(delta=ADVANCES)
    def advance_clock(self, delta: timedelta) -> None:
        self.clock.advance(delta)

    @rule()
    def sweep(self) -> None:
        sweeper.sweep_all(self.rt)
        for email in EMAILS:
            if self.model.status[email] == "active":
                for cur in PRECISION:
                    self.model.settle(email, cur, self.now)
        due = self.rt.store.read(lambda conn: conn.execute(
            select(accounts.c.profile_id).where(accounts.c.next_event_at <= self.now)).all())
        assert not due, f"accounts still due after a sweep: {due}"

    # checks after every step --------------------------------------------------------------------------------

    @invariant()
    def store_agrees_with_itself_and_the_model(self) -> None:
        m, now = self.model, self.now
        for email in EMAILS:
            if m.status[email] != "active":
                continue
            for cur in PRECISION:
                b = ledger.balance(self.rt, ADMIN, BalanceCmd(**member(email), points_currency_iid=cur))
                p = PRECISION[cur]
                assert format_amount(sum(int(x.replace(".", "")) for x in (b.active, b.pending, b.held)), p) \
                    == b.total, b
                m.settle(email, cur, now)
                a = m.acc(email, cur)
                expected = ledger.Balances(fmt(cur, a.active + a.pending + m.held(email, cur)), fmt(cur, a.active),
                                           fmt(cur, a.pending), fmt(cur, m.held(email, cur)),
                                           fmt(cur, m.temp_accrued(email, cur)))
                assert b == expected, f"{email} {EIDS[cur]}: store {b} != model {expected}"
                if a.debt:
                    event("an account in debt")
                if any(lot.expired for lot in a.lots.values()):
                    event("an account with expired points")
        report = verify_all(self.rt)
        assert not report.problems, report.problems
        rows = self.rt.store.read(lambda conn: conn.execute(
            select(transactions.c.id, transactions.c.status, transactions.c.deadline_at)).all())
        stale = [r.id for r in rows if r.status == "temp" and r.deadline_at is not None and r.deadline_at <= now]
        assert not stale, f"temp transactions past their deadline after a read: {stale}"
        statuses = {r.id: r.status for r in rows}
        for t in m.txns.values():
            assert statuses[t.id] == t.status, f"{t.type} {t.id}: store {statuses[t.id]}, model {t.status}"
        zero = self.rt.store.read(lambda conn: conn.execute(select(accounts)).all())
        for row in zero:
            email = next(e for e, pid in self.profile_ids.items() if pid == row.profile_id)
            if m.status[email] == "removed":
                assert (row.active, row.pending, row.held, row.temp_accrued, row.debt) == (0, 0, 0, 0, 0), row


@pytest.mark.slow
@pytest.mark.parametrize("store", STORES)
def test_random_ledger_sequences_keep_every_invariant(store: str, request: pytest.FixtureRequest,
                                                      tmp_path: Path) -> None:
    if store == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        counter = itertools.count()

        def fresh() -> str:
            path = tmp_path / f"example-{next(counter)}.db"
            shutil.copy(template, path)
            return f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_url")

        def fresh() -> str:
            truncate_existing(url)
            return url

    machine = type("LedgerMachine", (LedgerMachine,), {"fresh_store": staticmethod(fresh)})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=EXAMPLES[store], stateful_step_count=STEPS, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        phases=PHASES,
    ))


# --- plain reproductions of what the machine found ------------------------------------------------------------

def test_cancel_after_member_removal_does_not_resurrect_points(rt, program):
    """Regression: cancelling a removed member's redemption used to put forfeited points back into the account."""
    profiles.add(rt, ADMIN, 1, {"email": "gone@example.com"})
    who = member("gone@example.com")
    members.register(rt, ADMIN, RegisterCmd(**who))  # 50.00 initial
    spent = ledger.redeem(rt, ADMIN, RedeemCmd(**who, amount="10"))
    members.delete(rt, ADMIN, DeleteCmd(**who))  # forfeits the remaining 40.00
    with pytest.raises(LoyaltyError) as caught:
        ledger.cancel(rt, ADMIN, TxnRefCmd(transaction_id=spent.transaction_id))
    assert caught.value.code == "not_a_member"
    assert not verify_all(rt).problems
    rows = rt.store.read(lambda conn: conn.execute(select(accounts)).all())
    assert all((r.active, r.pending, r.held, r.debt) == (0, 0, 0, 0) for r in rows), rows
    members.register(rt, ADMIN, RegisterCmd(**who))
    assert ledger.balance(rt, ADMIN, BalanceCmd(**who)).total == "0.00"
