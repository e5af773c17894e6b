"""Bulk loading for benchmarks and imports: profiles enrolled with an initial balance, and long histories,
written with multi-row inserts in chunks. Every row written here is what the ledger itself would write
(lots, postings and counters agree), so `loyalty verify` holds on a seeded store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, case, insert, literal, select, update

from loyalty.storage.tables import accounts, lots, members, postings, profile_phones, profiles, transactions
from loyalty.storage.types import UtcMicros

CHUNK = 2000


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), CHUNK):
        yield rows[i:i + CHUNK]


def seed_members(conn: Connection, *, program_id: int, db_id: int, currency_iid: int, people: list[dict[str, Any]],
                 initial: int, expires_at: datetime | None, now: datetime) -> None:
    """Profiles (`id`, `email`, `phone`, `txn_id` per person) enrolled, each with an `initial` credit as a lot."""
    for chunk in _chunks(people):
        conn.execute(insert(profiles), [
            {"id": p["id"], "db_id": db_id, "email": p["email"], "email_norm": p["email"].lower(),
             "phones": json.dumps([p["phone"]]), "created_at": now, "updated_at": now, "custom": "{}"}
            for p in chunk])
        conn.execute(insert(profile_phones), [{"db_id": db_id, "phone": p["phone"], "profile_id": p["id"]}
                                              for p in chunk])
        conn.execute(insert(members), [
            {"program_id": program_id, "profile_id": p["id"], "status": "active", "registered_at": now,
             "first_registered_at": now} for p in chunk])
        conn.execute(insert(accounts), [
            {"program_id": program_id, "profile_id": p["id"], "currency_iid": currency_iid, "active": initial,
             "next_event_at": expires_at, "txn_count": 1} for p in chunk])
        conn.execute(insert(lots), [
            {"id": p["txn_id"], "program_id": program_id, "profile_id": p["id"], "currency_iid": currency_iid,
             "original": initial, "remaining": initial, "activates_at": now, "expires_at": expires_at,
             "is_active": True, "created_at": now} for p in chunk])
        conn.execute(insert(transactions), [
            {"id": p["txn_id"], "program_id": program_id, "profile_id": p["id"], "currency_iid": currency_iid,
             "type": "initial", "status": "committed", "amount": initial, "balance_before": 0,
             "balance_after": initial, "activation_date": now, "expiration_date": expires_at,
             "source_type": "system", "created_at": now, "recorded_at": now} for p in chunk])
        conn.execute(insert(postings), [
            {"program_id": program_id, "profile_id": p["id"], "currency_iid": currency_iid,
             "transaction_id": p["txn_id"], "reason": "accrual", "d_active": initial, "d_pending": 0, "d_held": 0,
             "d_temp": 0, "d_debt": 0, "at": now} for p in chunk])


def seed_history(conn: Connection, *, program_id: int, profile_id: str, currency_iid: int, ids: list[str],
                 amount: int, now: datetime) -> None:
    """A long history that moves no points: temporary accruals that were rolled back."""
    for chunk in _chunks([{"id": i} for i in ids]):
        conn.execute(insert(transactions), [
            {"id": row["id"], "program_id": program_id, "profile_id": profile_id, "currency_iid": currency_iid,
             "type": "accrual", "status": "rolled_back", "amount": amount, "balance_before": 0, "balance_after": 0,
             "source_type": "api", "created_at": now, "recorded_at": now, "resolved_at": now} for row in chunk])
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
        _insert_rows(conn, lots, _LOT_COLUMNS, lot_rows)
        _insert_rows(conn, transactions, _TXN_COLUMNS, txn_rows)
        _insert_rows(conn, postings, _POSTING_COLUMNS, posting_rows)
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


def _insert_rows(conn: Connection, table: Table, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Plain tuples (timestamps already in store form) into `table`, in the connection's transaction."""
    if not rows:
        return
    names = ", ".join(columns)
    driver = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        with driver.cursor() as cur, cur.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        cur = driver.cursor()
        try:
            cur.executemany(f"INSERT INTO {table.name} ({names}) VALUES ({', '.join('?' * len(columns))})", rows)
        finally:
            cur.close()
