"""SQL for profiles and the lookup rows that matching searches."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from loyalty.domain.model import Profile
from loyalty.storage.prepared import Prepared
from loyalty.storage.tables import profile_phones, profile_values, profiles


def _profile(row: Any) -> Profile:
    return Profile(
        id=row.id,
        db_id=row.db_id,
        email=row.email,
        phones=json.loads(row.phones),
        fname=row.fname,
        lname=row.lname,
        regdate=row.regdate,
        created_at=row.created_at,
        custom=json.loads(row.custom),
    )


_GET = select(profiles).where(profiles.c.id == bindparam("k_id"), profiles.c.db_id == bindparam("k_db"))
_BY_EMAIL = Prepared(select(profiles.c.id).where(profiles.c.db_id == bindparam("k_db"),
                                                 profiles.c.email_norm == bindparam("k_value")).limit(2))
_BY_PHONE = Prepared(select(profile_phones.c.profile_id).where(profile_phones.c.db_id == bindparam("k_db"),
                                                               profile_phones.c.phone == bindparam("k_value")).limit(2))
_EXISTS = Prepared(select(profiles.c.id).where(profiles.c.id == bindparam("k_id"), profiles.c.db_id == bindparam("k_db")))


def get(conn: Connection, db_id: int, profile_id: str) -> Profile | None:
    row = conn.execute(_GET, {"k_id": profile_id, "k_db": db_id}).first()
    return _profile(row) if row else None


def ids_by_email(conn: Connection, db_id: int, email_norm: str) -> list[str]:
    return [r[0] for r in _BY_EMAIL.all(conn, {"k_db": db_id, "k_value": email_norm})]


def ids_by_phone(conn: Connection, db_id: int, phone: str) -> list[str]:
    return [r[0] for r in _BY_PHONE.all(conn, {"k_db": db_id, "k_value": phone})]


def exists(conn: Connection, db_id: int, profile_id: str) -> bool:
    return _EXISTS.first(conn, {"k_id": profile_id, "k_db": db_id}) is not None


def ids_by_value(conn: Connection, db_id: int, field: str, value: str, limit: int = 2) -> list[str]:
    stmt = (
        select(profile_values.c.profile_id)
        .where(profile_values.c.db_id == db_id, profile_values.c.field == field, profile_values.c.value == value)
        .limit(limit)
    )
    return list(conn.execute(stmt).scalars())


def save(conn: Connection, p: Profile, email_norm: str | None, phone_keys: list[str],
         value_keys: dict[str, str], now: Any, is_new: bool) -> None:
    values = dict(
        db_id=p.db_id,
        email=p.email,
        email_norm=email_norm,
        phones=json.dumps(p.phones),
        fname=p.fname,
        lname=p.lname,
        regdate=p.regdate,
        custom=json.dumps(p.custom, sort_keys=True),
        updated_at=now,
    )
    if is_new:
        conn.execute(insert(profiles).values(id=p.id, created_at=p.created_at, **values))
    else:
        conn.execute(update(profiles).where(profiles.c.id == p.id).values(**values))
        conn.execute(delete(profile_phones).where(profile_phones.c.profile_id == p.id))
        conn.execute(delete(profile_values).where(profile_values.c.profile_id == p.id))
    if phone_keys:
        conn.execute(
            insert(profile_phones),
            [{"db_id": p.db_id, "phone": ph, "profile_id": p.id} for ph in dict.fromkeys(phone_keys)],
        )
    if value_keys:
        conn.execute(
            insert(profile_values),
            [{"db_id": p.db_id, "field": f, "value": v, "profile_id": p.id} for f, v in value_keys.items()],
        )
