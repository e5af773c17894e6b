"""profiles/add, import, update, get (altcraft-api.md §6) and the matching rules they share (§3), JSON and XML."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.helpers import ApiClient, Reply

FORMATS = ["json", "xml"]
HEX24 = re.compile(r"^[0-9a-f]{24}$")


def as_list(value: Any) -> list[Any]:
    """XML has no arrays: one repeated element reads back as a scalar, none as absent."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def get(api: ApiClient, fmt: str = "json", **lookup: Any) -> Reply:
    return api.call("profiles/get", fmt=fmt, db_id=1, **lookup)


def add(api: ApiClient, fmt: str = "json", db_id: int = 1, **data: Any) -> Reply:
    return api.call("profiles/add", fmt=fmt, db_id=db_id, data=data)


def assert_error(r: Reply, status: int, code: str) -> None:
    assert r.status == status, r.body
    assert r.error == status, r.body
    assert r.code == code, r.body
    assert isinstance(r.body["error_text"], str) and r.body["error_text"]


# ---------------------------------------------------------------------------------------------------------------
# add and get


@pytest.mark.parametrize("fmt", FORMATS)
def test_add_answers_with_a_top_level_profile_id(api, fmt):
    r = add(api, fmt, email="ann@example.com")
    assert r.status == 200 and r.error == 0, r.body
    assert set(r.body) == {"error", "error_text", "profile_id"}
    assert r.body["error_text"] == "Successful operation"
    assert HEX24.match(r.body["profile_id"])


