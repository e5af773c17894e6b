"""The account book: every change to one account's points, inside one store transaction.

A `Book` wraps one locked account. Lots are buckets of points with an activation and an expiry; the account's
cached counters obey `active + pending = Σ lot.remaining − debt` and `held = Σ open holds`. Every change to a
counter is also written as a posting (an append-only journal), so `loyalty verify` can replay an account and
prove its cached balances. Callers: `settle()` first (applies what time made due), then operate, then
`finish()` once.

Debt (a negative active balance left by cancelling spent points) is netted against active lots as soon as
both exist, so `debt > 0` implies no active lot has points left.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from loyalty.domain.ledger_rules import plan_take
from loyalty.domain.model import Account, Currency, Lot, Txn
from loyalty.services.ids import new_txn_id
from loyalty.storage import ledger_repo


class Book:
    def __init__(self, conn: Connection, account: Account, currency: Currency, now: datetime):
        self.conn = conn
        self.a = account
        self.currency = currency
        self.now = now
        self._postings: list[dict[str, Any]] = []
        self._dirty = False
        self.earned_changed = False

    @classmethod
    def open(cls, conn: Connection, program_id: int, profile_id: str, currency: Currency, now: datetime) -> Book:
        account = ledger_repo.lock_account(conn, program_id, profile_id, currency.iid)
        return cls(conn, account, currency, now)

    # --- journal ----------------------------------------------------------------------------------------------

    def _post(self, txn_id: str | None, reason: str, active: int = 0, pending: int = 0, held: int = 0,
              temp: int = 0, debt: int = 0) -> None:
        if not (active or pending or held or temp or debt):
            return
        a = self.a
        a.active += active
        a.pending += pending
        a.held += held
        a.temp_accrued += temp
        a.debt += debt
        self._dirty = True
        self._postings.append(
            {"program_id": a.program_id, "profile_id": a.profile_id, "currency_iid": a.currency_iid,
             "transaction_id": txn_id, "reason": reason, "d_active": active, "d_pending": pending,
             "d_held": held, "d_temp": temp, "d_debt": debt, "at": self.now}
        )

    def _event_at(self, moment: datetime | None) -> None:
        if moment is not None and (self.a.next_event_at is None or moment < self.a.next_event_at):
            self.a.next_event_at = moment
            self._dirty = True

    def _earn(self, amount: int) -> None:
        self.a.earned += amount
        self.earned_changed = True
        self._dirty = True

    def finish(self) -> None:
        if self.earned_changed and not self.currency.spendable:
            # Tier membership follows qualification points (tier groups read only those) in the same transaction.
            from loyalty.services import tiers

            tiers.evaluate_member(self.conn, self.a.program_id, self.a.profile_id, self.now,
                                  currency_iid=self.a.currency_iid, earned=self.a.earned)
            self.earned_changed = False
        if self._dirty:
            ledger_repo.save_account(self.conn, self.a)
            ledger_repo.insert_postings(self.conn, self._postings)
            self._postings = []
            self._dirty = False

    # --- time -------------------------------------------------------------------------------------------------

    def settle(self) -> bool:
        """Apply every time-dependent effect that is due: temp deadlines, expirations, activations. Whether any
        was due (what the caller read of the account's transactions and lots may have changed)."""
        if self.a.next_event_at is None or self.a.next_event_at > self.now:
            return False
        for txn in ledger_repo.due_temp_txns(self.conn, self.a, self.now):
            self.release_temp(txn, status="rolled_back", at=txn.deadline_at or self.now)
        self.expire_due()
        for lot in ledger_repo.lots_to_activate(self.conn, self.a, self.now):
            lot.is_active = True
            ledger_repo.save_lot(self.conn, lot)
            self._post(lot.id, "activation", active=lot.remaining, pending=-lot.remaining)
        self.pay_debt()
        self.a.next_event_at = ledger_repo.next_event(self.conn, self.a)
        self._dirty = True
        return True

    def expire_due(self) -> None:
        """Remove the remaining points of lots whose expiry has passed, as one `expiration` transaction."""
        due = ledger_repo.lots_to_expire(self.conn, self.a, self.now)
        if not due:
            return
        txn_id = new_txn_id()
        before = self.a.active
        total = 0
        for lot in due:
            amount = lot.remaining
            total += amount
            lot.expired += amount
            lot.remaining = 0
            ledger_repo.save_lot(self.conn, lot)
            if lot.is_active:
                self._post(txn_id, "expiration", active=-amount)
            else:
                self._post(txn_id, "expiration", pending=-amount)
        self.record(Txn(
            id=txn_id, program_id=self.a.program_id, profile_id=self.a.profile_id, currency_iid=self.a.currency_iid,
            eid=None, type="expiration", status="committed", amount=total, balance_before=before,
            balance_after=self.a.active, recorded_at=self.now, source_type="system", description="Points expired",
            # When the points actually expired, which is earlier than now when nobody looked at the account.
            created_at=max((lot.expires_at or self.now) for lot in due),
        ))

    # --- movements --------------------------------------------------------------------------------------------

    def record(self, txn: Txn) -> None:
        ledger_repo.insert_txn(self.conn, txn)
        self.a.txn_count += 1
        self._dirty = True

    def add_lot(self, txn_id: str, amount: int, activates_at: datetime, expires_at: datetime | None) -> Lot:
        """Credit `amount` as a new lot; pending until `activates_at`. Active points pay debt first."""
        is_active = activates_at <= self.now
        lot = Lot(txn_id, amount, amount, 0, 0, activates_at, expires_at, is_active, False, self.now)
        ledger_repo.insert_lot(self.conn, self.a, lot)
        self._earn(amount)
        if is_active:
            self._post(txn_id, "accrual", active=amount)
            self.pay_debt()
        else:
            self._post(txn_id, "accrual", pending=amount)
            self._event_at(activates_at)
        self._event_at(expires_at)
        return lot

    def take(self, txn_id: str, amount: int, hold: bool) -> list[tuple[str, int]]:
        """Take `amount` from spendable lots in consumption order (caller checked the active balance)."""
        plan, left = plan_take(ledger_repo.spendable_lots(self.conn, self.a, self.now), amount)
        if left:
            raise RuntimeError("active balance and lots disagree")  # invariant breach: never answer with it
        for lot, taken in plan:
            lot.remaining -= taken
            if hold:
                lot.held += taken
            ledger_repo.save_lot(self.conn, lot)
        taken_rows = [(lot.id, taken) for lot, taken in plan]
        ledger_repo.insert_consumptions(self.conn, self.a, txn_id, taken_rows)
        if hold:
            self._post(txn_id, "hold", active=-amount, held=amount)
        else:
            self._post(txn_id, "redemption", active=-amount)
        return taken_rows

    def pay_debt(self) -> None:
        if self.a.debt <= 0:
            return
        plan, _ = plan_take(ledger_repo.spendable_lots(self.conn, self.a, self.now), self.a.debt)
        paid = 0
        for lot, taken in plan:
            lot.remaining -= taken
            paid += taken
            ledger_repo.save_lot(self.conn, lot)
        # Active is Σ active lots − debt, so paying debt from lots leaves it unchanged.
        self._post(None, "debt_payment", debt=-paid)

    def return_points(self, txn_id: str, was_hold: bool) -> None:
        """Put back what a redemption took, into the same lots (keeping their expiry); expired ones expire."""
        for lot, amount in ledger_repo.lots_taken_by(self.conn, txn_id):
            if was_hold:
                lot.held -= amount
            lot.remaining += amount
            ledger_repo.save_lot(self.conn, lot)
            self._event_at(lot.expires_at)  # the lot may have been emptied and left out of next_event_at
            self._post(txn_id, "return", active=amount if lot.is_active else 0,
                       pending=0 if lot.is_active else amount)
        self.expire_due()
        self.pay_debt()

    def release_temp(self, txn: Txn, status: str, at: datetime) -> None:
        """End a temp transaction without committing it (rollback, cancel, or deadline passed)."""
        if txn.type in ("redemption", "order_redemption"):
            self._post(txn.id, "release", held=-txn.amount)
            self.return_points(txn.id, was_hold=True)
        else:
            self._post(txn.id, "release", temp=-txn.amount)
        ledger_repo.update_txn(self.conn, txn.id, status=status, resolved_at=at)
        txn.status = status

    def commit_hold(self, txn: Txn) -> None:
        for lot, amount in ledger_repo.lots_taken_by(self.conn, txn.id):
            lot.held -= amount
            ledger_repo.save_lot(self.conn, lot)
        self._post(txn.id, "commit", held=-txn.amount)

    def claw_back(self, txn_id: str, lot: Lot) -> None:
        """Cancel a committed accrual: empty its lot, and take back what was already spent from it."""
        remaining = lot.remaining
        spent = lot.original - remaining - lot.expired
        lot.remaining = 0
        lot.cancelled = True
        ledger_repo.save_lot(self.conn, lot)
        self._earn(-lot.original)
        if lot.is_active:
            self._post(txn_id, "cancel", active=-remaining)
        else:
            self._post(txn_id, "cancel", pending=-remaining)
        if spent <= 0:
            return
        plan, shortfall = plan_take(ledger_repo.spendable_lots(self.conn, self.a, self.now), spent)
        for other, taken in plan:
            other.remaining -= taken
            ledger_repo.save_lot(self.conn, other)
        self._post(txn_id, "clawback", active=-(spent - shortfall))
        if shortfall:
            self._post(txn_id, "debt", active=-shortfall, debt=shortfall)

    def forfeit(self, txn_id: str) -> int:
        """Zero the account (member removal): open temps are released, every lot emptied, debt cleared."""
        for txn in ledger_repo.open_temp_txns(self.conn, self.a.program_id, self.a.profile_id, self.a.currency_iid):
            self.release_temp(txn, status="rolled_back", at=self.now)
        amount = 0
        for lot in ledger_repo.lots_with_points(self.conn, self.a):
            amount += lot.remaining
            lot.expired += lot.remaining
            lot.remaining = 0
            ledger_repo.save_lot(self.conn, lot)
        self._post(txn_id, "forfeit", active=-self.a.active, pending=-self.a.pending, debt=-self.a.debt)
        self.a.next_event_at = None
        self._dirty = True
        return amount
