"""loyalty.domain.matching: lookup normalisation and typed custom fields (altcraft-api.md §3)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loyalty.domain.errors import InvalidParameter, MissingParameter
from loyalty.domain.matching import (
    check_email,
    check_profile_id,
    coerce_field,
    lookup_text,
    match_value_text,
    normalise_email,
    normalise_phone,
    require_lookup,
)
from loyalty.domain.model import FieldDef

INT = FieldDef("card_no", "int", False)
STR = FieldDef("user_id", "string", True)
FLOAT = FieldDef("score", "float", False)
BOOL = FieldDef("vip", "bool", False)
DATE = FieldDef("birthday", "date", False)


@pytest.mark.parametrize("raw", ["Ann@Example.COM", "  ann@example.com", "ann@example.com\t", " ANN@EXAMPLE.COM "])
def test_normalise_email_trims_and_lowercases(raw):
    assert normalise_email(raw) == "ann@example.com"


def test_check_email_keeps_case_but_trims():
    assert check_email("  Ann@Example.com ") == "Ann@Example.com"


@pytest.mark.parametrize("value", ["", "ann", "ann@", "@example.com", "a b@example.com", "a@b@c", None, 5,
                                   ["a@b.c"]])
def test_check_email_refuses_non_addresses(value):
    with pytest.raises(InvalidParameter) as info:
        check_email(value, "data.email")
    assert info.value.parameter == "data.email"


@pytest.mark.parametrize(
    "raw",
    ["+79123456789", "+7 912 345 67 89", "+7 (912) 345-67-89", "+7.912.345.67.89", "+7-912-345-6789",
     " +7(912)3456789 ", "+7\t912\u00a0345 67 89"],
)
def test_normalise_phone_drops_spaces_dashes_dots_and_brackets(raw):
    assert normalise_phone(raw) == "+79123456789"


def test_normalise_phone_adds_plus_and_accepts_integers():
    assert normalise_phone("8 (912) 345-67-89") == "+89123456789"
    assert normalise_phone(79123456789) == "+79123456789"


@pytest.mark.parametrize("value", ["", "+", "12", "phone", "+7 912 abc", "++79123456789", "+7/912/345",
                                   "1" * 21, True, None, 1.5, ["+7912"]])
def test_normalise_phone_refuses_non_phone_values(value):
    with pytest.raises(InvalidParameter) as info:
        normalise_phone(value)
    assert info.value.parameter == "phone"


@given(st.lists(st.sampled_from(list("0123456789")), min_size=3, max_size=20),
       st.lists(st.sampled_from([" ", "-", ".", "(", ")"]), max_size=20), st.randoms())
def test_normalise_phone_ignores_any_sprinkling_of_separators(digits, separators, rnd):
    mixed = list(digits)
    for sep in separators:
        mixed.insert(rnd.randint(0, len(mixed)), sep)
    assert normalise_phone("+" + "".join(mixed)) == "+" + "".join(digits)


def test_check_profile_id_accepts_24_lowercase_hex_only():
    assert check_profile_id("0123456789abcdef01234567") == "0123456789abcdef01234567"
    for bad in ["0123456789ABCDEF01234567", "0123456789abcdef0123456", "0123456789abcdef012345678",
                "0123456789abcdef0123456g", "", None, 123]:
        with pytest.raises(InvalidParameter):
            check_profile_id(bad)


@pytest.mark.parametrize(("value", "typed"), [(123456, 123456), ("123456", 123456), (" 42 ", 42), ("-7", -7),
                                              (Decimal("5"), 5), ("+3", 3)])
def test_coerce_int_field_accepts_ints_and_integer_text(value, typed):
    assert coerce_field(INT, value) == typed


@pytest.mark.parametrize("value", [True, "12.5", Decimal("1.5"), "abc", "", 1.5, [1], {"a": 1}])
def test_coerce_int_field_refuses_non_integers(value):
    with pytest.raises(InvalidParameter) as info:
        coerce_field(INT, value)
    assert info.value.parameter == "card_no"


def test_coerce_string_field_stringifies_scalars_and_refuses_structures():
    assert coerce_field(STR, "abc") == "abc"
    assert coerce_field(STR, 123) == "123"
    for bad in [True, [1], {"a": 1}]:
        with pytest.raises(InvalidParameter):
            coerce_field(STR, bad)


def test_coerce_float_field_is_decimal_and_finite():
    assert coerce_field(FLOAT, "1.50") == Decimal("1.50")
    assert coerce_field(FLOAT, 3) == Decimal(3)
    assert isinstance(coerce_field(FLOAT, "2.5"), Decimal)
    for bad in ["NaN", "Infinity", "x", True, 1.5, [1]]:
        with pytest.raises(InvalidParameter):
            coerce_field(FLOAT, bad)


@pytest.mark.parametrize(("value", "typed"), [(True, True), (False, False), ("true", True), ("FALSE", False),
                                              ("1", True), ("0", False), (1, True), (0, False)])
def test_coerce_bool_field(value, typed):
    assert coerce_field(BOOL, value) is typed


@pytest.mark.parametrize("value", ["yes", 2, "", [True]])
def test_coerce_bool_field_refuses_other_values(value):
    with pytest.raises(InvalidParameter):
        coerce_field(BOOL, value)


def test_coerce_date_field_keeps_iso_text():
    assert coerce_field(DATE, "1990-05-17") == "1990-05-17"
    assert coerce_field(DATE, "2024-01-02T03:04:05Z") == "2024-01-02T03:04:05+00:00"
    for bad in ["17.05.1990", "1990-13-01", 19900517, ""]:
        with pytest.raises(InvalidParameter):
            coerce_field(DATE, bad)


def test_coerce_none_is_none_for_every_type():
    for field in (INT, STR, FLOAT, BOOL, DATE):
        assert coerce_field(field, None) is None


def test_lookup_text_is_canonical():
    assert lookup_text(INT, 123456) == "123456"
    assert lookup_text(FLOAT, Decimal("1.50")) == "1.5"
    assert lookup_text(FLOAT, Decimal("100")) == "100"
    assert lookup_text(BOOL, True) == "true"
    assert lookup_text(STR, "abc") == "abc"


def test_match_value_text_makes_int_and_text_meet():
    assert match_value_text(INT, 123456) == match_value_text(INT, "123456") == "123456"
    assert match_value_text(INT, " 0123456 ") == "123456"
    assert match_value_text(FLOAT, "1.50") == match_value_text(FLOAT, "1.5") == match_value_text(FLOAT, Decimal("1.5"))


def test_match_value_text_falls_back_to_plain_text_for_values_the_type_cannot_hold():
    assert match_value_text(INT, "abc") == "abc"
    assert match_value_text(INT, " 12.5 ") == "12.5"


@given(st.integers(min_value=-(10**18), max_value=10**18))
def test_int_field_value_matches_the_same_number_sent_as_text(n):
    stored = lookup_text(INT, coerce_field(INT, n))
    assert match_value_text(INT, str(n)) == stored
    assert match_value_text(INT, n) == stored


@pytest.mark.parametrize(
    ("matching", "params", "expected"),
    [
        ("email", {"email": "a@b.c", "phone": "+7912"}, {"email": "a@b.c"}),
        ("phone", {"phone": "+7912", "email": "a@b.c"}, {"phone": "+7912"}),
        ("profile_id", {"profile_id": "0123456789abcdef01234567"}, {"profile_id": "0123456789abcdef01234567"}),
        ("custom", {"field_name": "card_no", "field_value": 5}, {"field_name": "card_no", "field_value": 5}),
    ],
)
def test_require_lookup_returns_only_the_fields_of_the_mode(matching, params, expected):
    assert require_lookup(params, matching) == expected


@pytest.mark.parametrize(
    ("matching", "params", "missing"),
    [
        ("email", {}, "email"),
        ("email", {"email": "   "}, "email"),
        ("email", {"phone": "+7912"}, "email"),
        ("phone", {"email": "a@b.c"}, "phone"),
        ("profile_id", {"profile_id": None}, "profile_id"),
        ("custom", {"field_value": 5}, "field_name"),
        ("custom", {"field_name": "card_no"}, "field_value"),
    ],
)
def test_require_lookup_names_the_missing_field(matching, params, missing):
    with pytest.raises(MissingParameter) as info:
        require_lookup(params, matching)
    assert info.value.parameter == missing
    assert missing in info.value.message
    assert info.value.code == "missing_parameter"


@pytest.mark.parametrize("matching", ["Email", "login", "", "id"])
def test_require_lookup_refuses_unknown_matching_mode(matching):
    with pytest.raises(InvalidParameter) as info:
        require_lookup({"email": "a@b.c"}, matching)
    assert info.value.parameter == "matching"


@pytest.mark.parametrize("raw", ["+7912²45", "+①②③④", "+١٢٣٤٥٦"])
def test_normalised_phone_is_plus_and_ascii_digits_only(raw):
    try:
        normalised = normalise_phone(raw)
    except InvalidParameter:
        return  # refusing is fine
    assert re.fullmatch(r"\+[0-9]{3,20}", normalised), normalised
