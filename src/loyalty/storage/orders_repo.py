"""SQL for orders (one row per program and external order id)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select

from loyalty.storage.tables import orders


def result_of(conn: Connection, program_id: int, external_id: str) -> str | None:
    return conn.execute(select(orders.c.result).where(orders.c.program_id == program_id,
                                                      orders.c.external_id == external_id)).scalar()


def insert(conn: Connection, *, program_id: int, profile_id: str, external_id: str, status: str | None,
           currency: str, total: int, points_accrued: int, points_redeemed: int, accrual_txn_id: str | None,
           redemption_txn_id: str | None, created_at: datetime) -> int:
    result = conn.execute(orders.insert().values(
        program_id=program_id, profile_id=profile_id, external_id=external_id, status=status, currency=currency,
        total=total, points_accrued=points_accrued, points_redeemed=points_redeemed, accrual_txn_id=accrual_txn_id,
        redemption_txn_id=redemption_txn_id, result="{}", created_at=created_at,
    ).returning(orders.c.id))
    return int(result.scalar_one())


def set_result(conn: Connection, order_id: int, result: str) -> None:
    conn.execute(orders.update().where(orders.c.id == order_id).values(result=result))
