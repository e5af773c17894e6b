"""The ledger endpoints on the wire (altcraft-api.md §1, §2, §4, §5.3–5.8): response shapes in JSON and XML, and
every error row these endpoints can produce.

The ledger's own refusals (insufficient points, transaction states, duplicate eids) are also worked through on
both stores in tests/scenarios/test_ledger_examples.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from defusedxml.ElementTree import fromstring
from fastapi.testclient import TestClient

from loyalty.api.app import create_app
from loyalty.services import programfile, tokens
from loyalty.services.demo import example_path
from loyalty.services.programfile_schema import validate_document
from loyalty.services.verify import verify_all
from tests.conftest import make_runtime
from tests.helpers import ApiClient

ANN = "ann@example.com"
PROGRAM = 123
WHO = {"loyalty_program_id": PROGRAM, "matching": "email", "email": ANN}
FORMATS = ["json", "xml"]
MOVES = ["loyalty/accrue_points", "loyalty/redeeme_points", "loyalty/redeem_points"]
TXN_REFS = ["loyalty/commit_transaction", "loyalty/rollback_transaction", "loyalty/cancel_transaction"]
MEMBER_ENDPOINTS = MOVES + ["loyalty/account/balance"]
ALL_ENDPOINTS = MOVES + TXN_REFS + ["loyalty/account/balance"]
NO_SUCH_TXN = "0190b6a4-0000-7000-8000-000000000000"

# The ledger's behaviour is run on both stores by tests/scenarios/test_ledger_examples.py; this file checks the
# wire, which does not depend on the store, so it runs on SQLite alone (the shared fixtures cost about a second per
# PostgreSQL test).
pytestmark = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


def ok(reply: Any) -> dict[str, Any]:
    assert reply.status == 200 and reply.error == 0, reply.body
    return reply.data


def fails(reply: Any, status: int, code: str) -> str:
    assert reply.status == status, reply.body
    assert reply.error == status and reply.code == code, reply.body
    assert isinstance(reply.body["error_text"], str) and reply.body["error_text"], reply.body
    assert "Traceback" not in reply.body["error_text"]
    return reply.body["error_text"]


def params_for(endpoint: str, **extra: Any) -> dict[str, Any]:
    """Valid parameters for an endpoint (a transaction reference gets an unknown id)."""
    if endpoint in TXN_REFS:
        return {"transaction_id": NO_SUCH_TXN, **extra}
    if endpoint in MOVES:
        return {**WHO, "amount": "1", **extra}
    return {**WHO, **extra}


def assert_success_shape(reply: Any, fmt: str) -> None:
    """Envelope of a success: error 0 (an int in JSON), the fixed text, the payload in `data`, nothing else."""
    assert reply.status == 200, reply.body
    assert set(reply.body) == {"error", "error_text", "data"}, reply.body
    assert reply.body["error"] == (0 if fmt == "json" else "0")
    assert reply.body["error_text"] == "Successful operation"


def assert_txn_shape(reply: Any, fmt: str, balance: str) -> str:
    assert_success_shape(reply, fmt)
    data = reply.data
    assert set(data) == {"transaction_id", "balance"}, data
    assert data["balance"] == balance
    assert uuid.UUID(data["transaction_id"]).version == 7
    return data["transaction_id"]


@pytest.fixture
def ann(api: Any) -> str:
    api.member(ANN)  # 50 stars of initial balance
    return ANN


@pytest.fixture(autouse=True)
def invariants_hold_after_each_test(rt: Any) -> Any:
    yield
    assert verify_all(rt).problems == []


# --- shapes -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_accrue_points_answers_with_the_transaction_id_and_the_active_balance(api, ann, fmt):
    r = api.call("loyalty/accrue_points", fmt=fmt, **WHO, amount="100.5")
    assert_txn_shape(r, fmt, "150.50")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("endpoint", ["loyalty/redeeme_points", "loyalty/redeem_points"])
def test_redeeming_answers_with_the_transaction_id_and_the_active_balance(api, ann, fmt, endpoint):
    r = api.call(endpoint, fmt=fmt, **WHO, amount="0.5")
    assert_txn_shape(r, fmt, "49.50")
    assert api.balance(ANN)["active_balance"] == "49.50"


@pytest.mark.parametrize("fmt", FORMATS)
def test_commit_transaction_answers_with_the_same_transaction_id_and_the_active_balance(api, ann, fmt):
    held = ok(api.call("loyalty/redeeme_points", fmt=fmt, **WHO, amount="20", is_temp=True))
    assert held["balance"] == "30.00"
    r = api.call("loyalty/commit_transaction", fmt=fmt, transaction_id=held["transaction_id"])
    assert assert_txn_shape(r, fmt, "30.00") == held["transaction_id"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_rollback_transaction_answers_with_the_same_transaction_id_and_the_active_balance(api, ann, fmt):
    held = ok(api.call("loyalty/redeeme_points", fmt=fmt, **WHO, amount="20", is_temp=True,
                       temp_timeout_sec=600))
    r = api.call("loyalty/rollback_transaction", fmt=fmt, transaction_id=held["transaction_id"])
    assert assert_txn_shape(r, fmt, "50.00") == held["transaction_id"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_cancel_transaction_answers_with_the_same_transaction_id_and_the_active_balance(api, ann, fmt):
    accrued = ok(api.call("loyalty/accrue_points", fmt=fmt, **WHO, amount="10", transaction_eid="e-1"))
    r = api.call("loyalty/cancel_transaction", fmt=fmt, transaction_eid="e-1", loyalty_program_id=PROGRAM)
    assert assert_txn_shape(r, fmt, "50.00") == accrued["transaction_id"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_account_balance_answers_with_the_five_balances_at_the_currency_precision(api, ann, fmt):
    ok(api.call("loyalty/redeeme_points", **WHO, amount="20", is_temp=True))
    ok(api.call("loyalty/accrue_points", **WHO, amount="5", is_temp=True))
    r = api.call("loyalty/account/balance", fmt=fmt, **WHO)
    assert_success_shape(r, fmt)
    assert r.data == {"total_balance": "50.00", "active_balance": "30.00", "pending_balance": "0.00",
                      "held_balance": "20.00", "temp_accrued_balance": "5.00"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_amounts_of_a_currency_with_precision_0_are_written_without_decimals(api, ann, fmt):
    r = api.call("loyalty/accrue_points", fmt=fmt, **WHO, amount="12", points_currency_iid=2)
    assert_txn_shape(r, fmt, "12")
    r = api.call("loyalty/account/balance", fmt=fmt, **WHO, points_currency_eid="status_points")
    assert r.data == {"total_balance": "12", "active_balance": "12", "pending_balance": "0",
                      "held_balance": "0", "temp_accrued_balance": "0"}


def test_an_xml_answer_is_an_xml_root_with_the_envelope_and_data_as_children(api, ann):
    from loyalty.api import xmlcodec

    body = xmlcodec.render({"token": api.token, **WHO, "amount": "1"})
    resp = api.raw("loyalty/accrue_points", body, {"Content-Type": "application/xml"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/xml")
    root = fromstring(resp.content)
    assert root.tag == "xml"
    assert [child.tag for child in root] == ["error", "error_text", "data"]
    assert [child.tag for child in root.find("data")] == ["transaction_id", "balance"]
    assert root.findtext("data/balance") == "51.00"


def test_an_xml_request_carries_temp_flags_and_dates_as_text(api, ann, clock):
    r = api.call("loyalty/redeeme_points", fmt="xml", **WHO, amount="10", is_temp="true", temp_timeout_sec="60")
    assert ok(r)["balance"] == "40.00"
    r = api.call("loyalty/accrue_points", fmt="xml", **WHO, amount="10", activation_date="2025-02-01T00:00:00+03:00")
    assert ok(r)["balance"] == "40.00"
    assert api.balance(ANN) == {"total_balance": "60.00", "active_balance": "40.00", "pending_balance": "10.00",
                                "held_balance": "10.00", "temp_accrued_balance": "0.00"}


def test_a_balance_is_zero_in_a_currency_never_used(api, ann):
    assert api.balance(ANN, points_currency_iid=2) == {
        "total_balance": "0", "active_balance": "0", "pending_balance": "0", "held_balance": "0",
        "temp_accrued_balance": "0"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_failure_carries_error_error_text_and_error_code_with_the_matching_http_status(api, ann, fmt):
    r = api.call("loyalty/redeeme_points", fmt=fmt, **WHO, amount="60")
    assert r.status == 422
    assert set(r.body) == {"error", "error_text", "error_code"}, r.body
    assert r.body["error"] == (422 if fmt == "json" else "422")
    assert r.code == "insufficient_points"
    assert "60.00" in r.body["error_text"] and "50.00" in r.body["error_text"]


# --- 400 invalid_request ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, ctype", [
    (b'{"token": ', "application/json"),
    (b'[1, 2]', "application/json"),
    (b'"text"', "application/json"),
    (b'<xml><token>', "application/xml"),
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><xml><amount>&e;</amount></xml>', "application/xml"),
], ids=["broken-json", "json-array", "json-string", "broken-xml", "xml-with-dtd"])
def test_a_body_that_is_not_an_object_is_an_invalid_request(api, body, ctype):
    for endpoint in ALL_ENDPOINTS:
        resp = api.raw(endpoint, body, {"Content-Type": ctype, "Authorization": f"Bearer {api.token}"})
        assert resp.status_code == 400, (endpoint, resp.text)
        assert "invalid_request" in resp.text, (endpoint, resp.text)


# --- 400 missing_parameter --------------------------------------------------------------------------------------

def test_a_missing_program_id_is_named(api, ann):
    for endpoint in MEMBER_ENDPOINTS:
        params = params_for(endpoint)
        del params["loyalty_program_id"]
        assert "loyalty_program_id" in fails(api.call(endpoint, **params), 400, "missing_parameter")


def test_a_missing_matching_is_named(api, ann):
    for endpoint in MEMBER_ENDPOINTS:
        params = params_for(endpoint)
        del params["matching"]
        assert "matching" in fails(api.call(endpoint, **params), 400, "missing_parameter")


def test_a_missing_lookup_field_of_the_chosen_matching_is_named(api, ann):
    for endpoint in MEMBER_ENDPOINTS:
        for matching, field in [("email", "email"), ("phone", "phone"), ("profile_id", "profile_id"),
                                ("custom", "field_name")]:
            params = params_for(endpoint, matching=matching)
            del params["email"]
            assert field in fails(api.call(endpoint, **params), 400, "missing_parameter")


def test_a_missing_amount_is_named(api, ann):
    for endpoint in MOVES:
        params = params_for(endpoint)
        del params["amount"]
        assert "amount" in fails(api.call(endpoint, **params), 400, "missing_parameter")


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_transaction_reference_without_id_or_eid_is_refused(api, fmt):
    for endpoint in TXN_REFS:
        text = fails(api.call(endpoint, fmt=fmt, loyalty_program_id=PROGRAM), 400, "missing_parameter")
        assert "transaction_id" in text


# --- 400 invalid_parameter --------------------------------------------------------------------------------------

def test_wrongly_typed_or_unknown_values_are_invalid_parameters(api, ann):
    for endpoint in MEMBER_ENDPOINTS:
        fails(api.call(endpoint, **params_for(endpoint, loyalty_program_id="one")), 400, "invalid_parameter")
        fails(api.call(endpoint, **params_for(endpoint, matching="telepathy")), 400, "invalid_parameter")
        fails(api.call(endpoint, **params_for(endpoint, points_currency_iid="first")), 400, "invalid_parameter")
    for endpoint in MOVES:
        fails(api.call(endpoint, **params_for(endpoint, is_temp="maybe")), 400, "invalid_parameter")
        fails(api.call(endpoint, **params_for(endpoint, external_data="not an object")), 400,
              "invalid_parameter")
    for endpoint in TXN_REFS:
        fails(api.call(endpoint, transaction_id=NO_SUCH_TXN, loyalty_program_id="x"), 400, "invalid_parameter")
    assert api.balance(ANN)["total_balance"] == "50.00"


def test_amounts_that_are_not_positive_or_too_precise_are_invalid_parameters(api, ann):
    for endpoint in MOVES:
        for amount in ["0", "-1", "1.005", "abc"]:
            text = fails(api.call(endpoint, **params_for(endpoint, amount=amount)), 400, "invalid_parameter")
            assert "amount" in text
        fails(api.call(endpoint, **params_for(endpoint, amount="1.5", points_currency_iid=2)), 400,
              "invalid_parameter")
    assert api.balance(ANN)["total_balance"] == "50.00"


def test_a_temp_timeout_outside_1_to_604800_seconds_is_an_invalid_parameter(api, ann):
    for endpoint in MOVES:
        for timeout in (0, -1, 604801):
            text = fails(api.call(endpoint, **params_for(endpoint, is_temp=True, temp_timeout_sec=timeout)), 400,
                         "invalid_parameter")
            assert "temp_timeout_sec" in text
        ok(api.call(endpoint, **params_for(endpoint, is_temp=True, temp_timeout_sec=604800)))


def test_dates_without_an_offset_or_not_dates_are_invalid_parameters(api, ann):
    for name in ("activation_date", "expiration_date", "created_at"):
        for value in ("2025-03-01T00:00:00", "2025-03-01", "soon"):
            text = fails(api.call("loyalty/accrue_points", **WHO, amount="1", **{name: value}), 400,
                         "invalid_parameter")
            assert name in text
    fails(api.call("loyalty/redeeme_points", **WHO, amount="1", created_at="2025-03-01T00:00:00"), 400,
          "invalid_parameter")


def test_an_expiration_date_not_after_the_activation_date_is_an_invalid_parameter(api, ann):
    r = api.call("loyalty/accrue_points", **WHO, amount="1", activation_date="2025-03-01T00:00:00Z",
                 expiration_date="2025-02-01T00:00:00Z")
    assert "expiration_date" in fails(r, 400, "invalid_parameter")
    r = api.call("loyalty/accrue_points", **WHO, amount="1", expiration_date="2025-01-01T00:00:00Z")
    assert "expiration_date" in fails(r, 400, "invalid_parameter")


def test_currency_ids_that_disagree_are_an_invalid_parameter(api, ann):
    for endpoint in MEMBER_ENDPOINTS:
        fails(api.call(endpoint, **params_for(endpoint, points_currency_iid=1, points_currency_eid="status_points")),
              400, "invalid_parameter")


def test_a_body_token_and_a_header_token_that_disagree_are_refused(api, ann):
    for endpoint in ALL_ENDPOINTS:
        resp = api.client.post(f"/api/v1.1/{endpoint}", json={"token": api.token, **params_for(endpoint)},
                               headers={"Authorization": "Bearer lty_someone_else"})
        assert resp.status_code == 400, resp.text


def test_the_token_may_come_in_the_authorization_header(api, ann):
    resp = api.client.post("/api/v1.1/loyalty/account/balance", json=WHO,
                           headers={"Authorization": f"Bearer {api.token}"})
    assert resp.status_code == 200 and resp.json()["data"]["active_balance"] == "50.00"


# --- 401 / 403 --------------------------------------------------------------------------------------------------

def test_a_request_without_a_token_is_unauthorised(api, ann):
    for endpoint in ALL_ENDPOINTS:
        fails(api.call(endpoint, token=None, **params_for(endpoint)), 401, "token_missing")


def test_an_unknown_or_revoked_token_is_refused(api, rt, ann):
    raw, info = tokens.create(rt, "soon-revoked", ["admin"])
    tokens.revoke(rt, str(info.id))
    for endpoint in ALL_ENDPOINTS:
        fails(api.call(endpoint, token="lty_not_a_real_token", **params_for(endpoint)), 403, "token_invalid")
        fails(api.call(endpoint, token=raw, **params_for(endpoint)), 403, "token_invalid")


def test_a_read_only_token_may_read_the_balance_but_not_move_points(api, rt, ann):
    raw, _ = tokens.create(rt, "reader", ["loyalty:read"])
    assert ok(api.call("loyalty/account/balance", token=raw, **WHO))["active_balance"] == "50.00"
    for endpoint in MOVES + TXN_REFS:
        fails(api.call(endpoint, token=raw, **params_for(endpoint)), 403, "forbidden")
    assert api.balance(ANN)["total_balance"] == "50.00"


def test_a_token_scoped_to_another_program_is_forbidden(api, rt, ann):
    spec, problems = validate_document({
        "databases": [{"id": 2, "name": "Shop"}],
        "programs": [{"id": 200, "name": "Coins", "database": 2,
                      "currencies": [{"iid": 1, "eid": "coins", "name": "Coins", "default": True}]}],
    })
    assert spec is not None, problems
    programfile.apply_spec(rt, spec)
    raw, _ = tokens.create(rt, "coins-only", ["admin"], programs=[200])
    accrued = ok(api.call("loyalty/accrue_points", **WHO, amount="1", is_temp=True))
    for endpoint in MEMBER_ENDPOINTS:
        fails(api.call(endpoint, token=raw, **params_for(endpoint)), 403, "forbidden")
    for endpoint in TXN_REFS:
        r = api.call(endpoint, token=raw, transaction_id=accrued["transaction_id"])
        assert r.status in (403, 404) and r.code in ("forbidden", "transaction_not_found"), r.body
    assert api.balance(ANN)["temp_accrued_balance"] == "1.00"


# --- 404 --------------------------------------------------------------------------------------------------------

def test_an_unknown_program_is_not_found(api, ann):
    for endpoint in MEMBER_ENDPOINTS:
        fails(api.call(endpoint, **params_for(endpoint, loyalty_program_id=999)), 404, "program_not_found")


def test_an_unknown_currency_is_not_found(api, ann):
    for endpoint in MEMBER_ENDPOINTS:
        fails(api.call(endpoint, **params_for(endpoint, points_currency_iid=7)), 404, "currency_not_found")
        fails(api.call(endpoint, **params_for(endpoint, points_currency_eid="moons")), 404, "currency_not_found")


def test_a_lookup_that_matches_no_profile_is_not_found(api, ann):
    for endpoint in MEMBER_ENDPOINTS:
        fails(api.call(endpoint, **params_for(endpoint, email="nobody@example.com")), 404, "profile_not_found")
        fails(api.call(endpoint, **params_for(endpoint, matching="profile_id", profile_id="0" * 24)), 404,
              "profile_not_found")


def test_a_profile_that_is_not_a_member_is_not_a_member(api, ann):
    api.add_profile("outsider@example.com")
    for endpoint in MEMBER_ENDPOINTS:
        fails(api.call(endpoint, **params_for(endpoint, email="outsider@example.com")), 404, "not_a_member")


def test_a_removed_member_is_not_a_member(api, ann):
    ok_remove = api.call("loyalty/delete_member", **WHO)
    assert ok_remove.status == 200, ok_remove.body
    for endpoint in MEMBER_ENDPOINTS:
        fails(api.call(endpoint, **params_for(endpoint)), 404, "not_a_member")


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_unknown_transaction_is_not_found(api, ann, fmt):
    for endpoint in TXN_REFS:
        fails(api.call(endpoint, fmt=fmt, transaction_id=NO_SUCH_TXN), 404, "transaction_not_found")
        fails(api.call(endpoint, fmt=fmt, transaction_eid="never-used"), 404, "transaction_not_found")


def test_a_transaction_of_another_program_is_not_found_under_that_program(api, ann):
    accrued = ok(api.call("loyalty/accrue_points", **WHO, amount="1", is_temp=True, transaction_eid="e-1"))
    for endpoint in TXN_REFS:
        fails(api.call(endpoint, transaction_id=accrued["transaction_id"], loyalty_program_id=999), 404,
              "transaction_not_found")
        fails(api.call(endpoint, transaction_eid="e-1", loyalty_program_id=999), 404, "transaction_not_found")
    assert api.balance(ANN)["temp_accrued_balance"] == "1.00"


# --- 409 --------------------------------------------------------------------------------------------------------

def test_a_lookup_that_matches_several_profiles_is_ambiguous(api, ann):
    for email in ("p1@example.com", "p2@example.com"):
        api.member(email, phones=["+7 900 000-00-01"])
    for endpoint in MEMBER_ENDPOINTS:
        fails(api.call(endpoint, **params_for(endpoint, matching="phone", phone="+79000000001")), 409,
              "ambiguous_match")


def test_a_reused_transaction_eid_with_another_payload_is_a_conflict(api, ann):
    ok(api.call("loyalty/accrue_points", **WHO, amount="1", transaction_eid="e-1"))
    for endpoint in MOVES:
        fails(api.call(endpoint, **WHO, amount="2", transaction_eid="e-1"), 409, "duplicate_transaction_eid")
    assert api.balance(ANN)["active_balance"] == "51.00"


def test_an_operation_the_transaction_state_forbids_is_a_conflict_that_names_the_state(api, ann):
    held = ok(api.call("loyalty/redeeme_points", **WHO, amount="1", is_temp=True))
    ok(api.call("loyalty/commit_transaction", transaction_id=held["transaction_id"]))
    text = fails(api.call("loyalty/rollback_transaction", transaction_id=held["transaction_id"]), 409,
                 "transaction_state")
    assert "committed" in text
    other = ok(api.call("loyalty/redeeme_points", **WHO, amount="1", is_temp=True))
    ok(api.call("loyalty/rollback_transaction", transaction_id=other["transaction_id"]))
    for endpoint in ("loyalty/commit_transaction", "loyalty/cancel_transaction"):
        text = fails(api.call(endpoint, transaction_id=other["transaction_id"]), 409, "transaction_state")
        assert "rolled_back" in text


def test_moving_points_in_an_archived_program_is_a_conflict(api, rt, ann):
    doc = {"programs": [{"id": 123, "name": "Stars", "external_id": "stars_program", "database": 1,
                         "status": "archived",
                         "currencies": [{"iid": 1, "eid": "stars", "name": "Stars", "kind": "standard",
                                         "precision": 2, "initial_balance": "50", "lifetime": {"days": 365},
                                         "default": True},
                                        {"iid": 2, "eid": "status_points", "name": "Status points",
                                         "kind": "qualification", "precision": 0, "lifetime": "never"}]}]}
    spec, problems = validate_document(doc)
    assert spec is not None, problems
    programfile.apply_spec(rt, spec)
    for endpoint in MOVES:
        fails(api.call(endpoint, **params_for(endpoint)), 409, "program_inactive")
    assert ok(api.call("loyalty/account/balance", **WHO))["active_balance"] == "50.00"


# --- 413, 422, 429 ----------------------------------------------------------------------------------------------

def test_a_body_over_the_size_limit_is_refused(api, ann):
    big = {"token": api.token, **WHO, "amount": "1", "external_data": {"pad": "x" * (1024 * 1024 + 1)}}
    for endpoint in ALL_ENDPOINTS:
        resp = api.client.post(f"/api/v1.1/{endpoint}", json=big)
        assert resp.status_code == 413 and resp.json()["error_code"] == "payload_too_large", resp.text
    assert api.balance(ANN)["total_balance"] == "50.00"


@pytest.mark.parametrize("fmt", FORMATS)
def test_redeeming_more_than_the_active_balance_is_unprocessable(api, ann, fmt):
    for endpoint in ("loyalty/redeeme_points", "loyalty/redeem_points"):
        text = fails(api.call(endpoint, fmt=fmt, **WHO, amount="50.01"), 422, "insufficient_points")
        assert "50.01" in text and "50.00" in text


def test_a_token_over_its_rate_limit_is_told_to_slow_down(sqlite_url, clock):
    limited = make_runtime(sqlite_url, clock, rate_limit_per_second=0.001, rate_limit_burst=2)
    try:
        programfile.apply_spec(limited, programfile.load(example_path()))
        raw, _ = tokens.create(limited, "slow", ["admin"])
        with TestClient(create_app(limited, run_jobs=False)) as client:
            api = ApiClient(client, raw)
            replies = [api.call("loyalty/account/balance", **WHO) for _ in range(3)]
            assert [r.status for r in replies[:2]] == [404, 404]  # no such profile, but let through
            fails(replies[2], 429, "rate_limited")
    finally:
        limited.close()


# --- promotions (altcraft-api.md §5.3, §4) ----------------------------------------------------------------------

def test_a_promotion_with_a_static_amount_accrues_that_amount(api, ann):
    assert ok(api.call("loyalty/accrue_points", **WHO, promotion_id="welcome_bonus"))["balance"] == "150.00"


def test_an_unknown_promotion_is_not_found(api, ann):
    fails(api.call("loyalty/accrue_points", **WHO, amount="10", promotion_id="999"), 404, "promotion_not_found")


def test_an_amount_outside_the_promotion_bounds_is_unprocessable(api, ann):
    fails(api.call("loyalty/accrue_points", **WHO, amount="5", promotion_id="6"), 422, "amount_out_of_bounds")
    fails(api.call("loyalty/accrue_points", **WHO, amount="99", promotion_id="5"), 422, "amount_out_of_bounds")


def test_a_promotion_used_up_for_the_member_is_a_conflict(api, ann):
    ok(api.call("loyalty/accrue_points", **WHO, promotion_id="5"))
    fails(api.call("loyalty/accrue_points", **WHO, promotion_id="5"), 409, "promotion_limit_reached")


def test_a_promotion_outside_its_dates_is_a_conflict(api, ann, clock):
    from datetime import timedelta

    clock.advance(timedelta(days=365 * 6))  # review_reward ends 2030-12-31
    api.member("late@example.com")
    fails(api.call("loyalty/accrue_points", loyalty_program_id=PROGRAM, matching="email", email="late@example.com",
                   amount="20", promotion_id="review_reward"), 409, "promotion_inactive")
