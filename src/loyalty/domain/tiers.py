"""Tier rules: which tiers a qualification total reaches, and how far the next one is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Tier:
    id: int
    eid: str
    name: str
    threshold: int
    order: int


@dataclass(frozen=True)
class TierGroup:
    id: int
    program_id: int
    external_id: str | None
    name: str
    type: str  # cumulative | period
    window_days: int | None
    currency_iid: int
    tiers: tuple[Tier, ...]  # ascending threshold

    def window_start(self, now: datetime) -> datetime | None:
        """Earnings after this instant count for a `period` group; None for `cumulative`."""
        if self.type != "period" or self.window_days is None:
            return None
        return now - timedelta(days=self.window_days)


def reached(group: TierGroup, total: int) -> list[Tier]:
    """Tiers whose threshold the total meets, lowest first (a member can only hold a prefix of the ladder)."""
    out = []
    for tier in group.tiers:
        if total < tier.threshold:
            break
        out.append(tier)
    return out


def points_to_next(group: TierGroup, total: int) -> int | None:
    for tier in group.tiers:
        if total < tier.threshold:
            return tier.threshold - total
    return None
