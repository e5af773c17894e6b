"""Make time-dependent effects durable: settle accounts whose next event (activation, expiration, temp
deadline) has passed. Reads are already correct without this; the sweep keeps the store itself current and
writes the `expiration` transactions. Safe with several processes: each account is settled under its lock and
settling an account twice does nothing the second time.
"""

from __future__ import annotations

from functools import partial

from sqlalchemy import Connection

from loyalty.services.book import Book
from loyalty.services.ids import new_txn_id
from loyalty.services.runtime import Runtime
from loyalty.storage import catalog_repo, expiry_repo, ledger_repo


def sweep_once(rt: Runtime, batch: int = 500) -> int:
    """Settle up to `batch` due accounts; return how many were due.

    Expiration, by far the most frequent event, is done for the whole batch at once (expiry_repo); accounts
    that are still due afterwards (a temp deadline or an activation) are settled one by one through the Book.
    Each batch commits on its own, so an interrupted sweep resumes where it stopped.
    """
    now = rt.clock.now()
    due = rt.store.read(lambda conn: ledger_repo.accounts_with_due_events(conn, now, batch))
    if not due:
        return 0
    rest = rt.store.write(lambda conn: expiry_repo.expire_batch(conn, due, now, new_txn_id))
    for key in rest:
        rt.store.write(partial(_settle, rt, *key), (key[0], key[1]))  # the member's writer
    return len(due)


def _settle(rt: Runtime, program_id: int, profile_id: str, currency_iid: int, conn: Connection) -> int:
    currency = next((c for c in catalog_repo.all_currencies(conn, program_id) if c.iid == currency_iid), None)
    if currency is None:
        return 0
    book = Book.open(conn, program_id, profile_id, currency, rt.clock.now())
    book.settle()
    book.finish()
    return 1


def sweep_all(rt: Runtime, batch: int = 200) -> int:
    total = 0
    while True:
        n = sweep_once(rt, batch)
        total += n
        if n < batch:
            return total