def test_add_gives_each_profile_its_own_id(api):
    ids = {api.add_profile(f"u{i}@example.com") for i in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize("fmt", FORMATS)
def test_get_returns_id_db_id_email_phones_system_and_custom_fields(api, fmt):
    r = add(api, fmt, email="Ann@Example.com", phones=["+7 (912) 345-67-89", "+1 555 0100"], _fname="Ann",
            _lname="Lee", _regdate="2024-05-01T10:00:00+03:00", card_no=123456, city="Riga", user_id="u-1")
    assert r.status == 200, r.body
    pid = r.body["profile_id"]
    r = get(api, fmt, matching="email", email="ann@example.com")
    assert r.status == 200 and r.error == 0, r.body
    d = r.data
    assert d["id"] == pid
    assert str(d["db_id"]) == "1"
    assert d["email"] == "Ann@Example.com"
    assert as_list(d["phones"]) == ["+79123456789", "+15550100"]
    assert d["_fname"] == "Ann" and d["_lname"] == "Lee"
    assert d["_regdate"] == "2024-05-01T07:00:00Z"
    assert d["_createtime"] == "2025-01-15T12:00:00Z"  # the frozen clock
    assert str(d["card_no"]) == "123456"
    assert d["city"] == "Riga" and d["user_id"] == "u-1"


def test_get_in_json_keeps_value_types(api):
    api.add_profile("ann@example.com", card_no="123456", phones="+1 555 0100")
    d = get(api, matching="email", email="ann@example.com").data
    assert d["db_id"] == 1
    assert d["card_no"] == 123456  # an int field comes back as a number even when sent as text
    assert d["phones"] == ["+15550100"]  # an array even with one phone


def test_get_lists_unset_fields_as_null(api):
    api.add_profile("bare@example.com")
    d = get(api, matching="email", email="bare@example.com").data
    assert d["phones"] == []
    for key in ("_fname", "_lname", "_regdate", "card_no", "city", "user_id"):
        assert key in d and d[key] is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_get_with_trailing_slash_path_works_the_same(api, fmt):
    pid = api.add_profile("ann@example.com")
    r = api.call("profiles/get/", fmt=fmt, db_id=1, matching="email", email="ann@example.com")
    assert r.status == 200 and r.data["id"] == pid


@pytest.mark.parametrize("fmt", FORMATS)
def test_get_unknown_profile_is_404_profile_not_found(api, fmt):
    assert_error(get(api, fmt, matching="email", email="ghost@example.com"), 404, "profile_not_found")


@pytest.mark.parametrize("fmt", FORMATS)
def test_xml_add_reads_repeated_and_single_phones_elements(api, fmt):
    add(api, fmt, email="one@example.com", phones="+1 555 0101")
    add(api, fmt, email="two@example.com", phones=["+1 555 0102", "+1 555 0103"])
    assert as_list(get(api, fmt, matching="email", email="one@example.com").data["phones"]) == ["+15550101"]
    assert as_list(get(api, fmt, matching="email", email="two@example.com").data["phones"]) == [
        "+15550102", "+15550103"]


def test_read_only_fields_in_data_are_ignored(api):
    pid = api.add_profile("ann@example.com")
    r = api.call("profiles/update", db_id=1, matching="email", email="ann@example.com",
                 data={"id": "0" * 24, "db_id": 7, "_createtime": "2000-01-01T00:00:00Z", "_fname": "Ann"})
    assert r.status == 200 and r.body["profile_id"] == pid
    d = get(api, matching="profile_id", profile_id=pid).data
    assert d["id"] == pid and d["db_id"] == 1 and d["_createtime"] == "2025-01-15T12:00:00Z"
    assert d["_fname"] == "Ann"


@pytest.mark.parametrize(
    "data",
    [{"email": "not-an-email"}, {"email": "ann@example.com", "nickname": "x"},
     {"email": "ann@example.com", "card_no": "12a"}, {"email": "ann@example.com", "phones": ["call me"]},
     {"email": "ann@example.com", "_regdate": "2024-05-01T10:00:00"}],
)
def test_add_with_invalid_data_is_400_invalid_parameter_and_creates_nothing(api, data):
    r = api.call("profiles/add", db_id=1, data=data)
    assert_error(r, 400, "invalid_parameter")
    assert get(api, matching="email", email="ann@example.com").status == 404


def test_add_without_data_is_400_missing_parameter(api):
    r = api.call("profiles/add", db_id=1)
    assert_error(r, 400, "missing_parameter")
    assert "data" in r.body["error_text"]


# ---------------------------------------------------------------------------------------------------------------
# email


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lookup", ["ann@example.com", "ANN@EXAMPLE.COM", "  Ann@Example.com  ", "aNn@eXaMpLe.cOm"])
def test_email_lookup_is_trimmed_and_case_insensitive(api, fmt, lookup):
    pid = api.add_profile("Ann@Example.com")
    r = get(api, fmt, matching="email", email=lookup)
    assert r.status == 200 and r.data["id"] == pid


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("second", ["ann@example.com", "ANN@example.com", " ann@EXAMPLE.com "])
def test_duplicate_email_is_409_whatever_its_case(api, fmt, second):
    api.add_profile("Ann@Example.com")
    r = add(api, fmt, email=second)
    assert_error(r, 409, "duplicate_profile")


def test_update_to_another_profiles_email_is_409(api):
    api.add_profile("ann@example.com")
    api.add_profile("bob@example.com")
    r = api.call("profiles/update", db_id=1, matching="email", email="bob@example.com",
                 data={"email": "ANN@example.com"})
    assert_error(r, 409, "duplicate_profile")
    assert get(api, matching="email", email="bob@example.com").status == 200


def test_update_may_change_the_case_of_its_own_email(api):
    pid = api.add_profile("ann@example.com")
    r = api.call("profiles/update", db_id=1, matching="email", email="ann@example.com",
                 data={"email": "Ann@Example.com"})
    assert r.status == 200 and r.body["profile_id"] == pid
    assert get(api, matching="email", email="ann@example.com").data["email"] == "Ann@Example.com"


# ---------------------------------------------------------------------------------------------------------------
# phone


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lookup", ["+79123456789", "+7 912 345 67 89", "+7 (912) 345-67-89", "+7.912.345.67.89",
                                    "+7-912-345-6789", " +7(912)3456789 "])
def test_phone_lookup_ignores_spaces_dashes_dots_and_brackets(api, fmt, lookup):
    pid = api.add_profile("ann@example.com", phones=["+7 (912) 345.67-89"])
    r = get(api, fmt, matching="phone", phone=lookup)
    assert r.status == 200 and r.data["id"] == pid
    assert as_list(r.data["phones"]) == ["+79123456789"]


