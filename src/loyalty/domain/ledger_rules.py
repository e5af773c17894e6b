"""Rules of the ledger that need no store: which lots a spend takes from, and which state moves are allowed.

Consumption order (engine.md §2): soonest expiration first, never-expiring last, ties oldest first. The store
returns candidate lots already in that order (`ledger_repo.spendable_lots`); `plan_take` decides how much to
take from each.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from loyalty.domain.errors import TransactionState
from loyalty.domain.model import Lot, Txn

_FAR_FUTURE = datetime.max.replace(year=9999)


def plan_take(lots: Iterable[Lot], amount: int) -> tuple[list[tuple[Lot, int]], int]:
    """Take up to `amount` from lots in the given order; return [(lot, taken)] and what is left untaken."""
    plan: list[tuple[Lot, int]] = []
    left = amount
    for lot in lots:
        if left <= 0:
            break
        take = min(lot.remaining, left)
        if take > 0:
            plan.append((lot, take))
            left -= take
    return plan, left


def check_commit(txn: Txn) -> bool:
    """True when the commit must do work; False when it is a repeat. Raises if the state forbids it."""
    if txn.status == "committed":
        return False
    if txn.status != "temp":
        raise TransactionState(f"Transaction {txn.id} is {txn.status} and cannot be committed")
    return True


def check_rollback(txn: Txn) -> bool:
    if txn.status == "rolled_back":
        return False
    if txn.status != "temp":
        hint = " (use cancel_transaction)" if txn.status == "committed" else ""
        raise TransactionState(f"Transaction {txn.id} is {txn.status} and cannot be rolled back{hint}")
    return True


def check_cancel(txn: Txn) -> bool:
    if txn.status == "cancelled":
        return False
    if txn.status == "rolled_back":
        raise TransactionState(f"Transaction {txn.id} is rolled_back and cannot be cancelled")
    if txn.type not in ("accrual", "redemption", "initial", "order_accrual", "order_redemption"):
        raise TransactionState(f"Transaction {txn.id} of type {txn.type} cannot be cancelled")
    return True
