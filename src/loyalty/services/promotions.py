"""Trigger promotions: applying one to an accrual or redemption, and listing them (altcraft-api.md §5.13).

Limits: `per_member` counts the member's live uses (temp or committed) ever; `per_day` counts the program-wide
live uses in the current UTC day. Both are counted under a lock on the promotion, after the member's account
lock, so concurrent requests cannot both take the last use.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from loyalty.domain.dates import format_datetime
from loyalty.domain.errors import InvalidParameter, PromotionLimitReached, PromotionNotFound
from loyalty.domain.points import format_amount
from loyalty.domain.promotions import Promotion
from loyalty.services.commands import PromotionsCmd
from loyalty.services.lookup import program_for
from loyalty.services.runtime import Runtime
from loyalty.services.tokens import Principal
from loyalty.storage import catalog_repo, promotions_repo


def resolve(conn: Connection, program_id: int, ref: str) -> Promotion:
    promo = promotions_repo.find(conn, program_id, ref.strip())
    if promo is None:
        raise PromotionNotFound(f"Promotion {ref!r} not found in program {program_id}")
    return promo


def check_limits(conn: Connection, promo: Promotion, program_id: int, profile_id: str, now: datetime) -> None:
    if not promo.has_limits:
        return
    promotions_repo.lock(conn, promo.id)
    if promo.per_member is not None and \
            promotions_repo.uses_by_member(conn, promo.id, program_id, profile_id) >= promo.per_member:
        raise PromotionLimitReached(f"Promotion {promo.id} may be used {promo.per_member} time(s) per member")
    if promo.per_day is not None:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if promotions_repo.uses_between(conn, promo.id, start, start + timedelta(days=1)) >= promo.per_day:
            raise PromotionLimitReached(f"Promotion {promo.id} reached its limit of {promo.per_day} uses today")


def list_promotions(rt: Runtime, principal: Principal, cmd: PromotionsCmd) -> dict[str, Any]:
    principal.require("loyalty:read")
    if not 1 <= cmd.limit <= 100:
        raise InvalidParameter("limit", "must be between 1 and 100")
    if cmd.from_id < 0:
        raise InvalidParameter("from_id", "must not be negative")

    def read(conn: Connection) -> dict[str, Any]:
        if cmd.loyalty_program_id is not None:
            program_for(conn, principal, cmd.loyalty_program_id, for_write=False)
            program_ids: list[int] | None = [cmd.loyalty_program_id]
        else:
            program_ids = sorted(principal.programs) if principal.programs is not None else None
        items, total = promotions_repo.page(conn, program_ids, cmd.from_id, cmd.limit + 1, cmd.is_active)
        more = len(items) > cmd.limit
        items = items[: cmd.limit]
        currencies: dict[tuple[int, int], Any] = {}
        for promo in items:
            for c in catalog_repo.all_currencies(conn, promo.program_id):
                currencies[(promo.program_id, c.iid)] = c
        return {"data": [_render(p, currencies) for p in items],
                "next_from_id": items[-1].id if more else None, "total_count": total}

    return rt.store.read(read)


def _render(p: Promotion, currencies: dict[tuple[int, int], Any]) -> dict[str, Any]:
    def rules(side: str) -> list[dict[str, Any]]:
        out = []
        for r in p.rules:
            if r.side != side:
                continue
            c = currencies.get((p.program_id, r.currency_iid))
            prec = c.precision if c else 0

            def amt(v: int | None) -> str | None:
                return None if v is None else format_amount(v, prec)  # noqa: B023

            out.append({"points_currency_iid": r.currency_iid, "points_currency_eid": c.eid if c else None,
                        "static_amount": amt(r.static_amount), "min_amount": amt(r.min_amount),
                        "max_amount": amt(r.max_amount)})
        return out

    return {"id": p.id, "name": p.name, "description": p.description, "external_id": p.external_id,
            "start_date": format_datetime(p.start_date), "end_date": format_datetime(p.end_date),
            "is_active": p.is_active, "accrual_rules": rules("accrual"), "redeem_rules": rules("redeem")}
