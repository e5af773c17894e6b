"""SQL for change counters: what per-process caches check before trusting what they hold."""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, insert, select, update

from loyalty.storage.prepared import Prepared
from loyalty.storage.tables import change_counters

_READ = Prepared(select(change_counters.c.value).where(change_counters.c.name == bindparam("k_name")))
_BUMP = Prepared(update(change_counters).where(change_counters.c.name == bindparam("k_name"))
                 .values(value=change_counters.c.value + 1))
_CREATE = Prepared(insert(change_counters), ["name", "value"])


def read(conn: Connection, name: str) -> int:
    row = _READ.first(conn, {"k_name": name})
    return int(row[0]) if row else 0


def bump(conn: Connection, name: str) -> None:
    """Call inside the transaction that changes what the counter guards, so both commit together."""
    if _BUMP.run(conn, {"k_name": name}) == 0:  # a store whose rows were removed: caches must still notice
        _CREATE.run(conn, {"name": name, "value": 1})
