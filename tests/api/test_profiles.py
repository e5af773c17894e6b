"""profiles/add, import, update, get (altcraft-api.md §6) and the matching rules they share (§3), JSON and XML.

Every test gets a fresh store (SQLite and PostgreSQL); most check both body formats inside one test, with data
of their own per format, to keep the number of store set-ups small.
"""

from __future__ import annotations

import re
from typing import Any

from tests.helpers import ApiClient, Reply

FORMATS = ("json", "xml")
HEX24 = re.compile(r"^[0-9a-f]{24}$")


def as_list(value: Any) -> list[Any]:
    """XML has no arrays: one repeated element reads back as a scalar, none as absent."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def get(api: ApiClient, fmt: str = "json", **lookup: Any) -> Reply:
    return api.call("profiles/get", fmt=fmt, db_id=1, **lookup)


def add(api: ApiClient, fmt: str = "json", **data: Any) -> Reply:
    return api.call("profiles/add", fmt=fmt, db_id=1, data=data)


def assert_error(r: Reply, status: int, code: str, names: str | None = None) -> None:
    assert r.status == status, r.body
    assert r.error == status, r.body
    assert r.code == code, r.body
    assert isinstance(r.body["error_text"], str) and r.body["error_text"]
    if names is not None:
        assert names in r.body["error_text"], r.body


# ---------------------------------------------------------------------------------------------------------------
# add and get


def test_add_answers_with_a_top_level_24_hex_profile_id(api):
    ids = set()
    for fmt in FORMATS:
        for i in range(2):
            r = add(api, fmt, email=f"u{i}.{fmt}@example.com")
            assert r.status == 200 and r.error == 0, r.body
            assert set(r.body) == {"error", "error_text", "profile_id"}
            assert r.body["error_text"] == "Successful operation"
            assert HEX24.match(r.body["profile_id"])
            ids.add(r.body["profile_id"])
    assert len(ids) == 4


def test_get_returns_id_db_id_email_phones_system_and_custom_fields(api):
    for fmt in FORMATS:
        email = f"Ann.{fmt}@Example.com"
        r = add(api, fmt, email=email, phones=["+7 (912) 345-67-89", "+1 555 0100"], _fname="Ann", _lname="Lee",
                _regdate="2024-05-01T10:00:00+03:00", card_no=123456, city="Riga", user_id=f"u-{fmt}")
        assert r.status == 200, r.body
        pid = r.body["profile_id"]
        for endpoint in ("profiles/get", "profiles/get/"):
            r = api.call(endpoint, fmt=fmt, db_id=1, matching="email", email=email.lower())
            assert r.status == 200 and r.error == 0, r.body
            d = r.data
            assert d["id"] == pid
            assert str(d["db_id"]) == "1"
            assert d["email"] == email
            assert as_list(d["phones"]) == ["+79123456789", "+15550100"]
            assert d["_fname"] == "Ann" and d["_lname"] == "Lee"
            assert d["_regdate"] == "2024-05-01T07:00:00Z"  # UTC with Z
            assert d["_createtime"] == "2025-01-15T12:00:00Z"  # the frozen clock
            assert str(d["card_no"]) == "123456"
            assert d["city"] == "Riga" and d["user_id"] == f"u-{fmt}"


def test_get_in_json_keeps_value_types_and_lists_unset_fields_as_null(api):
    api.add_profile("typed@example.com", card_no="123456", phones="+1 555 0100")
    d = get(api, matching="email", email="typed@example.com").data
    assert d["db_id"] == 1
    assert d["card_no"] == 123456  # an int field comes back as a number even when sent as text
    assert d["phones"] == ["+15550100"]  # an array even with one phone
    api.add_profile("bare@example.com")
    d = get(api, matching="email", email="bare@example.com").data
    assert d["phones"] == []
    for key in ("_fname", "_lname", "_regdate", "card_no", "city", "user_id"):
        assert key in d and d[key] is None


def test_xml_add_reads_one_or_many_phones_elements(api):
    api.call("profiles/add", fmt="xml", db_id=1, data={"email": "one@example.com", "phones": "+1 555 0101"})
    api.call("profiles/add", fmt="xml", db_id=1,
             data={"email": "two@example.com", "phones": ["+1 555 0102", "+1 555 0103"]})
    assert get(api, matching="email", email="one@example.com").data["phones"] == ["+15550101"]
    assert get(api, matching="email", email="two@example.com").data["phones"] == ["+15550102", "+15550103"]


def test_profile_id_matching_is_exact_and_an_unknown_profile_is_404(api):
    pid = api.add_profile("ann@example.com")
    other = ("0" if pid[0] != "0" else "1") + pid[1:]
    for fmt in FORMATS:
        assert get(api, fmt, matching="profile_id", profile_id=pid).data["id"] == pid
        assert_error(get(api, fmt, matching="profile_id", profile_id=other), 404, "profile_not_found")
        assert_error(get(api, fmt, matching="profile_id", profile_id=pid.upper()), 400, "invalid_parameter")
        assert_error(get(api, fmt, matching="email", email="ghost@example.com"), 404, "profile_not_found")


def test_read_only_fields_in_data_are_ignored(api):
    pid = api.add_profile("ann@example.com")
    r = api.call("profiles/update", db_id=1, matching="email", email="ann@example.com",
                 data={"id": "0" * 24, "db_id": 7, "_createtime": "2000-01-01T00:00:00Z", "_fname": "Ann"})
    assert r.status == 200 and r.body["profile_id"] == pid
    d = get(api, matching="profile_id", profile_id=pid).data
    assert d["id"] == pid and d["db_id"] == 1 and d["_createtime"] == "2025-01-15T12:00:00Z"
    assert d["_fname"] == "Ann"


def test_add_with_invalid_or_missing_data_is_400_and_creates_nothing(api):
    for fmt in FORMATS:
        for data, names in [
            ({"email": "not-an-email"}, "email"),
            ({"email": "ann@example.com", "nickname": "x"}, "nickname"),
            ({"email": "ann@example.com", "card_no": "12a"}, "card_no"),
            ({"email": "ann@example.com", "phones": ["call me"]}, "phones"),
            ({"email": "ann@example.com", "_regdate": "2024-05-01T10:00:00"}, "_regdate"),
        ]:
            assert_error(api.call("profiles/add", fmt=fmt, db_id=1, data=data), 400, "invalid_parameter", names)
        assert_error(api.call("profiles/add", fmt=fmt, db_id=1), 400, "missing_parameter", "data")
    assert get(api, matching="email", email="ann@example.com").status == 404


# ---------------------------------------------------------------------------------------------------------------
# email


def test_email_lookup_is_trimmed_and_case_insensitive(api):
    pid = api.add_profile("Ann@Example.com")
    for fmt in FORMATS:
        for lookup in ("ann@example.com", "ANN@EXAMPLE.COM", "  Ann@Example.com  ", "aNn@eXaMpLe.cOm"):
            r = get(api, fmt, matching="email", email=lookup)
            assert r.status == 200 and r.data["id"] == pid, (fmt, lookup, r.body)


def test_duplicate_email_is_409_whatever_its_case_and_spacing(api):
    api.add_profile("Ann@Example.com")
    for fmt in FORMATS:
        for second in ("ann@example.com", "ANN@example.com", " ann@EXAMPLE.com "):
            assert_error(add(api, fmt, email=second), 409, "duplicate_profile")
    # taking another profile's email through update is refused the same way
    api.add_profile("bob@example.com")
    r = api.call("profiles/update", db_id=1, matching="email", email="bob@example.com",
                 data={"email": "ANN@example.com"})
    assert_error(r, 409, "duplicate_profile")
    assert get(api, matching="email", email="bob@example.com").data["email"] == "bob@example.com"


def test_profile_may_change_the_case_of_its_own_email(api):
    pid = api.add_profile("ann@example.com")
    r = api.call("profiles/update", db_id=1, matching="email", email="ann@example.com",
                 data={"email": "Ann@Example.com"})
    assert r.status == 200 and r.body["profile_id"] == pid
    assert get(api, matching="email", email="ann@example.com").data["email"] == "Ann@Example.com"


# ---------------------------------------------------------------------------------------------------------------
# phone


def test_phone_lookup_ignores_spaces_dashes_dots_and_brackets(api):
    pid = api.add_profile("ann@example.com", phones=["+7 (912) 345.67-89", "+44 20 7946 0958"])
    for fmt in FORMATS:
        for lookup in ("+79123456789", "+7 912 345 67 89", "+7 (912) 345-67-89", "+7.912.345.67.89",
                       "+7-912-345-6789", " +7(912)3456789 ", "+44 (20) 7946-0958"):
            r = get(api, fmt, matching="phone", phone=lookup)
            assert r.status == 200 and r.data["id"] == pid, (fmt, lookup, r.body)
    assert get(api, matching="phone", phone="+7 912 345 67 80").status == 404
    assert_error(get(api, matching="phone", phone="call me"), 400, "invalid_parameter")


def test_two_profiles_with_the_same_phone_are_409_ambiguous_match(api):
    api.add_profile("ann@example.com", phones=["+7 912 345 67 89"])
    api.add_profile("bob@example.com", phones=["+7 (912) 345-67-89"])
    for fmt in FORMATS:
        assert_error(get(api, fmt, matching="phone", phone="+79123456789"), 409, "ambiguous_match")
        for endpoint in ("profiles/import", "profiles/update"):
            r = api.call(endpoint, fmt=fmt, db_id=1, matching="phone", phone="+7.912.345.67.89",
                         data={"_fname": "X"})
            assert_error(r, 409, "ambiguous_match")
    assert get(api, matching="email", email="ann@example.com").data["_fname"] is None
    assert get(api, matching="email", email="bob@example.com").data["_fname"] is None


# ---------------------------------------------------------------------------------------------------------------
# custom fields


def test_int_custom_field_matches_whether_sent_as_number_or_text(api):
    cases = [(123456, "123456"), ("223456", 223456), (323456, 323456), ("423456", "423456"), (523456, " 523456 ")]
    for n, (stored, lookup) in enumerate(cases):
        pid = api.add_profile(f"c{n}@example.com", card_no=stored)
        for fmt in FORMATS:
            r = get(api, fmt, matching="custom", field_name="card_no", field_value=lookup)
            assert r.status == 200 and r.data["id"] == pid, (stored, lookup, fmt, r.body)
    assert_error(get(api, matching="custom", field_name="card_no", field_value=999999), 404, "profile_not_found")
    assert_error(get(api, matching="custom", field_name="card_no", field_value="abc"), 404, "profile_not_found")


def test_string_custom_field_matches_exactly_and_repeats_make_matching_ambiguous(api):
    pid = api.add_profile("ann@example.com", user_id="U-42", city="Riga")
    api.add_profile("bob@example.com", city="Riga")  # city is not unique
    for fmt in FORMATS:
        assert get(api, fmt, matching="custom", field_name="user_id", field_value="U-42").data["id"] == pid
        assert_error(get(api, fmt, matching="custom", field_name="user_id", field_value="u-42"), 404,
                     "profile_not_found")
        assert_error(get(api, fmt, matching="custom", field_name="city", field_value="Riga"), 409,
                     "ambiguous_match")


def test_duplicate_unique_custom_field_is_409(api):
    api.add_profile("ann@example.com", user_id="U-1")
    for fmt in FORMATS:
        assert_error(add(api, fmt, email=f"bob.{fmt}@example.com", user_id="U-1"), 409, "duplicate_profile")
        assert get(api, matching="email", email=f"bob.{fmt}@example.com").status == 404
    # through update
    api.add_profile("carl@example.com", user_id="U-2")
    r = api.call("profiles/update", db_id=1, matching="email", email="carl@example.com", data={"user_id": "U-1"})
    assert_error(r, 409, "duplicate_profile")
    assert get(api, matching="email", email="carl@example.com").data["user_id"] == "U-2"
    # rewriting one's own unique value is no conflict
    r = api.call("profiles/update", db_id=1, matching="custom", field_name="user_id", field_value="U-1",
                 data={"user_id": "U-1", "city": "Oslo"})
    assert r.status == 200, r.body
    assert get(api, matching="email", email="ann@example.com").data["city"] == "Oslo"


def test_custom_matching_on_a_field_not_in_the_schema_is_400_invalid_parameter(api):
    api.add_profile("ann@example.com")
    for fmt in FORMATS:
        for endpoint in ("profiles/get", "profiles/import", "profiles/update"):
            r = api.call(endpoint, fmt=fmt, db_id=1, matching="custom", field_name="loyalty_card", field_value="1",
                         data={"_fname": "X"})
            assert_error(r, 400, "invalid_parameter", "field_name")
    assert get(api, matching="email", email="ann@example.com").data["_fname"] is None


# ---------------------------------------------------------------------------------------------------------------
# lookup parameters


def test_missing_lookup_field_is_400_missing_parameter_naming_it(api):
    api.add_profile("ann@example.com")
    cases = [
        ({"matching": "email"}, "email"),
        ({"matching": "email", "email": "   "}, "email"),
        ({"matching": "email", "phone": "+1 555 0100"}, "email"),
        ({"matching": "phone", "email": "ann@example.com"}, "phone"),
        ({"matching": "profile_id"}, "profile_id"),
        ({"matching": "custom", "field_value": "1"}, "field_name"),
        ({"matching": "custom", "field_name": "card_no"}, "field_value"),
    ]
    for fmt in FORMATS:
        for endpoint in ("profiles/get", "profiles/import", "profiles/update"):
            for lookup, missing in cases:
                r = api.call(endpoint, fmt=fmt, db_id=1, data={"_fname": "X"}, **lookup)
                assert_error(r, 400, "missing_parameter", missing)
    assert get(api, matching="email", email="ann@example.com").data["_fname"] is None


def test_unknown_matching_mode_is_400_invalid_parameter(api):
    api.add_profile("ann@example.com")
    for fmt in FORMATS:
        for endpoint in ("profiles/get", "profiles/import", "profiles/update"):
            r = api.call(endpoint, fmt=fmt, db_id=1, matching="login", email="ann@example.com",
                         data={"_fname": "X"})
            assert_error(r, 400, "invalid_parameter", "matching")


def test_unknown_db_id_is_404_database_not_found(api):
    for fmt in FORMATS:
        for endpoint, params in [
            ("profiles/add", {"data": {"email": "ann@example.com"}}),
            ("profiles/import", {"matching": "email", "email": "ann@example.com", "data": {"_fname": "A"}}),
            ("profiles/update", {"matching": "email", "email": "ann@example.com", "data": {"_fname": "A"}}),
            ("profiles/get", {"matching": "email", "email": "ann@example.com"}),
        ]:
            assert_error(api.call(endpoint, fmt=fmt, db_id=99, **params), 404, "database_not_found")


# ---------------------------------------------------------------------------------------------------------------
# import and update


def test_import_updates_the_matched_profile_and_keeps_other_fields(api):
    for fmt in FORMATS:
        pid = api.add_profile(f"ann.{fmt}@example.com", _fname="Ann", city="Riga", card_no=1)
        r = api.call("profiles/import", fmt=fmt, db_id=1, matching="email", email=f"ANN.{fmt}@example.com",
                     data={"_lname": "Lee", "city": "Oslo"})
        assert r.status == 200 and set(r.body) == {"error", "error_text", "profile_id"}, r.body
        assert r.body["profile_id"] == pid
        d = get(api, matching="profile_id", profile_id=pid).data
        assert (d["_fname"], d["_lname"], d["city"], d["card_no"]) == ("Ann", "Lee", "Oslo", 1)


def test_import_and_get_without_matching_match_by_email(api):
    for fmt in FORMATS:
        pid = api.add_profile(f"ann.{fmt}@example.com")
        r = api.call("profiles/import", fmt=fmt, db_id=1, email=f"ann.{fmt}@example.com", data={"_fname": "Ann"})
        assert r.status == 200 and r.body["profile_id"] == pid, r.body
        r = api.call("profiles/get", fmt=fmt, db_id=1, email=f"ann.{fmt}@example.com")
        assert r.status == 200 and r.data["_fname"] == "Ann", r.body


def test_import_creates_a_profile_carrying_the_lookup_value_when_none_matches(api):
    for fmt in FORMATS:
        r = api.call("profiles/import", fmt=fmt, db_id=1, matching="email", email=f"new.{fmt}@example.com",
                     data={"_fname": "New"})
        assert r.status == 200, r.body
        d = get(api, matching="email", email=f"new.{fmt}@example.com").data
        assert d["id"] == r.body["profile_id"] and d["_fname"] == "New" and d["email"] == f"new.{fmt}@example.com"
    r = api.call("profiles/import", db_id=1, matching="phone", phone="+7 (912) 345-67-89", data={"_fname": "P"})
    assert r.status == 200, r.body
    d = get(api, matching="phone", phone="+79123456789").data
    assert d["id"] == r.body["profile_id"] and d["phones"] == ["+79123456789"] and d["email"] is None
    r = api.call("profiles/import", db_id=1, matching="custom", field_name="card_no", field_value="777",
                 data={"email": "c@example.com"})
    assert r.status == 200, r.body
    d = get(api, matching="custom", field_name="card_no", field_value=777).data
    assert d["id"] == r.body["profile_id"] and d["card_no"] == 777 and d["email"] == "c@example.com"


def test_import_twice_with_the_same_lookup_gives_one_profile(api):
    first = api.call("profiles/import", db_id=1, matching="email", email="x@example.com", data={"city": "A"})
    second = api.call("profiles/import", fmt="xml", db_id=1, matching="email", email=" X@example.com",
                      data={"city": "B"})
    assert first.status == second.status == 200
    assert first.body["profile_id"] == second.body["profile_id"]
    assert get(api, matching="email", email="x@example.com").data["city"] == "B"


def test_update_changes_the_matched_profile_and_matching_follows_the_new_values(api):
    for fmt in FORMATS:
        pid = api.add_profile(f"old.{fmt}@example.com", phones=[f"+1 555 010{len(fmt)}"])
        r = api.call("profiles/update", fmt=fmt, db_id=1, matching="phone", phone=f"+1-555-010{len(fmt)}",
                     data={"_fname": "Ann", "phones": [f"+1 555 019{len(fmt)}"], "card_no": "42",
                           "email": f"New.{fmt}@Example.com"})
        assert r.status == 200 and r.body["profile_id"] == pid, r.body
        d = get(api, matching="email", email=f"new.{fmt}@example.com").data
        assert d["id"] == pid
        assert d["_fname"] == "Ann" and d["phones"] == [f"+1555019{len(fmt)}"] and d["card_no"] == 42
        assert get(api, matching="phone", phone=f"+1555010{len(fmt)}").status == 404
        assert get(api, matching="email", email=f"old.{fmt}@example.com").status == 404


def test_update_of_an_unmatched_profile_is_404_and_invalid_data_changes_nothing(api):
    for fmt in FORMATS:
        r = api.call("profiles/update", fmt=fmt, db_id=1, matching="email", email="ghost@example.com",
                     data={"_fname": "Ghost"})
        assert_error(r, 404, "profile_not_found")
    assert get(api, matching="email", email="ghost@example.com").status == 404
    api.add_profile("ann@example.com", city="Riga")
    r = api.call("profiles/update", db_id=1, matching="email", email="ann@example.com",
                 data={"city": "Oslo", "card_no": "not a number"})
    assert_error(r, 400, "invalid_parameter", "card_no")
    assert get(api, matching="email", email="ann@example.com").data["city"] == "Riga"
