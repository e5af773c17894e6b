"""SQL for the ledger: accounts (locked per member), lots, transactions, consumptions and postings.

Locking: on PostgreSQL `lock_account` takes the account row FOR UPDATE; callers lock a member's accounts in
ascending currency order so two operations never deadlock. On SQLite the single writer connection with
BEGIN IMMEDIATE already serialises writers, so the plain SELECT is enough.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Integer, and_, bindparam, func, insert, or_, select, update

from loyalty.domain.model import Account, Lot, Member, Txn
from loyalty.storage.members_repo import GET_MEMBER
from loyalty.storage.prepared import Prepared
from loyalty.storage.tables import accounts, consumptions, lots, postings, transactions
from loyalty.storage.types import UtcMicros

_TXN_FIELDS = [f.name for f in fields(Txn)]
_ACCOUNT_FIELDS = [f.name for f in fields(Account)]
_LOT_FIELDS = [f.name for f in fields(Lot)]
_LOT_KEY = ["program_id", "profile_id", "currency_iid"]


def _account(row: Any) -> Account:
    return Account(
        row.program_id, row.profile_id, row.currency_iid, row.active, row.pending, row.held, row.temp_accrued,
        row.debt, row.next_event_at, row.txn_count, row.earned, row.version,
    )


# Hot-path statements: built and compiled once, run on the driver's cursor (see prepared.py). Each selects its
# columns in the order of the dataclass it fills, so a row maps by position.
_KEY = and_(accounts.c.program_id == bindparam("k_program"), accounts.c.profile_id == bindparam("k_profile"),
            accounts.c.currency_iid == bindparam("k_currency"))
_ACCOUNT_COLUMNS = [accounts.c[name] for name in _ACCOUNT_FIELDS]
_READ_ACCOUNT = Prepared(select(*_ACCOUNT_COLUMNS).where(_KEY))
_LOCK_ACCOUNT = Prepared(select(*_ACCOUNT_COLUMNS).where(_KEY).with_for_update())
_NEW_ACCOUNT = Prepared(insert(accounts), ["program_id", "profile_id", "currency_iid"])
_SAVE_ACCOUNT = Prepared(update(accounts).where(_KEY).values(
    active=bindparam("v_active"), pending=bindparam("v_pending"), held=bindparam("v_held"),
    temp_accrued=bindparam("v_temp"), debt=bindparam("v_debt"),
    next_event_at=bindparam("v_next", type_=accounts.c.next_event_at.type), txn_count=bindparam("v_count"),
    earned=bindparam("v_earned"), version=bindparam("v_version"),
))
_TXN_COLUMNS = [transactions.c[name] for name in _TXN_FIELDS]
_INSERT_TXN = Prepared(insert(transactions), _TXN_FIELDS)
_GET_TXN = Prepared(select(*_TXN_COLUMNS).where(transactions.c.id == bindparam("k_id")))
_TXN_BY_EID = Prepared(select(*_TXN_COLUMNS).where(transactions.c.program_id == bindparam("k_program"),
                                                   transactions.c.eid == bindparam("k_eid")))
_UPDATE_TXN: dict[tuple[str, ...], Prepared] = {}  # by the columns set (update_txn)
_LOT_COLUMNS = [lots.c[name] for name in _LOT_FIELDS]
_INSERT_LOT = Prepared(insert(lots), _LOT_KEY + _LOT_FIELDS)
_GET_LOT = Prepared(select(*_LOT_COLUMNS).where(lots.c.id == bindparam("k_id")))
_SAVE_LOT = Prepared(update(lots).where(lots.c.id == bindparam("k_id")).values(
    remaining=bindparam("v_remaining"), held=bindparam("v_held"), expired=bindparam("v_expired"),
    is_active=bindparam("v_active"), cancelled=bindparam("v_cancelled")))
_LOTS_KEY = and_(lots.c.program_id == bindparam("k_program"), lots.c.profile_id == bindparam("k_profile"),
                 lots.c.currency_iid == bindparam("k_currency"))
_SPENDABLE_LOTS = Prepared(
    select(*_LOT_COLUMNS)
    .where(_LOTS_KEY, lots.c.remaining > 0, lots.c.is_active.is_(True),
           or_(lots.c.expires_at.is_(None), lots.c.expires_at > bindparam("k_now", type_=lots.c.expires_at.type)))
    .order_by(lots.c.expires_at.is_(None), lots.c.expires_at, lots.c.created_at, lots.c.id)
    .limit(bindparam("k_limit", type_=Integer)).offset(bindparam("k_offset", type_=Integer))
)
_INSERT_CONSUMPTION = Prepared(insert(consumptions), ["transaction_id", "lot_id", "program_id", "profile_id", "amount"])
_LOTS_TAKEN_BY = Prepared(select(*_LOT_COLUMNS, consumptions.c.amount)
                          .join_from(consumptions, lots, lots.c.id == consumptions.c.lot_id)
                          .where(consumptions.c.transaction_id == bindparam("k_id"))
                          .order_by(consumptions.c.lot_id))
_POSTING_FIELDS = ["program_id", "profile_id", "currency_iid", "transaction_id", "reason", "d_active", "d_pending",
                   "d_held", "d_temp", "d_debt", "at"]
_INSERT_POSTING = Prepared(insert(postings), _POSTING_FIELDS)


def _key(program_id: int, profile_id: str, currency_iid: int) -> dict[str, Any]:
    return {"k_program": program_id, "k_profile": profile_id, "k_currency": currency_iid}


def read_account(conn: Connection, program_id: int, profile_id: str, currency_iid: int) -> Account | None:
    row = _READ_ACCOUNT.first(conn, _key(program_id, profile_id, currency_iid))
    return Account(*row) if row else None


def read_member_account(conn: Connection, program_id: int, profile_id: str,
                        currency_iid: int) -> tuple[Member | None, Account | None]:
    """The membership and the account (None where missing), in one round trip on PostgreSQL."""
    member_row, account_row = Prepared.first_of_each(
        conn, (GET_MEMBER, {"k_program": program_id, "k_profile": profile_id}),
        (_READ_ACCOUNT, _key(program_id, profile_id, currency_iid)))
    return (Member(*member_row) if member_row else None, Account(*account_row) if account_row else None)


def lock_account(conn: Connection, program_id: int, profile_id: str, currency_iid: int) -> Account:
    """Return the account locked for this transaction, creating it on first use."""
    stmt = _LOCK_ACCOUNT if conn.dialect.name == "postgresql" else _READ_ACCOUNT
    row = stmt.first(conn, _key(program_id, profile_id, currency_iid))
    if row is not None:
        return Account(*row)
    # A concurrent creator makes this insert fail; the unit of work retries and the SELECT then finds the row.
    _NEW_ACCOUNT.run(conn, {"program_id": program_id, "profile_id": profile_id, "currency_iid": currency_iid})
    return Account(program_id, profile_id, currency_iid)


def lock_for_move(conn: Connection, program_id: int, profile_id: str, currency_iid: int,
                  eid: str | None) -> tuple[Account, Txn | None, Member | None]:
    """What a movement needs under the member's lock, in one round trip on PostgreSQL: the account locked
    (created on first use), the transaction already recorded under `eid` (a retry), and the membership. The
    lock comes first, so the other two are read under it."""
    txn_read = (_TXN_BY_EID, {"k_program": program_id, "k_eid": eid}) if eid is not None else None
    return _locked_with(conn, program_id, profile_id, currency_iid, txn_read)


def lock_for_txn(conn: Connection, program_id: int, profile_id: str, currency_iid: int,
                 txn_id: str) -> tuple[Account, Txn | None, Member | None]:
    """What a commit, rollback or cancel needs under the member's lock, in one round trip on PostgreSQL: the
    account locked, the transaction as it stands under the lock, and the membership."""
    return _locked_with(conn, program_id, profile_id, currency_iid, (_GET_TXN, {"k_id": txn_id}))


def _locked_with(conn: Connection, program_id: int, profile_id: str, currency_iid: int,
                 txn_read: tuple[Prepared, dict[str, Any]] | None) -> tuple[Account, Txn | None, Member | None]:
    key = _key(program_id, profile_id, currency_iid)
    reads = [(_LOCK_ACCOUNT if conn.dialect.name == "postgresql" else _READ_ACCOUNT, key),
             (GET_MEMBER, {"k_program": program_id, "k_profile": profile_id})]
    if txn_read is not None:
        reads.append(txn_read)
    account_row, member_row, *txn = Prepared.first_of_each(conn, *reads)
    member = Member(*member_row) if member_row else None
    if account_row is not None:
        account = Account(*account_row)
    elif member is not None and member.status == "active":
        account = lock_account(conn, program_id, profile_id, currency_iid)  # creates it
    else:
        # Not a member: the caller refuses, and must not have written first (on PostgreSQL a write that went out
        # makes the group commit roll its whole batch back, committer.py). Never saved: it is not in the store.
        account = Account(program_id, profile_id, currency_iid)
    txn_row = txn[0] if txn else None
    return account, Txn(*txn_row) if txn_row else None, member


def save_account(conn: Connection, a: Account) -> None:
    _SAVE_ACCOUNT.send(conn, {
        "k_program": a.program_id, "k_profile": a.profile_id, "k_currency": a.currency_iid, "v_active": a.active,
        "v_pending": a.pending, "v_held": a.held, "v_temp": a.temp_accrued, "v_debt": a.debt,
        "v_next": a.next_event_at, "v_count": a.txn_count, "v_earned": a.earned, "v_version": a.version + 1,
    })


def member_accounts(conn: Connection, program_id: int, profile_id: str) -> list[Account]:
    rows = conn.execute(
        select(accounts)
        .where(accounts.c.program_id == program_id, accounts.c.profile_id == profile_id)
        .order_by(accounts.c.currency_iid)
    )
    return [_account(r) for r in rows]


# --- transactions -------------------------------------------------------------------------------------------

def _txn(row: Any) -> Txn:
    return Txn(**{name: getattr(row, name) for name in _TXN_FIELDS})


def insert_txn(conn: Connection, t: Txn) -> None:
    _INSERT_TXN.send(conn, t.__dict__)


def update_txn(conn: Connection, txn_id: str, **values: Any) -> None:
    """Set columns of a transaction (deferred on PostgreSQL, see prepared.py); one statement per set of columns."""
    names = tuple(sorted(values))
    stmt = _UPDATE_TXN.get(names)
    if stmt is None:
        stmt = _UPDATE_TXN[names] = Prepared(update(transactions).where(transactions.c.id == bindparam("k_id"))
                                             .values({name: bindparam(f"v_{name}", type_=transactions.c[name].type)
                                                      for name in names}))
    stmt.send(conn, {"k_id": txn_id, **{f"v_{name}": value for name, value in values.items()}})


def get_txn(conn: Connection, txn_id: str) -> Txn | None:
    row = _GET_TXN.first(conn, {"k_id": txn_id})
    return Txn(*row) if row else None


def txn_by_eid(conn: Connection, program_id: int, eid: str) -> Txn | None:
    row = _TXN_BY_EID.first(conn, {"k_program": program_id, "k_eid": eid})
    return Txn(*row) if row else None


def txns_by_eid(conn: Connection, eid: str, program_ids: list[int]) -> list[Txn]:
    """Transactions recorded under `eid` in any of `program_ids`, at most 10 (probes of the (program, eid) key)."""
    if not program_ids:
        return []
    if len(program_ids) == 1:
        row = _TXN_BY_EID.first(conn, {"k_program": program_ids[0], "k_eid": eid})
        return [Txn(*row)] if row else []
    stmt = select(*_TXN_COLUMNS).where(transactions.c.eid == eid, transactions.c.program_id.in_(program_ids))
    return [_txn(r) for r in conn.execute(stmt.limit(10))]


def due_temp_txns(conn: Connection, a: Account, now: datetime) -> list[Txn]:
    rows = conn.execute(
        select(transactions)
        .where(
            transactions.c.program_id == a.program_id,
            transactions.c.profile_id == a.profile_id,
            transactions.c.currency_iid == a.currency_iid,
            transactions.c.status == "temp",
            transactions.c.deadline_at <= now,
        )
        .order_by(transactions.c.deadline_at)
    )
    return [_txn(r) for r in rows]


def open_temp_txns(conn: Connection, program_id: int, profile_id: str, currency_iid: int) -> list[Txn]:
    rows = conn.execute(
        select(transactions).where(
            transactions.c.program_id == program_id,
            transactions.c.profile_id == profile_id,
            transactions.c.currency_iid == currency_iid,
            transactions.c.status == "temp",
        )
    )
    return [_txn(r) for r in rows]


def accounts_with_due_events(conn: Connection, now: datetime, limit: int) -> list[tuple[int, str, int]]:
    """Accounts whose next time-dependent event has passed (for the background sweeper)."""
    rows = conn.execute(
        select(accounts.c.program_id, accounts.c.profile_id, accounts.c.currency_iid)
        .where(accounts.c.next_event_at <= now)
        .order_by(accounts.c.next_event_at)
        .limit(limit)
    )
    return [(r.program_id, r.profile_id, r.currency_iid) for r in rows]


# --- lots ---------------------------------------------------------------------------------------------------

def _lot(row: Any) -> Lot:
    return Lot(
        row.id, row.original, row.remaining, row.held, row.expired, row.activates_at, row.expires_at,
        bool(row.is_active), bool(row.cancelled), row.created_at,
    )


def _lots_of(a: Account) -> Any:
    return and_(
        lots.c.program_id == a.program_id, lots.c.profile_id == a.profile_id, lots.c.currency_iid == a.currency_iid
    )


def insert_lot(conn: Connection, a: Account, lot: Lot) -> None:
    _INSERT_LOT.send(conn, {"program_id": a.program_id, "profile_id": a.profile_id, "currency_iid": a.currency_iid,
                           **lot.__dict__})


def save_lot(conn: Connection, lot: Lot) -> None:
    _SAVE_LOT.send(conn, {"k_id": lot.id, "v_remaining": lot.remaining, "v_held": lot.held,
                         "v_expired": lot.expired, "v_active": lot.is_active, "v_cancelled": lot.cancelled})


def _prepared_lot(row: tuple[Any, ...]) -> Lot:
    lot = Lot(*row)
    lot.is_active, lot.cancelled = bool(lot.is_active), bool(lot.cancelled)  # SQLite answers 0/1
    return lot


def get_lot(conn: Connection, lot_id: str) -> Lot | None:
    row = _GET_LOT.first(conn, {"k_id": lot_id})
    return _prepared_lot(row) if row else None


def spendable_lots(conn: Connection, a: Account, now: datetime, batch: int = 64) -> Iterator[Lot]:
    """Active, unexpired lots with points left, in consumption order, fetched in batches."""
    params = {**_key(a.program_id, a.profile_id, a.currency_iid), "k_now": now, "k_limit": batch, "k_offset": 0}
    while True:
        chunk = [_prepared_lot(r) for r in _SPENDABLE_LOTS.all(conn, params)]
        yield from chunk
        if len(chunk) < batch:
            return
        params["k_offset"] += batch


def lots_to_expire(conn: Connection, a: Account, now: datetime) -> list[Lot]:
    rows = conn.execute(select(lots).where(_lots_of(a), lots.c.remaining > 0, lots.c.expires_at <= now))
    return [_lot(r) for r in rows]


def lots_to_activate(conn: Connection, a: Account, now: datetime) -> list[Lot]:
    rows = conn.execute(
        select(lots).where(_lots_of(a), lots.c.remaining > 0, lots.c.is_active.is_(False),
                           lots.c.activates_at <= now)
    )
    return [_lot(r) for r in rows]


def lots_with_points(conn: Connection, a: Account) -> list[Lot]:
    return [_lot(r) for r in conn.execute(select(lots).where(_lots_of(a), lots.c.remaining > 0))]


def next_event(conn: Connection, a: Account) -> datetime | None:
    """The earliest future activation, expiration or temp deadline of the account."""
    open_lots = and_(_lots_of(a), lots.c.remaining > 0)
    candidates = [
        conn.execute(select(func.min(lots.c.expires_at)).where(open_lots)).scalar(),
        conn.execute(select(func.min(lots.c.activates_at)).where(open_lots, lots.c.is_active.is_(False))).scalar(),
        conn.execute(
            select(func.min(transactions.c.deadline_at)).where(
                transactions.c.program_id == a.program_id,
                transactions.c.profile_id == a.profile_id,
                transactions.c.currency_iid == a.currency_iid,
                transactions.c.status == "temp",
            )
        ).scalar(),
    ]
    from loyalty.storage.types import UtcMicros

    decode = UtcMicros().process_result_value
    present = [decode(c, None) if isinstance(c, int) else c for c in candidates if c is not None]
    return min(present) if present else None


# --- consumptions and postings -----------------------------------------------------------------------------

def insert_consumptions(conn: Connection, a: Account, txn_id: str, taken: list[tuple[str, int]]) -> None:
    _INSERT_CONSUMPTION.many(conn, [
        {"transaction_id": txn_id, "lot_id": lot_id, "program_id": a.program_id, "profile_id": a.profile_id,
         "amount": amount}
        for lot_id, amount in taken
    ])


def lots_taken_by(conn: Connection, txn_id: str) -> list[tuple[Lot, int]]:
    """Each lot a redemption took points from, with the amount taken (one statement)."""
    return [(_prepared_lot(row[:-1]), row[-1]) for row in _LOTS_TAKEN_BY.all(conn, {"k_id": txn_id})]


def insert_postings(conn: Connection, rows: list[dict[str, Any]]) -> None:
    _INSERT_POSTING.many(conn, rows)


def all_accounts(conn: Connection, program_id: int | None = None) -> list[Account]:
    stmt = select(accounts).order_by(accounts.c.program_id, accounts.c.profile_id, accounts.c.currency_iid)
    if program_id is not None:
        stmt = stmt.where(accounts.c.program_id == program_id)
    return [_account(r) for r in conn.execute(stmt)]


def history_page(conn: Connection, a_program: int, profile_id: str, currency_iid: int, after_id: str | None,
                 limit: int) -> list[Txn]:
    """One page of an account's history, oldest first, strictly after `after_id` (index-backed keyset)."""
    stmt = select(transactions).where(
        transactions.c.program_id == a_program,
        transactions.c.profile_id == profile_id,
        transactions.c.currency_iid == currency_iid,
    )
    if after_id is not None:
        stmt = stmt.where(transactions.c.id > after_id)
    stmt = stmt.order_by(transactions.c.id).limit(limit)
    return [_txn(r) for r in conn.execute(stmt)]


