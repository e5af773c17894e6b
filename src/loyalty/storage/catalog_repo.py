"""SQL for the configured catalogue: databases and their fields, programs, currencies, promotions, tiers.

Requests read the catalogue through `snapshot(conn)`: a per-process copy of programs, currencies and databases,
trusted while the store's `catalog` change counter is unchanged (one keyed read, done once per connection use).
`loyalty apply` bumps the counter in its own transaction, so every process sees a new catalogue on its next
request. Everything that writes the catalogue reads it uncached (`get_program`, ...).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from loyalty.domain.model import Currency, Database, FieldDef, Program
from loyalty.storage import counters_repo
from loyalty.storage.tables import (
    currencies,
    databases,
    db_fields,
    programs,
    promotion_rules,
    promotions,
    tier_groups,
    tiers,
)

_GET_DATABASE = select(databases).where(databases.c.id == bindparam("k_id"))
_DATABASE_FIELDS = select(db_fields).where(db_fields.c.db_id == bindparam("k_id"))
_GET_PROGRAM = select(programs).where(programs.c.id == bindparam("k_id"))
_PROGRAM_CURRENCIES = (select(currencies).where(currencies.c.program_id == bindparam("k_id"),
                                                currencies.c.status == "active").order_by(currencies.c.iid))


def get_database(conn: Connection, db_id: int) -> Database | None:
    row = conn.execute(_GET_DATABASE, {"k_id": db_id}).first()
    if row is None:
        return None
    fields = {f.name: FieldDef(f.name, f.type, bool(f.is_unique))
              for f in conn.execute(_DATABASE_FIELDS, {"k_id": db_id})}
    return Database(row.id, row.name, fields)


def _program(row: Any) -> Program:
    return Program(
        id=row.id,
        external_id=row.external_id,
        name=row.name,
        description=row.description,
        db_id=row.db_id,
        status=row.status,
        earn_rate=Decimal(row.earn_rate),
        point_value=Decimal(row.point_value),
        max_redeem_share=Decimal(row.max_redeem_share),
        return_window_days=row.return_window_days,
    )


def get_program(conn: Connection, program_id: int) -> Program | None:
    row = conn.execute(_GET_PROGRAM, {"k_id": program_id}).first()
    return _program(row) if row else None


def list_programs(conn: Connection) -> list[Program]:
    return [_program(r) for r in conn.execute(select(programs).order_by(programs.c.id))]


def _currency(row: Any) -> Currency:
    return Currency(
        program_id=row.program_id,
        iid=row.iid,
        eid=row.eid,
        name=row.name,
        kind=row.kind,
        precision=row.precision,
        initial_balance=row.initial_balance,
        lifetime_kind=row.lifetime_kind,
        lifetime_n=row.lifetime_n,
        is_default=bool(row.is_default),
    )


def program_currencies(conn: Connection, program_id: int) -> list[Currency]:
    return [_currency(r) for r in conn.execute(_PROGRAM_CURRENCIES, {"k_id": program_id})]


# --- writes used by `loyalty apply` -------------------------------------------------------------------------

def upsert_row(conn: Connection, table: Any, keys: dict[str, Any], values: dict[str, Any]) -> str:
    """Insert or update one row by its key; return "created", "updated" or "unchanged"."""
    cond = [table.c[k] == v for k, v in keys.items()]
    row = conn.execute(select(table).where(*cond)).mappings().first()
    if row is None:
        conn.execute(insert(table).values(**keys, **values))
        return "created"
    changed = {k: v for k, v in values.items() if row[k] != v}
    if not changed:
        return "unchanged"
    conn.execute(update(table).where(*cond).values(**changed))
    return "updated"


def other_active_program(conn: Connection, db_id: int, program_id: int) -> int | None:
    return conn.execute(
        select(programs.c.id).where(
            programs.c.db_id == db_id, programs.c.status == "active", programs.c.id != program_id
        )
    ).scalar()


def currency_keys(conn: Connection, program_id: int) -> dict[int, str]:
    rows = conn.execute(
        select(currencies.c.iid, currencies.c.status).where(currencies.c.program_id == program_id)
    )
    return {r.iid: r.status for r in rows}


def promotion_ids(conn: Connection, program_id: int) -> dict[int, bool]:
    rows = conn.execute(select(promotions.c.id, promotions.c.is_active).where(promotions.c.program_id == program_id))
    return {r.id: bool(r.is_active) for r in rows}


def promotion_owner(conn: Connection, promotion_id: int) -> int | None:
    return conn.execute(select(promotions.c.program_id).where(promotions.c.id == promotion_id)).scalar()


def replace_promotion_rules(conn: Connection, promotion_id: int, rules: list[dict[str, Any]]) -> bool:
    """Make the rule rows equal `rules`; return whether anything changed."""
    current = [
        dict(r)
        for r in conn.execute(
            select(promotion_rules).where(promotion_rules.c.promotion_id == promotion_id)
        ).mappings()
    ]
    key = lambda r: (r["side"], r["currency_iid"])  # noqa: E731
    wanted = [{"promotion_id": promotion_id, **r} for r in rules]
    if sorted(current, key=key) == sorted(wanted, key=key):
        return False
    conn.execute(delete(promotion_rules).where(promotion_rules.c.promotion_id == promotion_id))
    if wanted:
        conn.execute(insert(promotion_rules), wanted)
    return True


def tier_group_owner(conn: Connection, group_id: int) -> int | None:
    return conn.execute(select(tier_groups.c.program_id).where(tier_groups.c.id == group_id)).scalar()


def tier_group_ids(conn: Connection, program_id: int) -> dict[int, str]:
    rows = conn.execute(select(tier_groups.c.id, tier_groups.c.status).where(tier_groups.c.program_id == program_id))
    return {r.id: r.status for r in rows}


def tier_owner(conn: Connection, tier_id: int) -> int | None:
    return conn.execute(select(tiers.c.group_id).where(tiers.c.id == tier_id)).scalar()


def tier_ids(conn: Connection, group_id: int) -> dict[int, str]:
    rows = conn.execute(select(tiers.c.id, tiers.c.status).where(tiers.c.group_id == group_id))
    return {r.id: r.status for r in rows}


def set_status(conn: Connection, table: Any, keys: dict[str, Any], **values: Any) -> None:
    conn.execute(update(table).where(*[table.c[k] == v for k, v in keys.items()]).values(**values))


def max_id(conn: Connection, table: Any, column: str = "id") -> int:
    from sqlalchemy import func

    return conn.execute(select(func.coalesce(func.max(table.c[column]), 0))).scalar_one()


def find_id(conn: Connection, table: Any, **where: Any) -> int | None:
    """The smallest id of the rows matching every `column=value` (None matches NULL)."""
    conds = [table.c[k].is_(None) if v is None else table.c[k] == v for k, v in where.items()]
    return conn.execute(select(table.c.id).where(*conds).order_by(table.c.id).limit(1)).scalar()


def all_currencies(conn: Connection, program_id: int) -> list[Currency]:
    """Every currency of the program, archived ones included (history and rules may name them)."""
    rows = conn.execute(select(currencies).where(currencies.c.program_id == program_id).order_by(currencies.c.iid))
    return [_currency(r) for r in rows]


# --- the cached snapshot ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    version: int
    programs: dict[int, Program]
    currencies: dict[int, tuple[Currency, ...]]  # active currencies of each program, ascending iid
    all_currencies: dict[int, tuple[Currency, ...]]  # archived ones included
    databases: dict[int, Database]


_lock = threading.Lock()
_by_engine: weakref.WeakKeyDictionary[Any, Snapshot] = weakref.WeakKeyDictionary()
_by_connection: weakref.WeakKeyDictionary[Connection, Snapshot] = weakref.WeakKeyDictionary()


def snapshot(conn: Connection) -> Snapshot:
    """The catalogue as of this connection's use; reloaded when another transaction changed it."""
    known = _by_connection.get(conn)
    if known is not None:
        return known
    version = counters_repo.read(conn, "catalog")
    with _lock:
        cached = _by_engine.get(conn.engine)
    if cached is None or cached.version != version:
        cached = _load(conn, version)
        with _lock:
            _by_engine[conn.engine] = cached
    _by_connection[conn] = cached
    return cached


