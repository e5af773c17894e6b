"""SQL for tier groups and the tiers members have reached."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select

from loyalty.domain.model import CREDIT_TYPES
from loyalty.domain.tiers import Tier, TierGroup
from loyalty.storage.tables import accounts, member_tiers, tier_groups, tiers, transactions


def _groups(conn: Connection, *where: Any) -> list[TierGroup]:
    rows = conn.execute(select(tier_groups).where(tier_groups.c.status == "active", *where)
                        .order_by(tier_groups.c.id)).all()
    out = []
    for g in rows:
        ladder = conn.execute(
            select(tiers).where(tiers.c.group_id == g.id, tiers.c.status == "active").order_by(tiers.c.threshold)
        ).all()
        out.append(TierGroup(
            g.id, g.program_id, g.external_id, g.name, g.type, g.window_days, g.currency_iid,
            tuple(Tier(t.id, t.eid, t.name, t.threshold, i) for i, t in enumerate(ladder)),
        ))
    return out


def program_groups(conn: Connection, program_id: int) -> list[TierGroup]:
    return _groups(conn, tier_groups.c.program_id == program_id)


def get_group(conn: Connection, group_id: int) -> TierGroup | None:
    found = _groups(conn, tier_groups.c.id == group_id)
    return found[0] if found else None


def period_groups(conn: Connection) -> list[TierGroup]:
    return _groups(conn, tier_groups.c.type == "period")


def earned(conn: Connection, program_id: int, profile_id: str, currency_iid: int) -> int:
    value = conn.execute(select(accounts.c.earned).where(
        accounts.c.program_id == program_id, accounts.c.profile_id == profile_id,
        accounts.c.currency_iid == currency_iid)).scalar()
    return int(value or 0)


def earned_since(conn: Connection, program_id: int, profile_id: str, currency_iid: int, since: datetime) -> int:
    """Committed credits in the currency created after `since` (cancelled ones no longer count)."""
    value = conn.execute(
        select(func.coalesce(func.sum(transactions.c.amount), 0)).where(
            transactions.c.program_id == program_id,
            transactions.c.profile_id == profile_id,
            transactions.c.currency_iid == currency_iid,
            transactions.c.status == "committed",
            transactions.c.type.in_(sorted(CREDIT_TYPES)),
            transactions.c.created_at > since,
        )
    ).scalar_one()
    return int(value)


def reached_rows(conn: Connection, program_id: int, profile_id: str, group_id: int) -> dict[int, datetime]:
    rows = conn.execute(select(member_tiers.c.tier_id, member_tiers.c.reached_at).where(
        member_tiers.c.program_id == program_id, member_tiers.c.profile_id == profile_id,
        member_tiers.c.group_id == group_id))
    return {r.tier_id: r.reached_at for r in rows}


def add_reached(conn: Connection, program_id: int, profile_id: str, group_id: int, tier_ids: list[int],
                at: datetime) -> None:
    if tier_ids:
        conn.execute(insert(member_tiers), [
            {"program_id": program_id, "profile_id": profile_id, "group_id": group_id, "tier_id": t,
             "reached_at": at} for t in tier_ids])


def drop_reached(conn: Connection, program_id: int, profile_id: str, group_id: int, tier_ids: list[int]) -> None:
    if tier_ids:
        conn.execute(delete(member_tiers).where(and_(
            member_tiers.c.program_id == program_id, member_tiers.c.profile_id == profile_id,
            member_tiers.c.group_id == group_id, member_tiers.c.tier_id.in_(tier_ids))))


def members_holding(conn: Connection, group_id: int, after: tuple[int, str] | None, limit: int) -> list[tuple[int, str]]:
    """Distinct (program_id, profile_id) holding a tier in the group, in key order, for batched re-evaluation."""
    stmt = (select(member_tiers.c.program_id, member_tiers.c.profile_id).distinct()
            .where(member_tiers.c.group_id == group_id)
            .order_by(member_tiers.c.program_id, member_tiers.c.profile_id).limit(limit))
    if after is not None:
        stmt = stmt.where(member_tiers.c.profile_id > after[1])
    return [(r.program_id, r.profile_id) for r in conn.execute(stmt)]
