"""Ledger use cases: accrue, redeem, commit, rollback, cancel, balance (altcraft-api.md §5.3–5.8).

Each write is split in two: `_prepare_*` resolves and validates everything that needs no lock (program,
currency, profile, amount, dates) and the returned closure does the store writes of one operation on one
locked member. Today the closure runs in its own store transaction through `Store.write`; the split is what
lets many operations share one transaction later (group commit).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from loyalty.domain.dates import lifetime_expiry, parse_datetime
from loyalty.domain.errors import (
    AmbiguousMatch,
    DuplicateTransactionEid,
    Forbidden,
    InsufficientPoints,
    InvalidParameter,
    LoyaltyError,
    MissingParameter,
    TransactionNotFound,
)
from loyalty.domain.ledger_rules import check_cancel, check_commit, check_rollback
from loyalty.domain.model import Account, Currency, Program, Txn
from loyalty.domain.points import format_amount, parse_amount
from loyalty.domain.promotions import Promotion, amount_under_rule
from loyalty.services import promotions
from loyalty.services.book import Book
from loyalty.services.commands import AccrueCmd, BalanceCmd, MoveCmd, RedeemCmd, TxnRefCmd
from loyalty.services.ids import new_txn_id
from loyalty.services.json_values import dumps_canonical
from loyalty.services.lookup import (
    MatchQuery,
    currency_for,
    database_for_program,
    find_profile_id,
    program_for,
    require_active,
)
from loyalty.services.runtime import Runtime
from loyalty.services.tokens import Principal
from loyalty.storage import catalog_repo, ledger_repo

MAX_TEMP_TIMEOUT = 604_800


@dataclass(frozen=True)
class TxnResult:
    transaction_id: str
    balance: str


@dataclass(frozen=True)
class Target:
    """A resolved member-scoped request: whose account, in which currency."""

    program: Program
    currency: Currency
    profile_id: str


def resolve(conn: Connection, principal: Principal, params: Any, for_write: bool,
            currency_required: bool = False) -> Target:
    program = program_for(conn, principal, params.loyalty_program_id, for_write)
    currency = currency_for(conn, program, params.points_currency_iid, params.points_currency_eid,
                            currency_required)
    database = database_for_program(conn, program)
    profile_id = find_profile_id(conn, database, MatchQuery.from_params(params.lookup()))
    return Target(program, currency, profile_id)


# --- accrue / redeem ----------------------------------------------------------------------------------------

def accrue(rt: Runtime, principal: Principal, cmd: AccrueCmd) -> TxnResult:
    principal.require("loyalty:write")
    work, key = _prepare_move(rt, principal, cmd, "accrual")
    return rt.store.write(work, key)


def redeem(rt: Runtime, principal: Principal, cmd: RedeemCmd) -> TxnResult:
    principal.require("loyalty:write")
    work, key = _prepare_move(rt, principal, cmd, "redemption")
    return rt.store.write(work, key)


def _prepare_move(rt: Runtime, principal: Principal, cmd: MoveCmd, kind: str) -> tuple[Any, tuple[int, str]]:
    """Validate a movement without locks; return its unit of work and the member it locks."""
    now = rt.clock.now()
    target = rt.store.read(lambda conn: resolve(conn, principal, cmd, for_write=True))
    currency = target.currency
    requested = parse_amount(cmd.amount, currency.precision) if cmd.amount is not None else None
    created_at = parse_datetime(cmd.created_at, "created_at") if cmd.created_at else now
    activation = expiration = None
    if isinstance(cmd, AccrueCmd):
        activation = parse_datetime(cmd.activation_date, "activation_date") if cmd.activation_date else None
        expiration = parse_datetime(cmd.expiration_date, "expiration_date") if cmd.expiration_date else None
    timeout = None
    if cmd.is_temp:
        timeout = cmd.temp_timeout_sec if cmd.temp_timeout_sec is not None else rt.settings.default_temp_timeout_sec
    external = dumps_canonical(cmd.external_data) if cmd.external_data is not None else None
    payload_hash = _payload_hash(kind, target, requested, cmd, timeout, activation, expiration, external)
    key = (target.program.id, target.profile_id)
    try:
        amount, promo = _checked_amount(rt, cmd, kind, target, requested, now)
        if expiration is not None and expiration <= max(activation or now, now):
            raise InvalidParameter("expiration_date", "must be after the activation date and in the future")
        if timeout is not None and not 1 <= timeout <= MAX_TEMP_TIMEOUT:
            raise InvalidParameter("temp_timeout_sec", f"must be between 1 and {MAX_TEMP_TIMEOUT}")
    except LoyaltyError:
        # A retry gets the first result even when these checks (dates, promotion dates) would now fail. When
        # they pass, the write itself finds the first attempt under the account lock, so the common case reads
        # nothing more here.
        if cmd.transaction_eid:
            eid = cmd.transaction_eid
            first = rt.store.read(lambda conn: ledger_repo.txn_by_eid(conn, target.program.id, eid))
            if first is not None:
                return (lambda conn: _replay(first, payload_hash, currency)), key
        raise

    def work(conn: Connection) -> TxnResult:
        account, first, member = ledger_repo.lock_for_move(conn, target.program.id, target.profile_id,
                                                           currency.iid, cmd.transaction_eid)
        if first is not None:  # a retry: the first result, even if the member has left since
            return _replay(first, payload_hash, currency)
        # Read under the account lock, so a concurrent delete_member cannot slip in between.
        require_active(member, target.program.id, target.profile_id)
        book = Book(conn, account, currency, rt.clock.now())
        book.settle()
        if promo is not None:
            promotions.check_limits(conn, promo, target.program.id, target.profile_id, book.now)
        txn = Txn(
            id=new_txn_id(), program_id=target.program.id, profile_id=target.profile_id, currency_iid=currency.iid,
            eid=cmd.transaction_eid, type=kind, status="temp" if cmd.is_temp else "committed", amount=amount,
            balance_before=book.a.active, balance_after=book.a.active, created_at=created_at,
            recorded_at=book.now, description=cmd.description, activation_date=activation,
            expiration_date=expiration, external_data=external, payload_hash=payload_hash,
            deadline_at=book.now + timedelta(seconds=timeout) if timeout else None,
        )
        if promo is not None:
            txn.promo_iid = txn.source_iid = promo.id
            txn.promo_eid = txn.source_eid = promo.external_id
            txn.source_type = "promotion"
        if kind == "accrual":
            _apply_accrual(book, txn)
        else:
            _apply_redemption(book, txn)
        txn.balance_after = book.a.active
        book.record(txn)
        book.finish()
        return TxnResult(txn.id, format_amount(book.a.active, currency.precision))

    return work, key


def _checked_amount(rt: Runtime, cmd: MoveCmd, kind: str, target: Target, requested: int | None,
                    now: datetime) -> tuple[int, Promotion | None]:
    """The amount to move (the promotion's rule applied), once the currency and promotion allow the move."""
    currency = target.currency
    if kind == "redemption" and not currency.spendable:
        raise InvalidParameter("points_currency", f"{currency.eid} is a qualification currency and cannot be spent")
    if not cmd.promotion_id:
        if requested is None:
            raise MissingParameter("amount")
        return requested, None
    ref = cmd.promotion_id
    promo = rt.store.read(lambda conn: promotions.resolve(conn, target.program.id, ref))
    promo.check_running(now)
    side = "accrual" if kind == "accrual" else "redeem"
    rule = promo.rule(side, currency.iid)
    if rule is None:
        raise InvalidParameter("promotion_id", f"promotion {promo.id} has no {side} rule for {currency.eid}")
    return amount_under_rule(rule, requested, currency.precision), promo


def _apply_accrual(book: Book, txn: Txn) -> None:
    if txn.status == "temp":
        book._post(txn.id, "temp_accrual", temp=txn.amount)
        book._event_at(txn.deadline_at)
        return
    _credit(book, txn)


def _credit(book: Book, txn: Txn) -> None:
    """Turn a committed credit into its lot, with the request's dates or the currency's lifetime; the
    transaction records the effective dates so history shows when its points activate and expire."""
    activation = txn.activation_date or book.now
    c = book.currency
    expiry = txn.expiration_date or lifetime_expiry(c.lifetime_kind, c.lifetime_n, max(activation, book.now))
    book.add_lot(txn.id, txn.amount, activation, expiry)
    txn.activation_date, txn.expiration_date = activation, expiry


def _apply_redemption(book: Book, txn: Txn) -> None:
    if book.a.active < txn.amount:
        p = book.currency.precision
        raise InsufficientPoints(
            f"Insufficient points: requested {format_amount(txn.amount, p)}, "
            f"active balance {format_amount(book.a.active, p)}"
        )
    book.take(txn.id, txn.amount, hold=txn.status == "temp")
    if txn.status == "temp":
        book._event_at(txn.deadline_at)


def _payload_hash(kind: str, target: Target, amount: int | None, cmd: MoveCmd, timeout: int | None,
                  activation: datetime | None, expiration: datetime | None, external: str | None) -> str:
    """What makes two requests with one transaction_eid "the same": every field that changes the effect."""
    parts = [kind, target.profile_id, target.currency.iid, amount, cmd.promotion_id, cmd.is_temp, timeout,
             activation.isoformat() if activation else None, expiration.isoformat() if expiration else None,
             external, cmd.created_at and parse_datetime(cmd.created_at, "created_at").isoformat()]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def _replay(first: Txn, payload_hash: str, currency: Currency) -> TxnResult:
    if first.payload_hash != payload_hash:
        raise DuplicateTransactionEid(
            f"transaction_eid {first.eid!r} was already used in this program by a different request"
        )
    return TxnResult(first.id, format_amount(first.balance_after, currency.precision))


# --- commit / rollback / cancel -----------------------------------------------------------------------------

def commit(rt: Runtime, principal: Principal, cmd: TxnRefCmd) -> TxnResult:
    return _resolve_txn(rt, principal, cmd, _do_commit)


def rollback(rt: Runtime, principal: Principal, cmd: TxnRefCmd) -> TxnResult:
    return _resolve_txn(rt, principal, cmd, _do_rollback)


def cancel(rt: Runtime, principal: Principal, cmd: TxnRefCmd) -> TxnResult:
    return _resolve_txn(rt, principal, cmd, _do_cancel)


def _do_commit(book: Book, txn: Txn) -> None:
    if not check_commit(txn):
        return
    if txn.type in ("redemption", "order_redemption"):
        book.commit_hold(txn)
    else:
        book._post(txn.id, "commit", temp=-txn.amount)
        _credit(book, txn)
    ledger_repo.update_txn(book.conn, txn.id, status="committed", resolved_at=book.now,
                           activation_date=txn.activation_date, expiration_date=txn.expiration_date)


def _do_rollback(book: Book, txn: Txn) -> None:
    if check_rollback(txn):
        book.release_temp(txn, status="rolled_back", at=book.now)


def _do_cancel(book: Book, txn: Txn) -> None:
    if not check_cancel(txn):
        return
    if txn.status == "temp":
        book.release_temp(txn, status="cancelled", at=book.now)
        return
    if txn.is_credit:
        lot = ledger_repo.get_lot(book.conn, txn.id)
        assert lot is not None, "a committed credit always has its lot"
        book.claw_back(txn.id, lot)
    else:
        book.return_points(txn.id, was_hold=False)
    ledger_repo.update_txn(book.conn, txn.id, status="cancelled", resolved_at=book.now)


def _resolve_txn(rt: Runtime, principal: Principal, cmd: TxnRefCmd, action: Any) -> TxnResult:
    principal.require("loyalty:write")
    if not cmd.transaction_id and not cmd.transaction_eid:
        raise MissingParameter("transaction_id or transaction_eid")

    def find(conn: Connection) -> tuple[Txn, Currency]:
        txn = _find_txn(conn, principal, cmd)
        program = program_for(conn, principal, txn.program_id, for_write=False)
        currency = next(c for c in catalog_repo.snapshot(conn).all_currencies[program.id] if c.iid == txn.currency_iid)
        return txn, currency

    txn, currency = rt.store.read(find)

    def work(conn: Connection) -> TxnResult:
        account, current, member = ledger_repo.lock_for_txn(conn, txn.program_id, txn.profile_id, currency.iid,
                                                            txn.id)
        book = Book(conn, account, currency, rt.clock.now())
        if book.settle():  # a deadline that passed turns the transaction rolled_back before we look at it
            current = ledger_repo.get_txn(conn, txn.id)
        assert current is not None
        if action is _do_cancel and current.status != "cancelled":
            # A removed member's accounts were zeroed; cancelling into them would invent debt.
            require_active(member, txn.program_id, txn.profile_id)
        action(book, current)
        book.finish()
        return TxnResult(current.id, format_amount(book.a.active, currency.precision))

    return rt.store.write(work, (txn.program_id, txn.profile_id))


def _find_txn(conn: Connection, principal: Principal, cmd: TxnRefCmd) -> Txn:
    if cmd.transaction_id:
        txn = ledger_repo.get_txn(conn, cmd.transaction_id)
        if txn is None or (cmd.transaction_eid and txn.eid != cmd.transaction_eid):
            raise TransactionNotFound(f"Transaction {cmd.transaction_id} not found")
        if cmd.loyalty_program_id is not None and txn.program_id != cmd.loyalty_program_id:
            raise TransactionNotFound(f"Transaction {cmd.transaction_id} not found in that program")
    else:
        assert cmd.transaction_eid
        programs = [cmd.loyalty_program_id] if cmd.loyalty_program_id is not None else sorted(
            principal.programs if principal.programs is not None else catalog_repo.snapshot(conn).programs)
        found = ledger_repo.txns_by_eid(conn, cmd.transaction_eid, programs)
        if not found:
            raise TransactionNotFound(f"Transaction with eid {cmd.transaction_eid!r} not found")
        if len(found) > 1:
            raise AmbiguousMatch("transaction_eid is used in several programs; send loyalty_program_id")
        txn = found[0]
    if not principal.may_program(txn.program_id):
        raise Forbidden(f"This token may not use program {txn.program_id}")
    return txn


# --- balance --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Balances:
    total: str
    active: str
    pending: str
    held: str
    temp_accrued: str


def balance(rt: Runtime, principal: Principal, cmd: BalanceCmd) -> Balances:
    principal.require("loyalty:read")

    target, account = rt.store.read(lambda conn: member_account(conn, principal, cmd))
    account = settled(rt, target, account)
    p = target.currency.precision
    if account is None:
        zero = format_amount(0, p)
        return Balances(zero, zero, zero, zero, zero)
    return Balances(
        format_amount(account.total, p), format_amount(account.active, p), format_amount(account.pending, p),
        format_amount(account.held, p), format_amount(account.temp_accrued, p),
    )


def member_account(conn: Connection, principal: Principal, params: Any,
                   currency_required: bool = False) -> tuple[Target, Account | None]:
    """What a read of a member's account resolves to, and the account as stored (None: never used); refused
    unless the profile is an active member. One round trip after the profile lookup."""
    target = resolve(conn, principal, params, for_write=False, currency_required=currency_required)
    member, account = ledger_repo.read_member_account(conn, target.program.id, target.profile_id,
                                                      target.currency.iid)
    require_active(member, target.program.id, target.profile_id)
    return target, account


def settled(rt: Runtime, target: Target, account: Account | None) -> Account | None:
    """The account as of now: when a time-dependent event is due, settle it (a write) before answering."""
    if account is None or account.next_event_at is None or account.next_event_at > rt.clock.now():
        return account
    return rt.store.write(lambda conn: settle_account(conn, target.program.id, target.profile_id, target.currency,
                                                     rt.clock.now()), (target.program.id, target.profile_id))


def settle_account(conn: Connection, program_id: int, profile_id: str, currency: Currency, now: datetime) -> Any:
    book = Book.open(conn, program_id, profile_id, currency, now)
    book.settle()
    book.finish()
    return book.a
