"""Order-level loyalty arithmetic for market/orders/preorder and preorder_commit.

Money is integer minor units of the order currency (ISO 4217 exponent); points are integer units of the point
currency's precision. Rules, in order:
1. A line costs `count × (final_price_per_item or base_price_per_item)`; delivery is neither earned on nor
   payable by points. Without lines the whole order (final_total_price or total_price, less delivery) is one line.
2. At most `max_redeem_share` of the goods may be paid with points: the cap in money rounds down to a minor unit,
   and in points rounds down to the point precision; the member can never spend more than the active balance.
3. The discount is `points × point_value`, rounded down to a minor unit, so it never exceeds the price; it is
   spread over the lines in proportion to their cost (largest remainder), so line discounts add up exactly.
4. Each line earns `earn_rate` points per unit of money actually paid (cost − its discount), rounded down to the
   point precision; the order earns the sum of its lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from loyalty.domain.errors import AmountOutOfBounds, InsufficientPoints, InvalidParameter
from loyalty.domain.points import format_amount

# ISO 4217 currencies whose minor unit is not 2 digits.
_EXPONENTS = {
    **dict.fromkeys(["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
                     "VUV", "XAF", "XOF", "XPF"], 0),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    "CLF": 4, "UYW": 4,
}


def money_exponent(code: str) -> int:
    if not isinstance(code, str) or len(code) != 3 or not code.isalpha() or not code.isupper():
        raise InvalidParameter("data.currency", "must be an ISO 4217 code such as USD")
    return _EXPONENTS.get(code, 2)


@dataclass(frozen=True)
class Line:
    external_id: str | None
    cost: int  # minor units


@dataclass(frozen=True)
class Settings:
    earn_rate: Decimal
    point_value: Decimal
    max_redeem_share: Decimal


@dataclass(frozen=True)
class LineResult:
    external_id: str | None
    cost: int
    discount: int
    points_to_accrue: int


@dataclass(frozen=True)
class Quote:
    points_to_accrue: int
    points_to_redeem: int
    max_points_to_redeem: int
    discount: int
    final_total: int
    lines: tuple[LineResult, ...]


def _floor(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_DOWN))


def quote(lines: list[Line], delivery: int, settings: Settings, money_exp: int, point_precision: int,
          active_balance: int, redeem: int | str | None) -> Quote:
    """Compute an order's points; `redeem` is point units, "max", or None (spend nothing)."""
    goods = sum(line.cost for line in lines)
    money_scale = Decimal(10) ** money_exp
    point_scale = Decimal(10) ** point_precision
    cap_money = _floor(Decimal(goods) * settings.max_redeem_share)
    if settings.point_value > 0:
        cap_points = _floor(Decimal(cap_money) / money_scale / settings.point_value * point_scale)
    else:
        cap_points = 0
    max_points = max(0, min(active_balance, cap_points))
    if redeem == "max":
        points = max_points
    elif redeem is None or redeem == 0:
        points = 0  # spending nothing is always allowed, even by a member in debt
    else:
        points = int(redeem)
        fmt = lambda u: format_amount(u, point_precision)  # noqa: E731
        if points > active_balance:
            raise InsufficientPoints(
                f"Insufficient points: requested {fmt(points)}, active balance {fmt(max(active_balance, 0))}")
        if points > cap_points:
            raise AmountOutOfBounds(f"At most {fmt(cap_points)} points may be spent on this order")
    discount = min(goods, _floor(Decimal(points) / point_scale * settings.point_value * money_scale))
    shares = _spread(discount, [line.cost for line in lines])
    results = []
    for line, share in zip(lines, shares, strict=True):
        paid = Decimal(line.cost - share) / money_scale
        earned = _floor(paid * settings.earn_rate * point_scale)
        results.append(LineResult(line.external_id, line.cost, share, earned))
    return Quote(
        points_to_accrue=sum(r.points_to_accrue for r in results),
        points_to_redeem=points,
        max_points_to_redeem=max_points,
        discount=discount,
        final_total=goods - discount + delivery,
        lines=tuple(results),
    )


def _spread(total: int, weights: list[int]) -> list[int]:
    """Split `total` in proportion to `weights` with integer parts that add up exactly (largest remainder)."""
    whole = sum(weights)
    if whole <= 0 or total <= 0:
        return [0] * len(weights)
    parts = [total * w // whole for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in remainders[: total - sum(parts)]:
        parts[i] += 1
    return parts