def test_phone_lookup_finds_a_profile_by_any_of_its_phones(api):
    pid = api.add_profile("ann@example.com", phones=["+1 555 0100", "+44 20 7946 0958"])
    assert get(api, matching="phone", phone="+44 (20) 7946-0958").data["id"] == pid
    assert get(api, matching="phone", phone="+1.555.0100").data["id"] == pid


@pytest.mark.parametrize("fmt", FORMATS)
def test_two_profiles_with_the_same_phone_are_409_ambiguous_match(api, fmt):
    api.add_profile("ann@example.com", phones=["+7 912 345 67 89"])
    api.add_profile("bob@example.com", phones=["+7 (912) 345-67-89"])
    assert_error(get(api, fmt, matching="phone", phone="+79123456789"), 409, "ambiguous_match")
    r = api.call("profiles/import", fmt=fmt, db_id=1, matching="phone", phone="+79123456789", data={"_fname": "X"})
    assert_error(r, 409, "ambiguous_match")
    r = api.call("profiles/update", fmt=fmt, db_id=1, matching="phone", phone="+79123456789", data={"_fname": "X"})
    assert_error(r, 409, "ambiguous_match")
    assert get(api, matching="email", email="ann@example.com").data["_fname"] is None


def test_bad_phone_in_lookup_is_400_invalid_parameter(api):
    assert_error(get(api, matching="phone", phone="call me"), 400, "invalid_parameter")


# ---------------------------------------------------------------------------------------------------------------
# custom fields


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("stored", "lookup"), [(123456, "123456"), ("123456", 123456), (123456, 123456),
                                                ("123456", "123456"), (123456, " 123456 ")])
def test_int_custom_field_matches_as_number_or_text(api, fmt, stored, lookup):
    pid = api.add_profile("ann@example.com", card_no=stored)
    r = get(api, fmt, matching="custom", field_name="card_no", field_value=lookup)
    assert r.status == 200, r.body
    assert r.data["id"] == pid


def test_custom_lookup_of_a_value_nobody_has_is_404(api):
    api.add_profile("ann@example.com", card_no=123456)
    assert_error(get(api, matching="custom", field_name="card_no", field_value=654321), 404, "profile_not_found")
    assert_error(get(api, matching="custom", field_name="card_no", field_value="abc"), 404, "profile_not_found")


def test_string_custom_field_matches_exactly(api):
    pid = api.add_profile("ann@example.com", user_id="U-42")
    assert get(api, matching="custom", field_name="user_id", field_value="U-42").data["id"] == pid
    assert get(api, matching="custom", field_name="user_id", field_value="u-42").status == 404


@pytest.mark.parametrize("fmt", FORMATS)
def test_duplicate_unique_custom_field_is_409(api, fmt):
    api.add_profile("ann@example.com", user_id="U-1")
    assert_error(add(api, fmt, email="bob@example.com", user_id="U-1"), 409, "duplicate_profile")
    assert get(api, matching="email", email="bob@example.com").status == 404


def test_unique_custom_field_collision_through_update_is_409(api):
    api.add_profile("ann@example.com", user_id="U-1")
    api.add_profile("bob@example.com", user_id="U-2")
    r = api.call("profiles/update", db_id=1, matching="email", email="bob@example.com", data={"user_id": "U-1"})
    assert_error(r, 409, "duplicate_profile")
    assert get(api, matching="email", email="bob@example.com").data["user_id"] == "U-2"


def test_unique_custom_field_may_be_rewritten_with_its_own_value(api):
    pid = api.add_profile("ann@example.com", user_id="U-1")
    r = api.call("profiles/update", db_id=1, matching="custom", field_name="user_id", field_value="U-1",
                 data={"user_id": "U-1", "city": "Oslo"})
    assert r.status == 200 and r.body["profile_id"] == pid


