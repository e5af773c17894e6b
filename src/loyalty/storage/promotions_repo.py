"""SQL for trigger promotions: lookup, rules, use counts for limits, and the list endpoint's pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from loyalty.domain.promotions import Promotion, Rule
from loyalty.storage.tables import promotion_rules, promotions, transactions


def _promotion(conn: Connection, row: Any) -> Promotion:
    rules = conn.execute(select(promotion_rules).where(promotion_rules.c.promotion_id == row.id)
                         .order_by(promotion_rules.c.side, promotion_rules.c.currency_iid))
    return Promotion(
        row.id, row.program_id, row.external_id, row.name, row.description, row.start_date, row.end_date,
        bool(row.is_active), row.per_member, row.per_day,
        tuple(Rule(r.side, r.currency_iid, r.static_amount, r.min_amount, r.max_amount) for r in rules),
    )


def find(conn: Connection, program_id: int, ref: str) -> Promotion | None:
    """By numeric id or by external id, within the program."""
    cond = promotions.c.external_id == ref
    if ref.isdigit():
        by_id = conn.execute(select(promotions).where(promotions.c.program_id == program_id,
                                                      promotions.c.id == int(ref))).first()
        if by_id is not None:
            return _promotion(conn, by_id)
    row = conn.execute(select(promotions).where(promotions.c.program_id == program_id, cond)).first()
    return _promotion(conn, row) if row else None


def lock(conn: Connection, promotion_id: int) -> None:
    """Serialise uses of a promotion with limits (PostgreSQL; SQLite has one writer already)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(promotions.c.id).where(promotions.c.id == promotion_id).with_for_update())


def _live_uses(promotion_id: int) -> Any:
    return select(func.count()).select_from(transactions).where(
        transactions.c.promo_iid == promotion_id, transactions.c.status.in_(("temp", "committed")))


def uses_by_member(conn: Connection, promotion_id: int, program_id: int, profile_id: str) -> int:
    return int(conn.execute(_live_uses(promotion_id).where(
        transactions.c.program_id == program_id, transactions.c.profile_id == profile_id)).scalar_one())


def uses_between(conn: Connection, promotion_id: int, start: datetime, end: datetime) -> int:
    return int(conn.execute(_live_uses(promotion_id).where(
        transactions.c.recorded_at >= start, transactions.c.recorded_at < end)).scalar_one())


def page(conn: Connection, program_ids: list[int] | None, after_id: int, limit: int,
         is_active: bool | None) -> tuple[list[Promotion], int]:
    conds = []
    if program_ids is not None:
        conds.append(promotions.c.program_id.in_(program_ids))
    if is_active is not None:
        conds.append(promotions.c.is_active.is_(is_active))
    total = int(conn.execute(select(func.count()).select_from(promotions).where(*conds)).scalar_one())
    rows = conn.execute(select(promotions).where(promotions.c.id > after_id, *conds)
                        .order_by(promotions.c.id).limit(limit)).all()
    return [_promotion(conn, r) for r in rows], total
