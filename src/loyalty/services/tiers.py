"""Tiers: membership in tier groups follows qualification points (engine.md §1, altcraft-api.md §5.12).

`cumulative` groups read all qualification points ever earned (the account's `earned` counter, lowered by a
cancelled accrual); `period` groups read what was earned in a rolling window. Writes that change earned points
re-evaluate the member in the same store transaction; reads recompute the window at the moment of reading and
fix the stored tiers when the window has moved, and a daily job does the same for everyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from loyalty.domain.dates import format_datetime
from loyalty.domain.errors import TierGroupNotFound
from loyalty.domain.points import format_amount
from loyalty.domain.tiers import Tier, TierGroup, points_to_next, reached
from loyalty.services.commands import TiersCmd
from loyalty.services.lookup import (
    MatchQuery,
    active_member,
    database_for_program,
    find_profile_id,
    program_for,
)
from loyalty.services.runtime import Runtime
from loyalty.services.tokens import Principal
from loyalty.storage import catalog_repo, tiers_repo


def qualification_total(conn: Connection, group: TierGroup, program_id: int, profile_id: str, now: datetime,
                        earned: int | None = None) -> int:
    since = group.window_start(now)
    if since is not None:
        return tiers_repo.earned_since(conn, program_id, profile_id, group.currency_iid, since)
    if earned is not None:
        return earned
    return tiers_repo.earned(conn, program_id, profile_id, group.currency_iid)


def _sync(conn: Connection, group: TierGroup, program_id: int, profile_id: str, target: list[Tier],
          now: datetime) -> bool:
    stored = tiers_repo.reached_rows(conn, program_id, profile_id, group.id)
    wanted = {t.id for t in target}
    gained = [t.id for t in target if t.id not in stored]
    lost = [tid for tid in stored if tid not in wanted]
    tiers_repo.drop_reached(conn, program_id, profile_id, group.id, lost)
    tiers_repo.add_reached(conn, program_id, profile_id, group.id, gained, now)
    return bool(gained or lost)


def evaluate_member(conn: Connection, program_id: int, profile_id: str, now: datetime,
                    currency_iid: int | None = None, earned: int | None = None) -> None:
    """Bring the member's reached tiers in line with their qualification points (all groups, or those that
    read `currency_iid`)."""
    for group in tiers_repo.program_groups(conn, program_id):
        if currency_iid is not None and group.currency_iid != currency_iid:
            continue
        total = qualification_total(conn, group, program_id, profile_id, now, earned)
        _sync(conn, group, program_id, profile_id, reached(group, total), now)


@dataclass(frozen=True)
class TierView:
    group: TierGroup
    reached: list[tuple[Tier, datetime]]
    points_to_next: str | None


def account_tiers(rt: Runtime, principal: Principal, cmd: TiersCmd) -> TierView:
    principal.require("loyalty:read")
    now = rt.clock.now()

    def read(conn: Connection) -> tuple[Any, ...]:
        program = program_for(conn, principal, cmd.loyalty_program_id, for_write=False)
        group = tiers_repo.get_group(conn, cmd.tiers_group_id)
        if group is None or group.program_id != program.id:
            raise TierGroupNotFound(f"Tier group {cmd.tiers_group_id} not found in program {program.id}")
        profile_id = find_profile_id(conn, database_for_program(conn, program), MatchQuery.from_params(cmd.lookup()))
        active_member(conn, program.id, profile_id)
        total = qualification_total(conn, group, program.id, profile_id, now)
        stored = tiers_repo.reached_rows(conn, program.id, profile_id, group.id)
        precision = next((c.precision for c in catalog_repo.program_currencies(conn, program.id)
                          if c.iid == group.currency_iid), 0)
        return program, group, profile_id, total, stored, precision

    program, group, profile_id, total, stored, precision = rt.store.read(read)
    target = reached(group, total)
    if {t.id for t in target} != set(stored):
        def fix(conn: Connection) -> dict[int, datetime]:
            # Recomputed under the member's writer: an accrual committed since the read may have moved it.
            fresh = reached(group, qualification_total(conn, group, program.id, profile_id, now))
            _sync(conn, group, program.id, profile_id, fresh, now)
            return tiers_repo.reached_rows(conn, program.id, profile_id, group.id)

        stored = rt.store.write(fix, (program.id, profile_id))
        target = [t for t in group.tiers if t.id in stored]
    to_next = points_to_next(group, total)
    return TierView(group, [(t, stored[t.id]) for t in target],
                    format_amount(to_next, precision) if to_next is not None else None)


def render(view: TierView) -> dict[str, Any]:
    return {
        "data": [
            {"tiers_group_type": view.group.type, "tier_eid": t.eid, "tier_id": t.id, "tier_order": t.order,
             "reached_at": format_datetime(at)}
            for t, at in view.reached
        ],
        "points_to_next_tier": view.points_to_next,
    }


def reevaluate_period_groups(rt: Runtime, batch: int = 500) -> int:
    """Daily job: drop members of `period` groups to the tier their window supports. Returns members changed."""
    changed = 0
    groups = rt.store.read(tiers_repo.period_groups)
    for group in groups:
        after: tuple[int, str] | None = None
        while True:
            holders = rt.store.read(lambda conn: tiers_repo.members_holding(conn, group.id, after, batch))  # noqa: B023
            for program_id, profile_id in holders:
                def work(conn: Connection) -> bool:
                    now = rt.clock.now()
                    total = qualification_total(conn, group, program_id, profile_id, now)  # noqa: B023
                    return _sync(conn, group, program_id, profile_id, reached(group, total), now)  # noqa: B023

                changed += rt.store.write(work, (program_id, profile_id))  # the member's writer
            if len(holders) < batch:
                break
            after = holders[-1]
    return changed
