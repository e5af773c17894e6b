"""SQL for API tokens (hashes only; the raw token never reaches the store)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, or_, select, update

from loyalty.storage.tables import tokens


def insert(conn: Connection, name: str, token_hash: str, prefix: str, roles: list[str],
           programs: list[int] | None, databases: list[int] | None, now: datetime) -> int:
    result = conn.execute(
        tokens.insert().values(
            name=name, token_hash=token_hash, prefix=prefix, roles=json.dumps(roles),
            programs=json.dumps(sorted(programs)) if programs else None,
            databases=json.dumps(sorted(databases)) if databases else None, created_at=now,
        ).returning(tokens.c.id)
    )
    return int(result.scalar_one())


_BY_HASH = select(tokens).where(tokens.c.token_hash == bindparam("k_hash"))


def by_hash(conn: Connection, token_hash: str) -> dict[str, Any] | None:
    row = conn.execute(_BY_HASH, {"k_hash": token_hash}).mappings().first()
    return dict(row) if row else None


def by_id(conn: Connection, token_id: int) -> dict[str, Any]:
    return dict(conn.execute(select(tokens).where(tokens.c.id == token_id)).mappings().one())


def find(conn: Connection, ref: str) -> list[dict[str, Any]]:
    conds = [tokens.c.name == ref, tokens.c.prefix == ref]
    if ref.isdigit():
        conds.append(tokens.c.id == int(ref))
    return [dict(r) for r in conn.execute(select(tokens).where(or_(*conds))).mappings()]


def all_rows(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(select(tokens).order_by(tokens.c.id)).mappings()]


def touch(conn: Connection, token_id: int, now: datetime) -> None:
    conn.execute(update(tokens).where(tokens.c.id == token_id).values(last_used_at=now))


def revoke(conn: Connection, token_id: int, now: datetime) -> None:
    conn.execute(update(tokens).where(tokens.c.id == token_id).values(revoked_at=now))
