"""SQL for memberships."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, select, update

from loyalty.domain.model import Member
from loyalty.storage.prepared import Prepared
from loyalty.storage.tables import members

_SELECT = select(members.c.program_id, members.c.profile_id, members.c.status, members.c.registered_at,
                 members.c.first_registered_at).where(members.c.program_id == bindparam("k_program"),
                                                      members.c.profile_id == bindparam("k_profile"))
GET_MEMBER = Prepared(_SELECT)  # parameters k_program, k_profile; other repositories read it with their own
_LOCK = Prepared(_SELECT.with_for_update())


def get(conn: Connection, program_id: int, profile_id: str, lock: bool = False) -> Member | None:
    stmt = _LOCK if lock and conn.dialect.name == "postgresql" else GET_MEMBER
    row = stmt.first(conn, {"k_program": program_id, "k_profile": profile_id})
    return Member(*row) if row is not None else None


def insert_member(conn: Connection, program_id: int, profile_id: str, at: datetime) -> None:
    conn.execute(
        insert(members).values(
            program_id=program_id, profile_id=profile_id, status="active", registered_at=at, first_registered_at=at
        )
    )


def set_status(conn: Connection, program_id: int, profile_id: str, status: str, at: datetime) -> None:
    values: dict[str, object] = {"status": status}
    if status == "active":
        values.update(registered_at=at, removed_at=None)
    else:
        values["removed_at"] = at
    conn.execute(
        update(members)
        .where(members.c.program_id == program_id, members.c.profile_id == profile_id)
        .values(**values)
    )