def expiring_sum(conn: Connection, a: Account, date_from: datetime, date_to: datetime) -> int:
    value = conn.execute(
        select(func.coalesce(func.sum(lots.c.remaining), 0)).where(
            _lots_of(a), lots.c.remaining > 0, lots.c.expires_at >= date_from, lots.c.expires_at <= date_to
        )
    ).scalar_one()
    return int(value)


# What an export writes of each transaction, in this order (instants as integer microseconds, UTC).
EXPORT_COLUMNS = ("id", "eid", "created_at", "type", "status", "amount", "balance_before", "balance_after",
                  "promo_iid", "promo_eid", "description", "activation_date", "expiration_date", "source_type",
                  "source_iid", "source_eid", "external_data", "profile_id")


def _export_statement(after_id: bool) -> Prepared:
    stmt = select(*(transactions.c[name] for name in EXPORT_COLUMNS)).where(
        transactions.c.program_id == bindparam("k_program"),
        transactions.c.currency_iid == bindparam("k_currency"),
        transactions.c.created_at >= bindparam("k_from", type_=UtcMicros),
        transactions.c.created_at <= bindparam("k_to", type_=UtcMicros),
    )
    if after_id:
        stmt = stmt.where(transactions.c.id > bindparam("k_after"))
    return Prepared(stmt.order_by(transactions.c.created_at, transactions.c.id))


