"""Bulk loading for benchmarks and imports: profiles enrolled with an initial balance, and long histories,
written through the driver in chunks (COPY on PostgreSQL, executemany of plain tuples on SQLite). Every row
written here is what the ledger itself would write (lots, postings and counters agree), so `loyalty verify`
holds on a seeded store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, case, literal, select, update

from loyalty.storage.prepared import send_deferred
from loyalty.storage.tables import accounts, lots, members, postings, profile_phones, profiles, transactions
from loyalty.storage.types import UtcMicros

CHUNK = 2000


def _chunks(rows: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(rows), CHUNK):
        yield rows[i:i + CHUNK]


def seed_members(conn: Connection, *, program_id: int, db_id: int, currency_iid: int, people: list[dict[str, Any]],
                 initial: int, expires_at: datetime | None, now: datetime) -> None:
    """Profiles (`id`, `email`, `phone`, `txn_id` per person) enrolled, each with an `initial` credit as a lot."""
    at = _MICROS.process_bind_param(now, None)
    until = _MICROS.process_bind_param(expires_at, None) if expires_at is not None else None
    for chunk in _chunks(people):
        insert_rows(conn, profiles, ("id", "db_id", "email", "email_norm", "phones", "created_at", "updated_at",
                                      "custom"),
                     [(p["id"], db_id, p["email"], p["email"].lower(), json.dumps([p["phone"]]), at, at, "{}")
                      for p in chunk])
        insert_rows(conn, profile_phones, ("db_id", "phone", "profile_id"),
                     [(db_id, p["phone"], p["id"]) for p in chunk])
        insert_rows(conn, members, ("program_id", "profile_id", "status", "registered_at", "first_registered_at"),
                     [(program_id, p["id"], "active", at, at) for p in chunk])
        insert_rows(conn, accounts, ("program_id", "profile_id", "currency_iid", "active", "next_event_at",
                                      "txn_count"),
                     [(program_id, p["id"], currency_iid, initial, until, 1) for p in chunk])
        insert_rows(conn, lots, ("id", "program_id", "profile_id", "currency_iid", "original", "remaining",
                                  "activates_at", "expires_at", "is_active", "created_at"),
                     [(p["txn_id"], program_id, p["id"], currency_iid, initial, initial, at, until, True, at)
                      for p in chunk])
        insert_rows(conn, transactions, ("id", "program_id", "profile_id", "currency_iid", "type", "status",
                                          "amount", "balance_before", "balance_after", "activation_date",
                                          "expiration_date", "source_type", "created_at", "recorded_at"),
                     [(p["txn_id"], program_id, p["id"], currency_iid, "initial", "committed", initial, 0, initial,
                       at, until, "system", at, at) for p in chunk])
        insert_rows(conn, postings, _POSTING_COLUMNS,
                     [(program_id, p["id"], currency_iid, p["txn_id"], "accrual", initial, 0, 0, 0, 0, at)
                      for p in chunk])


def seed_history(conn: Connection, *, program_id: int, profile_id: str, currency_iid: int, ids: list[str],
                 amount: int, now: datetime) -> None:
    """A long history that moves no points: temporary accruals that were rolled back."""
    at = _MICROS.process_bind_param(now, None)
    columns = ("id", "program_id", "profile_id", "currency_iid", "type", "status", "amount", "balance_before",
               "balance_after", "source_type", "created_at", "recorded_at", "resolved_at")
    for start in range(0, len(ids), 10 * CHUNK):
        insert_rows(conn, transactions, columns, [
            (txn_id, program_id, profile_id, currency_iid, "accrual", "rolled_back", amount, 0, 0, "api", at, at, at)
            for txn_id in ids[start:start + 10 * CHUNK]])
    conn.execute(update(accounts).where(
        accounts.c.program_id == program_id, accounts.c.profile_id == profile_id,
        accounts.c.currency_iid == currency_iid).values(txn_count=accounts.c.txn_count + len(ids)))


def seed_expiring_lots(conn: Connection, *, program_id: int, currency_iid: int, counts: list[tuple[str, int]],
                       amount: int, created_at: datetime, expires_at: datetime, ids: Iterator[str]) -> int:
    """Committed accruals of `amount` each, `n` per enrolled member for every (`profile_id`, `n`) of `counts`,
    whose lots expire at `expires_at`: as many lots, transactions and postings, and the accounts' balances,
    history counters and `next_event_at` moved as the ledger would (so a sweep finds them due once
    `expires_at` has passed, and `verify` holds before and after). Returns the number of lots written.

    A million lots means three million rows, so they go through the driver directly (COPY on PostgreSQL,
    executemany of plain tuples on SQLite) rather than row by row through SQLAlchemy's parameter handling."""
    wanted = [(profile_id, n) for profile_id, n in counts if n > 0]
    key = (accounts.c.program_id == program_id, accounts.c.currency_iid == currency_iid)
    at, until = _MICROS.process_bind_param(created_at, None), _MICROS.process_bind_param(expires_at, None)
    expiry = literal(expires_at, UtcMicros)
    step = max(1, 10 * CHUNK // max(1, max((n for _, n in wanted), default=1)))
    written = 0
    # One scan for every balance: an IN list per chunk is planned as a scan of all accounts when the
    # statistics predate the seeding (as they do right after it).
    balance = {p: a for p, a in conn.execute(select(accounts.c.profile_id, accounts.c.active).where(*key))}
    for start in range(0, len(wanted), step):
        part = wanted[start:start + step]
        lot_rows, txn_rows, posting_rows = [], [], []
        for profile_id, n in part:
            before = balance[profile_id]
            for _ in range(n):
                txn_id = next(ids)
                lot_rows.append((txn_id, program_id, profile_id, currency_iid, amount, amount, 0, 0, at, until,
                                 True, False, at))
                txn_rows.append((txn_id, program_id, profile_id, currency_iid, "accrual", "committed", amount,
                                 before, before + amount, at, until, "api", at, at))
                posting_rows.append((program_id, profile_id, currency_iid, txn_id, "accrual", amount, 0, 0, 0, 0,
                                     at))
                before += amount
        insert_rows(conn, lots, _LOT_COLUMNS, lot_rows)
        insert_rows(conn, transactions, _TXN_COLUMNS, txn_rows)
        insert_rows(conn, postings, _POSTING_COLUMNS, posting_rows)
        conn.execute(
            update(accounts)
            .where(*key, accounts.c.profile_id == bindparam("k_profile"))
            .values(active=accounts.c.active + bindparam("d_units"), earned=accounts.c.earned + bindparam("d_units"),
                    txn_count=accounts.c.txn_count + bindparam("d_count"),
                    next_event_at=case((accounts.c.next_event_at.is_(None), expiry),
                                       (accounts.c.next_event_at > expiry, expiry),
                                       else_=accounts.c.next_event_at),
                    version=accounts.c.version + 1),
            [{"k_profile": p, "d_units": n * amount, "d_count": n} for p, n in part])
        written += len(lot_rows)
    return written


_MICROS = UtcMicros()
_LOT_COLUMNS = ("id", "program_id", "profile_id", "currency_iid", "original", "remaining", "held", "expired",
                "activates_at", "expires_at", "is_active", "cancelled", "created_at")
_TXN_COLUMNS = ("id", "program_id", "profile_id", "currency_iid", "type", "status", "amount", "balance_before",
                "balance_after", "activation_date", "expiration_date", "source_type", "created_at", "recorded_at")
_POSTING_COLUMNS = ("program_id", "profile_id", "currency_iid", "transaction_id", "reason", "d_active", "d_pending",
                    "d_held", "d_temp", "d_debt", "at")


def insert_rows(conn: Connection, table: Table, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Plain tuples (timestamps already in store form) into `table`, in the connection's transaction."""
    if not rows:
        return
    names = ", ".join(columns)
    driver = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        send_deferred(conn)  # what was deferred before goes first (pipelined.py)
        with driver.cursor() as cur, cur.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        cur = driver.cursor()
        try:
            cur.executemany(f"INSERT INTO {table.name} ({names}) VALUES ({', '.join('?' * len(columns))})", rows)
        finally:
            cur.close()


def tidy_after_load(conn: Connection) -> dict[str, Any]:
    """After a bulk load on PostgreSQL (on an autocommit connection): what autovacuum would do within a minute,
    VACUUM (dead rows of earlier updates) and ANALYZE (statistics that know the new sizes; without them the
    planner may scan whole tables for keyed statements). Returns whether the server's autovacuum is on, since
    where it is off earlier updates have left their dead rows in place until now."""
    autovacuum = conn.exec_driver_sql("SHOW autovacuum").scalar_one()
    conn.exec_driver_sql("VACUUM (ANALYZE)")
    return {"autovacuum": autovacuum}