def test_non_unique_custom_field_may_repeat_and_then_matching_is_ambiguous(api):
    api.add_profile("ann@example.com", city="Riga")
    api.add_profile("bob@example.com", city="Riga")
    assert_error(get(api, matching="custom", field_name="city", field_value="Riga"), 409, "ambiguous_match")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("endpoint", ["profiles/get", "profiles/import", "profiles/update"])
def test_custom_matching_on_a_field_not_in_the_schema_is_400_invalid_parameter(api, fmt, endpoint):
    api.add_profile("ann@example.com")
    r = api.call(endpoint, fmt=fmt, db_id=1, matching="custom", field_name="loyalty_card", field_value="1",
                 data={"_fname": "X"})
    assert_error(r, 400, "invalid_parameter")
    assert "field_name" in r.body["error_text"]


# ---------------------------------------------------------------------------------------------------------------
# lookup parameters


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("lookup", "missing"),
    [
        ({"matching": "email"}, "email"),
        ({"matching": "email", "email": "   "}, "email"),
        ({"matching": "email", "phone": "+1 555 0100"}, "email"),
        ({"matching": "phone", "email": "ann@example.com"}, "phone"),
        ({"matching": "profile_id"}, "profile_id"),
        ({"matching": "custom", "field_value": "1"}, "field_name"),
        ({"matching": "custom", "field_name": "card_no"}, "field_value"),
        ({"email": "ann@example.com"}, "matching"),
    ],
)
def test_missing_lookup_field_on_get_is_400_missing_parameter_naming_it(api, fmt, lookup, missing):
    api.add_profile("ann@example.com")
    r = get(api, fmt, **lookup)
    assert_error(r, 400, "missing_parameter")
    assert missing in r.body["error_text"]