_EXPORT = {False: _export_statement(False), True: _export_statement(True)}


def export_rows(conn: Connection, program_id: int, currency_iid: int, date_from: datetime, date_to: datetime,
                after_id: str | None, batch: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
    """Every transaction of a currency created in the inclusive period, as batches of plain tuples in
    EXPORT_COLUMNS order, streamed from one statement (one consistent snapshot), so memory does not grow with
    the row count. Plain tuples because exports write millions of rows: building a model object per row cost
    more than reading and writing it."""
    params = {"k_program": program_id, "k_currency": currency_iid, "k_from": date_from, "k_to": date_to,
              "k_after": after_id}
    yield from _EXPORT[after_id is not None].stream(conn, params, batch)


def export_count(conn: Connection, program_id: int, currency_iid: int, date_from: datetime, date_to: datetime,
                 after_id: str | None) -> int:
    stmt = select(func.count()).select_from(transactions).where(
        transactions.c.program_id == program_id,
        transactions.c.currency_iid == currency_iid,
        transactions.c.created_at >= date_from,
        transactions.c.created_at <= date_to,
    )
    if after_id is not None:
        stmt = stmt.where(transactions.c.id > after_id)
    return int(conn.execute(stmt).scalar_one())


# --- whole-store sums for `loyalty verify` (grouped queries: cost grows with the store, not per account) ------

_ACCOUNT_KEY = ("program_id", "profile_id", "currency_iid")


def _grouped(conn: Connection, table: Any, columns: list[Any], *where: Any) -> dict[tuple[int, str, int], tuple]:
    keys = [table.c[k] for k in _ACCOUNT_KEY]
    stmt = select(*keys, *columns).where(*where).group_by(*keys)
    return {(r[0], r[1], r[2]): tuple(int(v or 0) for v in r[3:]) for r in conn.execute(stmt)}


def all_lot_sums(conn: Connection, program_id: int | None) -> dict[tuple[int, str, int], tuple]:
    from sqlalchemy import case

    where = [lots.c.program_id == program_id] if program_id is not None else []
    return _grouped(conn, lots, [
        func.sum(case((lots.c.is_active.is_(True), lots.c.remaining), else_=0)),
        func.sum(case((lots.c.is_active.is_(False), lots.c.remaining), else_=0)),
        func.sum(lots.c.held),
        func.sum(case((or_(lots.c.remaining < 0, lots.c.remaining > lots.c.original, lots.c.held < 0), 1), else_=0)),
    ], *where)


def all_journal_sums(conn: Connection, program_id: int | None) -> dict[tuple[int, str, int], tuple]:
    where = [postings.c.program_id == program_id] if program_id is not None else []
    return _grouped(conn, postings, [func.sum(postings.c.d_active), func.sum(postings.c.d_pending),
                                     func.sum(postings.c.d_held), func.sum(postings.c.d_temp),
                                     func.sum(postings.c.d_debt)], *where)


def all_open_temp_sums(conn: Connection, program_id: int | None) -> dict[tuple[int, str, int], tuple]:
    from sqlalchemy import case

    where = [transactions.c.status == "temp"]
    if program_id is not None:
        where.append(transactions.c.program_id == program_id)
    debit = transactions.c.type.in_(("redemption", "order_redemption"))
    return _grouped(conn, transactions, [func.sum(case((debit, transactions.c.amount), else_=0)),
                                         func.sum(case((debit, 0), else_=transactions.c.amount))], *where)
