"""Point amounts: exact decimals on the wire, integers scaled by the currency's precision in the store.

Nothing here ever touches a binary float: a JSON number reaches us as `Decimal` (the JSON parser is told so) and
anything that is neither `Decimal`, `int` nor `str` is refused.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from loyalty.domain.errors import InvalidParameter

MAX_PRECISION = 6
# Keeps every scaled amount inside a signed 64-bit column with room for sums.
MAX_UNITS = 10**15


def parse_amount(value: object, precision: int, name: str = "amount", allow_zero: bool = False) -> int:
    """Parse a wire amount into integer units of 10**-precision; reject ≤ 0 and over-precise values."""
    if isinstance(value, bool) or value is None:
        raise InvalidParameter(name, "must be a decimal number")
    if isinstance(value, int):
        dec = Decimal(value)
    elif isinstance(value, Decimal):
        dec = value
    elif isinstance(value, str):
        text = value.strip()
        if not text or not _looks_decimal(text):
            raise InvalidParameter(name, f"{value!r} is not a decimal number")
        try:
            dec = Decimal(text)
        except InvalidOperation:
            raise InvalidParameter(name, f"{value!r} is not a decimal number") from None
    else:
        raise InvalidParameter(name, "must be a decimal number")
    if not dec.is_finite():
        raise InvalidParameter(name, "must be a finite number")
    exponent = dec.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > precision:
        raise InvalidParameter(name, f"at most {precision} fractional digits are allowed")
    units = int(dec.scaleb(precision))
    if units < 0 or (units == 0 and not allow_zero):
        raise InvalidParameter(name, "must be greater than 0")
    if units >= MAX_UNITS:
        raise InvalidParameter(name, "is too large")
    return units


def _looks_decimal(text: str) -> bool:
    # Decimal() accepts "NaN", "Infinity", "1_000" and exponents; the wire format is plain digits only.
    body = text[1:] if text[:1] in "+-" else text
    if body.count(".") > 1:
        return False
    digits = body.replace(".", "", 1)
    return bool(digits) and digits.isascii() and digits.isdigit()


def format_amount(units: int, precision: int) -> str:
    """Format integer units with exactly `precision` fractional digits: 10050, 2 → "100.50"."""
    sign = "-" if units < 0 else ""
    units = abs(units)
    if precision == 0:
        return f"{sign}{units}"
    whole, frac = divmod(units, 10**precision)
    return f"{sign}{whole}.{frac:0{precision}d}"


def to_decimal(units: int, precision: int) -> Decimal:
    return Decimal(units).scaleb(-precision)
