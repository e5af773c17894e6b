"""Bulk loading for benchmarks and imports: profiles enrolled with an initial balance, and long histories,
written with multi-row inserts in chunks. Every row written here is what the ledger itself would write
(lots, postings and counters agree), so `loyalty verify` holds on a seeded store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, update

from loyalty.storage.tables import accounts, lots, members, postings, profile_phones, profiles, transactions

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