@pytest.mark.parametrize("endpoint", ["profiles/import", "profiles/update"])
def test_missing_lookup_field_on_import_and_update_is_400_naming_it(api, endpoint):
    r = api.call(endpoint, db_id=1, matching="phone", data={"_fname": "X"})
    assert_error(r, 400, "missing_parameter")
    assert "phone" in r.body["error_text"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_matching_mode_is_400_invalid_parameter(api, fmt):
    r = get(api, fmt, matching="login", email="ann@example.com")
    assert_error(r, 400, "invalid_parameter")
    assert "matching" in r.body["error_text"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_profile_id_matching_is_exact(api, fmt):
    pid = api.add_profile("ann@example.com")
    assert get(api, fmt, matching="profile_id", profile_id=pid).data["id"] == pid
    other = ("0" if pid[0] != "0" else "1") + pid[1:]
    assert_error(get(api, fmt, matching="profile_id", profile_id=other), 404, "profile_not_found")
    assert_error(get(api, fmt, matching="profile_id", profile_id=pid.upper()), 400, "invalid_parameter")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("endpoint", "params"), [
    ("profiles/add", {"data": {"email": "ann@example.com"}}),
    ("profiles/import", {"matching": "email", "email": "ann@example.com", "data": {"_fname": "A"}}),
    ("profiles/update", {"matching": "email", "email": "ann@example.com", "data": {"_fname": "A"}}),
    ("profiles/get", {"matching": "email", "email": "ann@example.com"}),
])
def test_unknown_db_id_is_404_database_not_found(api, fmt, endpoint, params):
    r = api.call(endpoint, fmt=fmt, db_id=99, **params)
    assert_error(r, 404, "database_not_found")


# ---------------------------------------------------------------------------------------------------------------
# import and update


@pytest.mark.parametrize("fmt", FORMATS)
def test_import_updates_the_matched_profile_and_keeps_other_fields(api, fmt):
    pid = api.add_profile("ann@example.com", _fname="Ann", city="Riga", card_no=1)
    r = api.call("profiles/import", fmt=fmt, db_id=1, matching="email", email="ANN@example.com",
                 data={"_lname": "Lee", "city": "Oslo"})
    assert r.status == 200 and set(r.body) == {"error", "error_text", "profile_id"}
    assert r.body["profile_id"] == pid
    d = get(api, matching="profile_id", profile_id=pid).data
    assert (d["_fname"], d["_lname"], d["city"], d["card_no"]) == ("Ann", "Lee", "Oslo", 1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_import_without_matching_matches_by_email(api, fmt):
    pid = api.add_profile("ann@example.com")
    r = api.call("profiles/import", fmt=fmt, db_id=1, email="ann@example.com", data={"_fname": "Ann"})
    assert r.status == 200 and r.body["profile_id"] == pid
    assert get(api, matching="email", email="ann@example.com").data["_fname"] == "Ann"


@pytest.mark.parametrize("fmt", FORMATS)
def test_import_creates_a_profile_carrying_the_lookup_email_when_none_matches(api, fmt):
    r = api.call("profiles/import", fmt=fmt, db_id=1, matching="email", email="new@example.com",
                 data={"_fname": "New"})
    assert r.status == 200, r.body
    d = get(api, matching="email", email="new@example.com").data
    assert d["id"] == r.body["profile_id"] and d["_fname"] == "New" and d["email"] == "new@example.com"


def test_import_by_phone_creates_a_profile_with_that_phone(api):
    r = api.call("profiles/import", db_id=1, matching="phone", phone="+7 (912) 345-67-89", data={"_fname": "P"})
    assert r.status == 200, r.body
    d = get(api, matching="phone", phone="+79123456789").data
    assert d["id"] == r.body["profile_id"] and d["phones"] == ["+79123456789"] and d["email"] is None


def test_import_by_custom_field_creates_a_profile_with_that_value(api):
    r = api.call("profiles/import", db_id=1, matching="custom", field_name="card_no", field_value="777",
                 data={"email": "c@example.com"})
    assert r.status == 200, r.body
    d = get(api, matching="custom", field_name="card_no", field_value=777).data
    assert d["id"] == r.body["profile_id"] and d["card_no"] == 777 and d["email"] == "c@example.com"


def test_import_twice_with_the_same_lookup_gives_one_profile(api):
    first = api.call("profiles/import", db_id=1, matching="email", email="x@example.com", data={"city": "A"})
    second = api.call("profiles/import", db_id=1, matching="email", email=" X@example.com", data={"city": "B"})
    assert first.body["profile_id"] == second.body["profile_id"]
    assert get(api, matching="email", email="x@example.com").data["city"] == "B"


@pytest.mark.parametrize("fmt", FORMATS)
def test_update_changes_the_matched_profile(api, fmt):
    pid = api.add_profile("ann@example.com", phones=["+1 555 0100"])
    r = api.call("profiles/update", fmt=fmt, db_id=1, matching="phone", phone="+1-555-0100",
                 data={"_fname": "Ann", "phones": ["+1 555 0199"], "card_no": "42"})
    assert r.status == 200 and r.body["profile_id"] == pid
    d = get(api, matching="email", email="ann@example.com").data
    assert d["_fname"] == "Ann" and d["phones"] == ["+15550199"] and d["card_no"] == 42
    assert get(api, matching="phone", phone="+15550100").status == 404  # the old phone no longer matches


@pytest.mark.parametrize("fmt", FORMATS)
def test_update_of_an_unmatched_profile_is_404_and_creates_nothing(api, fmt):
    r = api.call("profiles/update", fmt=fmt, db_id=1, matching="email", email="ghost@example.com",
                 data={"_fname": "Ghost"})
    assert_error(r, 404, "profile_not_found")
    assert get(api, matching="email", email="ghost@example.com").status == 404


def test_update_with_invalid_data_changes_nothing(api):
    api.add_profile("ann@example.com", city="Riga")
    r = api.call("profiles/update", db_id=1, matching="email", email="ann@example.com",
                 data={"city": "Oslo", "card_no": "not a number"})
    assert_error(r, 400, "invalid_parameter")
    assert get(api, matching="email", email="ann@example.com").data["city"] == "Riga"


def test_updated_email_is_what_email_matching_finds(api):
    pid = api.add_profile("old@example.com")
    api.call("profiles/update", db_id=1, matching="profile_id", profile_id=pid, data={"email": "New@Example.com"})
    assert get(api, matching="email", email="new@example.com").data["id"] == pid
    assert get(api, matching="email", email="old@example.com").status == 404
