"""Orders at checkout: market/orders/preorder (a quote, creates nothing) and preorder_commit (the real thing,
once per external order id, in one store transaction). The arithmetic lives in domain/orders.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Connection

from loyalty.domain import orders as calc
from loyalty.domain.dates import lifetime_expiry
from loyalty.domain.errors import InvalidParameter, MissingParameter
from loyalty.domain.model import Currency, Program, Txn
from loyalty.domain.points import format_amount, parse_amount
from loyalty.services.book import Book
from loyalty.services.commands import OrderData, PreorderCmd
from loyalty.services.ids import new_txn_id
from loyalty.services.json_values import dumps_ordered
from loyalty.services.ledger import Target, settled
from loyalty.services.lookup import (
    MatchQuery,
    active_member,
    currency_for,
    database_for_program,
    find_profile_id,
    program_for,
)
from loyalty.services.runtime import Runtime
from loyalty.services.tokens import Principal
from loyalty.storage import catalog_repo, ledger_repo, orders_repo


@dataclass(frozen=True)
class Order:
    program: Program
    currency: Currency  # the points currency (program default)
    profile_id: str
    money_exp: int
    lines: list[calc.Line]
    delivery: int
    redeem: int | str | None
    settings: calc.Settings


def _money(value: Any, exp: int, name: str) -> int:
    return parse_amount(value, exp, name, allow_zero=True)


def _parse_lines(data: OrderData, exp: int) -> tuple[list[calc.Line], int]:
    delivery = _money(data.delivery_cost, exp, "data.delivery_cost") if data.delivery_cost is not None else 0
    if not data.lines:
        whole = data.final_total_price if data.final_total_price is not None else data.total_price
        total = _money(whole, exp, "data.total_price")
        return [calc.Line(None, max(0, total - delivery))], delivery
    lines = []
    scale = Decimal(10) ** exp
    for i, line in enumerate(data.lines):
        at = f"data.lines[{i}]"
        price_raw = line.final_price_per_item if line.final_price_per_item is not None else line.base_price_per_item
        price = _money(price_raw, exp, f"{at}.price_per_item")
        _money(line.base_price_per_item, exp, f"{at}.base_price_per_item")
        try:
            count = Decimal(str(line.count).strip())
        except InvalidOperation:
            raise InvalidParameter(f"{at}.count", "must be a positive number") from None
        if not count.is_finite() or count <= 0:
            raise InvalidParameter(f"{at}.count", "must be a positive number")
        cost = int((count * Decimal(price) / scale * scale).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        lines.append(calc.Line(line.external_id or line.sku, cost))
    return lines, delivery


def _prepare(rt: Runtime, principal: Principal, cmd: PreorderCmd, for_write: bool) -> Order:
    exp = calc.money_exponent(cmd.data.currency)
    lines, delivery = _parse_lines(cmd.data, exp)

    def read(conn: Connection) -> tuple[Program, Currency, str]:
        program = _program(conn, principal, cmd.loyalty_program_id, for_write)
        currency = currency_for(conn, program, None, None)
        database = database_for_program(conn, program)
        profile_id = find_profile_id(conn, database, MatchQuery.from_params(cmd.lookup(), implicit=True))
        active_member(conn, program.id, profile_id)
        return program, currency, profile_id

    program, currency, profile_id = rt.store.read(read)
    redeem: int | str | None = None
    raw = cmd.data.redeem_points
    if isinstance(raw, str) and raw.strip().lower() == "max":
        redeem = "max"
    elif raw is not None and raw != "":
        redeem = parse_amount(raw, currency.precision, "data.redeem_points", allow_zero=True)
    settings = calc.Settings(program.earn_rate, program.point_value, program.max_redeem_share)
    return Order(program, currency, profile_id, exp, lines, delivery, redeem, settings)


def _program(conn: Connection, principal: Principal, program_id: int | None, for_write: bool) -> Program:
    if program_id is not None:
        return program_for(conn, principal, program_id, for_write)
    candidates = [p for p in catalog_repo.list_programs(conn)
                  if p.status == "active" and principal.may_program(p.id)]
    if len(candidates) != 1:
        raise MissingParameter("loyalty_program_id")
    return candidates[0]


def _render(order: Order, q: calc.Quote, balance: int) -> dict[str, Any]:
    p, m = order.currency.precision, order.money_exp
    return {
        "points_to_accrue": format_amount(q.points_to_accrue, p),
        "points_to_redeem": format_amount(q.points_to_redeem, p),
        "max_points_to_redeem": format_amount(q.max_points_to_redeem, p),
        "discount": format_amount(q.discount, m),
        "final_total_price": format_amount(q.final_total, m),
        "lines": [{"external_id": r.external_id, "points_to_accrue": format_amount(r.points_to_accrue, p),
                   "discount": format_amount(r.discount, m),
                   "final_price": format_amount(r.cost - r.discount, m)} for r in q.lines],
        "balance": format_amount(balance, p),
    }


def preorder(rt: Runtime, principal: Principal, cmd: PreorderCmd) -> dict[str, Any]:
    principal.require("loyalty:read")
    order = _prepare(rt, principal, cmd, for_write=False)
    account = rt.store.read(lambda conn: ledger_repo.read_account(conn, order.program.id, order.profile_id,
                                                                  order.currency.iid))
    account = settled(rt, Target(order.program, order.currency, order.profile_id), account)
    active = account.active if account is not None else 0
    q = calc.quote(order.lines, order.delivery, order.settings, order.money_exp, order.currency.precision,
                   active, order.redeem)
    return _render(order, q, active)


def preorder_commit(rt: Runtime, principal: Principal, cmd: PreorderCmd) -> dict[str, Any]:
    principal.require("loyalty:write")
    order = _prepare(rt, principal, cmd, for_write=True)

    def work(conn: Connection) -> dict[str, Any]:
        book = Book.open(conn, order.program.id, order.profile_id, order.currency, rt.clock.now())
        first = orders_repo.result_of(conn, order.program.id, cmd.external_id)
        if first is not None:
            return json.loads(first)
        active_member(conn, order.program.id, order.profile_id)
        book.settle()
        q = calc.quote(order.lines, order.delivery, order.settings, order.money_exp, order.currency.precision,
                       book.a.active, order.redeem)
        window = order.program.return_window_days
        redemption_id = _move(book, cmd, "order_redemption", q.points_to_redeem, window) if q.points_to_redeem \
            else None
        accrual_id = _move(book, cmd, "order_accrual", q.points_to_accrue, window) if q.points_to_accrue else None
        order_id = orders_repo.insert(
            conn, program_id=order.program.id, profile_id=order.profile_id, external_id=cmd.external_id,
            status=cmd.data.status, currency=cmd.data.currency, total=q.final_total,
            points_accrued=q.points_to_accrue, points_redeemed=q.points_to_redeem, accrual_txn_id=accrual_id,
            redemption_txn_id=redemption_id, created_at=book.now)
        book.finish()
        result = {**_render(order, q, book.a.active), "order_id": order_id,
                  "accrual_transaction_id": accrual_id, "redemption_transaction_id": redemption_id}
        orders_repo.set_result(conn, order_id, dumps_ordered(result))
        return result

    return rt.store.write(work, (order.program.id, order.profile_id))  # the member whose account it locks


def _move(book: Book, cmd: PreorderCmd, kind: str, amount: int, return_window_days: int) -> str:
    a = book.a
    txn = Txn(id=new_txn_id(), program_id=a.program_id, profile_id=a.profile_id, currency_iid=a.currency_iid,
              eid=None, type=kind, status="committed", amount=amount, balance_before=a.active,
              balance_after=a.active, created_at=book.now, recorded_at=book.now, source_type="order",
              source_eid=cmd.external_id, description=f"Order {cmd.external_id}")
    if kind == "order_redemption":
        book.take(txn.id, amount, hold=False)
    else:
        activation = book.now + timedelta(days=return_window_days)
        c = book.currency
        expiry = lifetime_expiry(c.lifetime_kind, c.lifetime_n, activation)
        book.add_lot(txn.id, amount, activation, expiry)
        txn.activation_date, txn.expiration_date = activation, expiry
    txn.balance_after = a.active
    book.record(txn)
    return txn.id