def _load(conn: Connection, version: int) -> Snapshot:
    programs_by_id = {p.id: p for p in list_programs(conn)}
    all_by_program: dict[int, list[Currency]] = {pid: [] for pid in programs_by_id}
    active_by_program: dict[int, list[Currency]] = {pid: [] for pid in programs_by_id}
    for row in conn.execute(select(currencies).order_by(currencies.c.program_id, currencies.c.iid)):
        currency = _currency(row)
        all_by_program.setdefault(row.program_id, []).append(currency)
        if row.status == "active":
            active_by_program.setdefault(row.program_id, []).append(currency)
    fields: dict[int, dict[str, FieldDef]] = {}
    for f in conn.execute(select(db_fields)):
        fields.setdefault(f.db_id, {})[f.name] = FieldDef(f.name, f.type, bool(f.is_unique))
    dbs = {r.id: Database(r.id, r.name, fields.get(r.id, {})) for r in conn.execute(select(databases))}
    return Snapshot(version, programs_by_id, {k: tuple(v) for k, v in active_by_program.items()},
                    {k: tuple(v) for k, v in all_by_program.items()}, dbs)


def end_of_use(conn: Connection) -> None:
    """The connection's use is over (it is going back to be reused): the next one checks the counter again."""
    _by_connection.pop(conn, None)


def catalog_changed(conn: Connection) -> None:
    """Mark the catalogue changed in this transaction (every writer of catalogue tables calls it)."""
    counters_repo.bump(conn, "catalog")
    _by_connection.pop(conn, None)
