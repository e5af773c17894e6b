"""loyalty.domain.points: wire amounts ⇄ integer units (altcraft-api.md §2 "Amounts")."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loyalty.domain.errors import InvalidParameter
from loyalty.domain.points import MAX_PRECISION, MAX_UNITS, format_amount, parse_amount, to_decimal


@pytest.mark.parametrize(
    ("value", "precision", "units"),
    [
        ("100.50", 2, 10050),
        ("100.5", 2, 10050),
        ("100", 2, 10000),
        ("0.01", 2, 1),
        ("7", 0, 7),
        ("0.000001", 6, 1),
        ("1.123456", 6, 1123456),
        (" 12.30 ", 2, 1230),
        ("100.500", 2, 10050),  # trailing zeros are not extra precision
    ],
)
def test_parse_amount_string_gives_integer_units_of_the_precision(value, precision, units):
    assert parse_amount(value, precision) == units


def test_parse_amount_accepts_int_and_decimal_json_numbers():
    assert parse_amount(5, 2) == 500
    assert parse_amount(Decimal("2.25"), 2) == 225
    assert parse_amount(Decimal("1E+2"), 2) == 10000  # what the JSON parser makes of 1e2
    assert parse_amount(Decimal("3.10"), 1) == 31


@pytest.mark.parametrize(("value", "precision"), [("1.123", 2), ("0.001", 2), ("1.5", 0), (Decimal("1.005"), 2),
                                                  ("0.0000001", 6)])
def test_parse_amount_refuses_more_fractional_digits_than_the_precision(value, precision):
    with pytest.raises(InvalidParameter) as info:
        parse_amount(value, precision)
    assert info.value.code == "invalid_parameter"
    assert "fractional digits" in info.value.message


@pytest.mark.parametrize("value", ["0", "0.00", "-1", "-0.01", 0, -5, Decimal("0"), Decimal("-3.5"), "-0"])
def test_parse_amount_refuses_zero_and_negative(value):
    with pytest.raises(InvalidParameter):
        parse_amount(value, 2)


def test_parse_amount_allows_zero_only_when_asked():
    assert parse_amount("0", 2, allow_zero=True) == 0
    assert parse_amount("0.00", 2, allow_zero=True) == 0
    with pytest.raises(InvalidParameter):
        parse_amount("-1", 2, allow_zero=True)


@pytest.mark.parametrize(
    "value",
    ["NaN", "nan", "Infinity", "-Infinity", "inf", "sNaN", "1e3", "1E3", "1e-2", "1_000", "0x10", "", "  ",
     "1.2.3", "abc", "12a", "1,5", "١٢٣", "½", "--1", "+-1"],
)
def test_parse_amount_refuses_strings_that_are_not_plain_decimals(value):
    with pytest.raises(InvalidParameter) as info:
        parse_amount(value, 2)
    assert info.value.parameter == "amount"


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("sNaN")])
def test_parse_amount_refuses_non_finite_decimals(value):
    with pytest.raises(InvalidParameter):
        parse_amount(value, 2)


@pytest.mark.parametrize("value", [1.5, 100.0, True, False, None, [1], {"a": 1}, b"1"])
def test_parse_amount_refuses_floats_bools_and_other_types(value):
    with pytest.raises(InvalidParameter):
        parse_amount(value, 2)


def test_parse_amount_refuses_amounts_too_large_for_the_store():
    biggest = format_amount(MAX_UNITS - 1, 2)
    assert parse_amount(biggest, 2) == MAX_UNITS - 1
    with pytest.raises(InvalidParameter, match="too large"):
        parse_amount(format_amount(MAX_UNITS, 2), 2)
    with pytest.raises(InvalidParameter, match="too large"):
        parse_amount("9" * 40, 0)
    with pytest.raises(InvalidParameter):
        parse_amount(10**30, 2)


def test_parse_amount_error_names_the_parameter():
    with pytest.raises(InvalidParameter) as info:
        parse_amount("x", 2, name="static_amount")
    assert info.value.parameter == "static_amount"
    assert "static_amount" in info.value.message


@pytest.mark.parametrize(
    ("units", "precision", "text"),
    [(10050, 2, "100.50"), (0, 2, "0.00"), (5, 2, "0.05"), (100, 0, "100"), (0, 0, "0"), (1, 6, "0.000001"),
     (-150, 2, "-1.50"), (-5, 2, "-0.05"), (123456789, 3, "123456.789")],
)
def test_format_amount_writes_exactly_precision_digits(units, precision, text):
    assert format_amount(units, precision) == text


def test_to_decimal_is_exact():
    assert to_decimal(10050, 2) == Decimal("100.50")
    assert to_decimal(1, 6) == Decimal("0.000001")
    assert to_decimal(-7, 0) == Decimal("-7")


@given(units=st.integers(min_value=1, max_value=MAX_UNITS - 1), precision=st.integers(0, MAX_PRECISION))
def test_format_then_parse_round_trips_every_positive_amount(units, precision):
    text = format_amount(units, precision)
    assert parse_amount(text, precision) == units
    assert parse_amount(Decimal(text), precision) == units
    if precision:
        assert len(text.split(".")[1]) == precision


@given(units=st.integers(min_value=-(10**12), max_value=10**12), precision=st.integers(0, MAX_PRECISION))
def test_format_amount_agrees_with_exact_decimal_arithmetic(units, precision):
    text = format_amount(units, precision)
    assert Decimal(text) == Decimal(units).scaleb(-precision)
    assert Decimal(text) == to_decimal(units, precision)
