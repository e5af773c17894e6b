"""Trigger promotion rules: when a promotion may be used and what amount its rule allows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from loyalty.domain.errors import AmountOutOfBounds, MissingParameter, PromotionInactive
from loyalty.domain.points import format_amount


@dataclass(frozen=True)
class Rule:
    side: str  # accrual | redeem
    currency_iid: int
    static_amount: int | None
    min_amount: int | None
    max_amount: int | None


@dataclass(frozen=True)
class Promotion:
    id: int
    program_id: int
    external_id: str | None
    name: str
    description: str
    start_date: datetime | None
    end_date: datetime | None
    is_active: bool
    per_member: int | None
    per_day: int | None
    rules: tuple[Rule, ...]

    def check_running(self, now: datetime) -> None:
        if not self.is_active:
            raise PromotionInactive(f"Promotion {self.id} is inactive")
        if self.start_date is not None and now < self.start_date:
            raise PromotionInactive(f"Promotion {self.id} has not started yet")
        if self.end_date is not None and now > self.end_date:
            raise PromotionInactive(f"Promotion {self.id} has ended")

    def rule(self, side: str, currency_iid: int) -> Rule | None:
        return next((r for r in self.rules if r.side == side and r.currency_iid == currency_iid), None)

    @property
    def has_limits(self) -> bool:
        return self.per_member is not None or self.per_day is not None


def amount_under_rule(rule: Rule | None, amount: int | None, precision: int) -> int:
    """The amount to move: the rule's static amount, or the requested one within the rule's bounds."""
    def fmt(units: int) -> str:
        return format_amount(units, precision)

    if rule is not None and rule.static_amount is not None:
        if amount is not None and amount != rule.static_amount:
            raise AmountOutOfBounds(f"This promotion moves exactly {fmt(rule.static_amount)} points")
        return rule.static_amount
    if amount is None:
        raise MissingParameter("amount")
    if rule is not None and rule.min_amount is not None and amount < rule.min_amount:
        raise AmountOutOfBounds(f"Amount {fmt(amount)} is below the promotion's minimum {fmt(rule.min_amount)}")
    if rule is not None and rule.max_amount is not None and amount > rule.max_amount:
        raise AmountOutOfBounds(f"Amount {fmt(amount)} is above the promotion's maximum {fmt(rule.max_amount)}")
    return amount
