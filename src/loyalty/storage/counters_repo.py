"""SQL for change counters: what per-process caches check before trusting what they hold.

A request on a hot endpoint checks two caches (tokens, catalogue), each against its counter. Inside
`request_scope()` the first check reads every counter in one statement and the later ones reuse it: the caches
are then as fresh as the request's start, which is the promise ("a change takes effect on the next request").
A PostgreSQL server process holds the counters in memory instead, refreshed on notification (change_watch.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import Connection, bindparam, insert, select, update

from loyalty.storage import change_watch
from loyalty.storage.prepared import Prepared
from loyalty.storage.tables import change_counters

_READ = Prepared(select(change_counters.c.value).where(change_counters.c.name == bindparam("k_name")))
_BUMP = Prepared(update(change_counters).where(change_counters.c.name == bindparam("k_name"))
                 .values(value=change_counters.c.value + 1))
_CREATE = Prepared(insert(change_counters), ["name", "value"])
_READ_ALL = Prepared(select(change_counters.c.name, change_counters.c.value))

_in_request: ContextVar[dict[str, int] | None] = ContextVar("counters_in_request", default=None)


def request_scope() -> None:
    """From now on in this context (one request's task), counters are read once and then remembered. Writes do
    not use the scope (they run in a writer's context, or under `no_request_scope`)."""
    _in_request.set({})


@contextmanager
def no_request_scope() -> Iterator[None]:
    """Inside, every counter read goes to the store again (for writes, which must see the latest)."""
    token = _in_request.set(None)
    try:
        yield
    finally:
        _in_request.reset(token)


def read(conn: Connection, name: str) -> int:
    seen = _in_request.get()
    if seen is None:
        row = _READ.first(conn, {"k_name": name})
        return int(row[0]) if row else 0
    if not seen:
        seen.update(_all(conn))
        seen.setdefault("", 0)  # read, even if the table is empty
    return seen.get(name, 0)


def _all(conn: Connection) -> dict[str, int]:
    """Every counter: the values a server process holds (PostgreSQL, change_watch.py), else from the store."""
    watch = change_watch.watch_of(conn.engine) if conn.dialect.name == "postgresql" else None
    generation = 0
    if watch is not None:
        held = watch.held()
        if held is not None:
            return held
        generation = watch.generation()
    values = {str(n): int(v) for n, v in _READ_ALL.all(conn, {})}
    if watch is not None:
        watch.keep(values, generation)
    return values


def bump(conn: Connection, name: str) -> None:
    """Call inside the transaction that changes what the counter guards, so both commit together."""
    if conn.dialect.name == "postgresql":
        # A trigger notifies the listening server processes, delivered at commit (migration 0004).
        change_watch.bumped(conn.engine.url)
    if _BUMP.run(conn, {"k_name": name}) == 0:  # a store whose rows were removed: caches must still notice
        _CREATE.run(conn, {"name": name, "value": 1})
