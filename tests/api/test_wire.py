"""The transport rules of altcraft-api.md §1 and §4 over HTTP: body formats, negotiation, token, envelope, limits.

Every failure is checked for the full envelope: HTTP status == `error`, a non-empty `error_text`, an `error_code`.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty.api import xmlcodec
from loyalty.api.app import create_app
from loyalty.domain.clock import FrozenClock
from loyalty.services import programfile, tokens
from loyalty.services.demo import example_path
from loyalty.services.runtime import Runtime
from tests.conftest import START, make_runtime
from tests.helpers import ApiClient, xml_to_dict

JSON = {"Content-Type": "application/json"}
XML = {"Content-Type": "application/xml"}

SECOND_PROGRAM = """
databases:
  - id: 2
    name: Partners
    fields:
      - {name: code, type: string}
programs:
  - id: 200
    name: Partner points
    external_id: partner_points
    database: 2
    currencies:
      - {iid: 1, eid: pts, name: Points, kind: standard, precision: 0, default: true}
"""


# ---------------------------------------------------------------------------------------------------------------
# helpers


def body_of(resp: Any) -> dict[str, Any]:
    ctype = resp.headers.get("content-type", "")
    if "xml" in ctype:
        return xml_to_dict(resp.content)
    return json.loads(resp.content)


def fmt_of(resp: Any) -> str:
    ctype = resp.headers.get("content-type", "")
    assert "xml" in ctype or "json" in ctype, ctype
    return "xml" if "xml" in ctype else "json"


def assert_failure(resp: Any, status: int, code: str) -> dict[str, Any]:
    body = body_of(resp)
    assert resp.status_code == status, (resp.status_code, body)
    assert int(body["error"]) == status, body
    assert isinstance(body["error_text"], str) and body["error_text"].strip(), body
    assert body["error_code"] == code, body
    assert "Traceback" not in resp.text
    return body


def assert_success(resp: Any) -> dict[str, Any]:
    body = body_of(resp)
    assert resp.status_code == 200, body
    assert int(body["error"]) == 0, body
    assert body["error_text"] == "Successful operation"
    return body


def post(api: ApiClient, endpoint: str, content: bytes | str, headers: dict[str, str] | None = None,
         query: str = "") -> Any:
    if isinstance(content, str):
        content = content.encode("utf-8")
    return api.client.post(f"/api/v1.1/{endpoint}{query}", content=content, headers=headers or JSON)


def json_body(**params: Any) -> bytes:
    return json.dumps(params).encode("utf-8")


def xml_body(**params: Any) -> bytes:
    return xmlcodec.render(params)


def get_params(api: ApiClient, email: str = "ann@example.com", **extra: Any) -> dict[str, Any]:
    return {"token": api.token, "db_id": 1, "matching": "email", "email": email, **extra}


def new_token(rt: Any, roles: list[str], programs: list[int] | None = None) -> str:
    raw, _ = tokens.create(rt, f"t-{'-'.join(roles)}-{programs}-{next(_SEQ)}", roles, programs)
    return raw


_SEQ = itertools.count()


def unique_email() -> str:
    return f"user{next(_SEQ)}@example.com"


@dataclass
class Wire:
    api: ApiClient
    rt: Runtime
    ann: str  # profile id of ann@example.com (_fname Ann) in database 1


def _serve(tmp: Path, template: Path, **settings: Any) -> Iterator[Wire]:
    path = tmp / "wire.db"
    shutil.copy(template, path)
    runtime = make_runtime(f"sqlite:///{path}", FrozenClock(START), **settings)
    programfile.apply_spec(runtime, programfile.load(example_path()))
    second = tmp / "second.yaml"
    second.write_text(SECOND_PROGRAM, encoding="utf-8")
    programfile.apply_spec(runtime, programfile.load(second))
    raw, _ = tokens.create(runtime, "wire-admin", ["admin"])
    with TestClient(create_app(runtime, run_jobs=False)) as client:
        api = ApiClient(client, raw)
        yield Wire(api, runtime, api.add_profile("ann@example.com", _fname="Ann"))
    runtime.close()


@pytest.fixture(scope="module")
def wire(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wire]:
    """Transport rules do not depend on the store: one SQLite-backed app serves this module's transport tests.
    Tests that could differ per store (values reaching SQL) use the `api` fixture and run on both stores."""
    yield from _serve(tmp_path_factory.mktemp("wire"), sqlite_template)


@pytest.fixture(scope="module")
def small(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wire]:
    """An app whose body limit is 1024 bytes (the smallest the settings allow)."""
    yield from _serve(tmp_path_factory.mktemp("small"), sqlite_template, max_body_bytes=1024)


# ---------------------------------------------------------------------------------------------------------------
# body format and response negotiation


def encode(fmt: str, params: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return (json_body(**params), JSON) if fmt == "json" else (xml_body(**params), XML)


def test_json_body_gets_a_json_response(wire):
    resp = post(wire.api, "profiles/get", json_body(**get_params(wire.api)))
    assert fmt_of(resp) == "json"
    assert assert_success(resp)["data"]["id"] == wire.ann


@pytest.mark.parametrize("ctype", ["application/xml", "text/xml", "application/xml; charset=utf-8"])
def test_xml_body_gets_an_xml_response(wire, ctype):
    resp = post(wire.api, "profiles/get", xml_body(**get_params(wire.api)), {"Content-Type": ctype})
    assert fmt_of(resp) == "xml"
    assert resp.content.lstrip().startswith(b"<?xml")
    assert assert_success(resp)["data"]["id"] == wire.ann


@pytest.mark.parametrize("accept", ["application/xml", "text/xml", "application/xml, */*;q=0.1"])
def test_accept_header_asking_for_xml_turns_a_json_request_into_an_xml_response(wire, accept):
    resp = post(wire.api, "profiles/get", json_body(**get_params(wire.api)), {**JSON, "Accept": accept})
    assert fmt_of(resp) == "xml"
    assert assert_success(resp)["data"]["id"] == wire.ann


def test_accept_header_asking_for_json_turns_an_xml_request_into_a_json_response(wire):
    resp = post(wire.api, "profiles/get", xml_body(**get_params(wire.api)), {**XML, "Accept": "application/json"})
    assert fmt_of(resp) == "json"
    assert assert_success(resp)["data"]["id"] == wire.ann


def test_accept_any_keeps_the_body_format(wire):
    for fmt in ("json", "xml"):
        body, headers = encode(fmt, get_params(wire.api))
        resp = post(wire.api, "profiles/get", body, {**headers, "Accept": "*/*"})
        assert fmt_of(resp) == fmt
        assert assert_success(resp)["data"]["id"] == wire.ann


@pytest.mark.parametrize(("body_fmt", "wanted"), [("json", "xml"), ("xml", "json")])
def test_format_param_in_the_body_picks_the_response_format(wire, body_fmt, wanted):
    body, headers = encode(body_fmt, get_params(wire.api, format=wanted))
    resp = post(wire.api, "profiles/get", body, headers)
    assert fmt_of(resp) == wanted
    assert assert_success(resp)["data"]["email"] == "ann@example.com"


@pytest.mark.parametrize(("body_fmt", "wanted"), [("json", "xml"), ("xml", "json")])
def test_format_param_in_the_query_string_picks_the_response_format(wire, body_fmt, wanted):
    body, headers = encode(body_fmt, get_params(wire.api))
    resp = post(wire.api, "profiles/get", body, headers, query=f"?format={wanted}")
    assert fmt_of(resp) == wanted
    assert assert_success(resp)["data"]["id"] == wire.ann


def test_errors_are_answered_in_the_negotiated_format(wire):
    api = wire.api
    resp = post(api, "profiles/get", xml_body(db_id=1, matching="email", email="x@example.com"), XML)
    assert fmt_of(resp) == "xml"
    assert_failure(resp, 401, "token_missing")
    resp = post(api, "profiles/get", json_body(db_id=1), {**JSON, "Accept": "application/xml"})
    assert fmt_of(resp) == "xml"
    assert_failure(resp, 401, "token_missing")
    resp = post(api, "profiles/get", json_body(**get_params(api, email="nobody@example.com")), query="?format=xml")
    assert fmt_of(resp) == "xml"
    assert_failure(resp, 404, "profile_not_found")
    resp = post(api, "profiles/get", xml_body(**get_params(api, email="nobody@example.com", format="json")), XML)
    assert fmt_of(resp) == "json"
    assert_failure(resp, 404, "profile_not_found")


def test_malformed_xml_is_answered_in_xml(wire):
    resp = post(wire.api, "profiles/get", b"<xml><token>abc</xml>", XML)
    assert fmt_of(resp) == "xml"
    assert_failure(resp, 400, "invalid_request")


# ---------------------------------------------------------------------------------------------------------------
# token


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_token_from_authorization_bearer_header_is_accepted(wire, fmt):
    params = {k: v for k, v in get_params(wire.api).items() if k != "token"}
    body, headers = encode(fmt, params)
    resp = post(wire.api, "profiles/get", body, {**headers, "Authorization": f"Bearer {wire.api.token}"})
    assert assert_success(resp)["data"]["id"] == wire.ann
    # the scheme name is case-insensitive
    resp = post(wire.api, "profiles/get", body, {**headers, "Authorization": f"bearer {wire.api.token}"})
    assert assert_success(resp)["data"]["id"] == wire.ann


def test_same_token_in_body_and_header_is_accepted(wire):
    resp = post(wire.api, "profiles/get", json_body(**get_params(wire.api)),
                {**JSON, "Authorization": f"Bearer {wire.api.token}"})
    assert assert_success(resp)["data"]["id"] == wire.ann


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_different_tokens_in_body_and_header_are_refused_with_400(wire, fmt):
    other = new_token(wire.rt, ["admin"])  # both valid: the disagreement alone is the error
    body, headers = encode(fmt, get_params(wire.api))
    resp = post(wire.api, "profiles/get", body, {**headers, "Authorization": f"Bearer {other}"})
    assert_failure(resp, 400, "invalid_parameter")
    assert fmt_of(resp) == fmt


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_no_token_anywhere_is_401_token_missing(wire, fmt):
    r = wire.api.call("profiles/get", fmt=fmt, token=None, db_id=1, matching="email", email="ann@example.com")
    assert r.status == 401 and r.error == 401 and r.code == "token_missing"
    assert r.body["error_text"]


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer "}, {"Authorization": "Basic abc"},
                                     {"Authorization": ""}, {}])
def test_empty_token_or_other_auth_scheme_counts_as_missing(wire, headers):
    resp = post(wire.api, "profiles/get", json_body(token="", db_id=1, matching="email", email="a@example.com"),
                {**JSON, **headers})
    assert_failure(resp, 401, "token_missing")


def test_empty_body_is_401_token_missing(wire):
    assert_failure(post(wire.api, "profiles/get", b""), 401, "token_missing")


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_unknown_token_is_403_token_invalid(wire, fmt):
    r = wire.api.call("profiles/get", fmt=fmt, token="lty_not-a-real-token", db_id=1, matching="email",
                      email="ann@example.com")
    assert r.status == 403 and r.error == 403 and r.code == "token_invalid"
    resp = post(wire.api, "profiles/get", json_body(db_id=1, matching="email", email="ann@example.com"),
                {**JSON, "Authorization": "Bearer lty_nope"})
    assert_failure(resp, 403, "token_invalid")


def test_revoked_token_is_403_token_invalid(wire):
    raw, info = tokens.create(wire.rt, "soon-revoked", ["admin"])
    assert wire.api.call("profiles/get", token=raw, db_id=1, matching="email", email="ann@example.com").status == 200
    tokens.revoke(wire.rt, str(info.id))
    r = wire.api.call("profiles/get", token=raw, db_id=1, matching="email", email="ann@example.com")
    assert r.status == 403 and r.code == "token_invalid"


def test_non_string_body_token_is_invalid_parameter(wire):
    resp = post(wire.api, "profiles/get", json_body(token=12345, db_id=1, matching="email", email="a@b.cd"))
    assert_failure(resp, 400, "invalid_parameter")


@pytest.mark.parametrize(
    ("roles", "endpoint", "params"),
    [
        (["loyalty:read"], "loyalty/register_member",
         {"loyalty_program_id": 123, "matching": "email", "email": "ann@example.com"}),
        (["loyalty:read"], "loyalty/delete_member",
         {"loyalty_program_id": 123, "matching": "email", "email": "ann@example.com"}),
        (["loyalty:read"], "loyalty/accrue_points",
         {"loyalty_program_id": 123, "matching": "email", "email": "ann@example.com", "amount": "1"}),
        (["profiles:write"], "loyalty/register_member",
         {"loyalty_program_id": 123, "matching": "email", "email": "ann@example.com"}),
        (["profiles:write"], "loyalty/account/balance",
         {"loyalty_program_id": 123, "matching": "email", "email": "ann@example.com"}),
        (["loyalty:write"], "profiles/add", {"db_id": 1, "data": {"email": "new@example.com"}}),
        (["loyalty:read"], "profiles/import", {"db_id": 1, "email": "ann@example.com", "data": {"_fname": "X"}}),
        (["loyalty:write"], "profiles/update",
         {"db_id": 1, "matching": "email", "email": "ann@example.com", "data": {"_fname": "X"}}),
    ],
)
def test_token_lacking_the_role_is_403_forbidden(wire, roles, endpoint, params):
    r = wire.api.call(endpoint, token=new_token(wire.rt, roles), **params)
    assert r.status == 403 and r.error == 403 and r.code == "forbidden", r.body
    r = wire.api.call("profiles/get", db_id=1, matching="email", email="ann@example.com")
    assert r.data["_fname"] == "Ann"  # nothing was changed
    assert wire.api.call("profiles/get", db_id=1, matching="email", email="new@example.com").status == 404


def test_roles_allow_what_they_name(wire):
    api, rt = wire.api, wire.rt
    read, write, profiles_ = (new_token(rt, ["loyalty:read"]), new_token(rt, ["loyalty:write"]),
                              new_token(rt, ["profiles:write"]))
    email = unique_email()
    assert api.call("profiles/add", token=profiles_, db_id=1, data={"email": email}).status == 200
    r = api.call("loyalty/register_member", token=write, loyalty_program_id=123, matching="email", email=email)
    assert r.status == 200, r.body
    r = api.call("loyalty/account/balance", token=read, loyalty_program_id=123, matching="email", email=email)
    assert r.status == 200 and r.data["active_balance"] == "50.00"
    assert api.call("profiles/get", token=read, db_id=1, matching="email", email=email).status == 200


def test_token_scoped_to_another_program_is_403_forbidden(wire):
    api = wire.api
    scoped = new_token(wire.rt, ["admin"], [200])
    r = api.call("loyalty/register_member", token=scoped, loyalty_program_id=123, matching="email",
                 email="ann@example.com")
    assert r.status == 403 and r.code == "forbidden"
    # ... and the database of that other program is out of reach too
    r = api.call("profiles/get", token=scoped, db_id=1, matching="email", email="ann@example.com")
    assert r.status == 403 and r.code == "forbidden"
    r = api.call("profiles/add", token=scoped, db_id=1, data={"email": "eve@example.com"})
    assert r.status == 403 and r.code == "forbidden"
    # ... and it does not learn whether some other program exists
    r = api.call("loyalty/register_member", token=scoped, loyalty_program_id=999, matching="email",
                 email="ann@example.com")
    assert r.status == 403 and r.code == "forbidden"
    # its own program and database work
    email = unique_email()
    assert api.call("profiles/add", token=scoped, db_id=2, data={"email": email}).status == 200
    r = api.call("loyalty/register_member", token=scoped, loyalty_program_id=200, matching="email", email=email)
    assert r.status == 200, r.body


# ---------------------------------------------------------------------------------------------------------------
# body size


def test_body_within_the_limit_is_served(small):
    email = unique_email()
    body = json_body(token=small.api.token, db_id=1, data={"email": email, "city": "x" * 450})
    assert len(body) <= 1024
    assert assert_success(post(small.api, "profiles/add", body))["profile_id"]


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_body_over_the_limit_is_413_payload_too_large(small, fmt):
    email = unique_email()
    body, headers = encode(fmt, {"token": small.api.token, "db_id": 1, "data": {"email": email, "city": "x" * 2000}})
    assert_failure(post(small.api, "profiles/add", body, headers), 413, "payload_too_large")
    assert small.api.call("profiles/get", db_id=1, matching="email", email=email).status == 404  # nothing created


def test_chunked_body_over_the_limit_without_content_length_is_413(small):
    def stream() -> Iterator[bytes]:
        yield b'{"db_id": 1, "data": {"email": "chunked@example.com"}, "pad": "'
        for _ in range(8):
            yield b" " * 512
        yield b'"}'

    resp = small.api.client.post("/api/v1.1/profiles/add", content=stream(), headers=JSON)
    assert "content-length" not in {k.lower() for k in resp.request.headers}
    assert_failure(resp, 413, "payload_too_large")


def test_payload_too_large_is_answered_in_the_request_format(small):
    body = xml_body(token=small.api.token, db_id=1, data={"email": "big@example.com", "city": "x" * 2000})
    resp = post(small.api, "profiles/add", body, XML)
    assert_failure(resp, 413, "payload_too_large")
    assert fmt_of(resp) == "xml"


# ---------------------------------------------------------------------------------------------------------------
# malformed bodies


@pytest.mark.parametrize(
    "content",
    [b"{", b'{"token": }', b"not json", b'{"a": 1} trailing', b"\xff\xfe\x00{", b'{"amount": NaN}',
     b'{"amount": Infinity}', b"{'single': 'quotes'}", b'{"token": "\xff"}'],
)
def test_invalid_json_is_400_invalid_request(wire, content):
    assert_failure(post(wire.api, "profiles/get", content), 400, "invalid_request")


@pytest.mark.parametrize("content", [b"[]", b'[{"token": "x"}]', b"123", b'"text"', b"null", b"true"])
def test_json_body_that_is_not_an_object_is_400_invalid_request(wire, content):
    assert_failure(post(wire.api, "profiles/get", content), 400, "invalid_request")


@pytest.mark.parametrize(
    "content",
    [b"<xml>", b"<xml><token>a</xml>", b"<xml><a></b></xml>", b"<xml>&nbsp;</xml>", b"<<>>", b"text",
     b'<?xml version="1.0"?>', b"<xml></xml><xml></xml>"],
)
def test_malformed_xml_is_400_invalid_request(wire, content):
    assert_failure(post(wire.api, "profiles/get", content, XML), 400, "invalid_request")


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE xml [<!ENTITY e "EXPANDED-SECRET">]>',
        '<!DOCTYPE xml [<!ENTITY e SYSTEM "file:///etc/hostname">]>',
        '<!DOCTYPE xml [<!ENTITY a "EXPANDED-SECRET"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
        '<!ENTITY e "&b;&b;&b;&b;&b;&b;&b;&b;">]>',
        '<!DOCTYPE xml SYSTEM "http://127.0.0.1:9/x.dtd">',
    ],
)
def test_xml_with_dtd_or_entities_is_refused_and_nothing_is_expanded(wire, doctype):
    email = unique_email()
    body = (f'<?xml version="1.0"?>{doctype}<xml><token>{wire.api.token}</token><db_id>1</db_id>'
            f"<data><email>{email}</email><_fname>&e;</_fname></data></xml>")
    resp = post(wire.api, "profiles/add", body, XML)
    assert_failure(resp, 400, "invalid_request")
    assert b"EXPANDED-SECRET" not in resp.content
    r = wire.api.call("profiles/get", db_id=1, matching="email", email=email)
    assert r.status == 404 and r.code == "profile_not_found"


def test_xml_with_a_bare_doctype_is_refused(wire):
    body = f"<!DOCTYPE xml><xml><token>{wire.api.token}</token><db_id>1</db_id></xml>"
    assert_failure(post(wire.api, "profiles/get", body, XML), 400, "invalid_request")


# ---------------------------------------------------------------------------------------------------------------
# parameters


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_unknown_request_fields_are_ignored(wire, fmt):
    api = wire.api
    r = api.call("profiles/get", fmt=fmt, db_id=1, matching="email", email="ann@example.com",
                 phone="+1 555 0100", client_version="7.1", nested={"anything": "goes"})
    assert r.status == 200 and r.data["id"] == wire.ann
    r = api.call("loyalty/register_member", fmt=fmt, loyalty_program_id=123, matching="email",
                 email="ann@example.com", phone="+1 555 0100", unknown_flag=True)
    assert r.status == 200 and r.body["profile_id"] == wire.ann


@pytest.mark.parametrize(
    ("endpoint", "params", "name"),
    [
        ("profiles/get", {"db_id": "abc", "matching": "email", "email": "a@b.cd"}, "db_id"),
        ("profiles/get", {"db_id": 1.5, "matching": "email", "email": "a@b.cd"}, "db_id"),
        ("profiles/get", {"db_id": [1], "matching": "email", "email": "a@b.cd"}, "db_id"),
        ("profiles/get", {"db_id": 1, "matching": "email", "email": {"a": 1}}, "email"),
        ("profiles/get", {"db_id": 1, "matching": "email", "email": ["a@b.cd"]}, "email"),
        ("profiles/get", {"db_id": 1, "matching": ["email"], "email": "a@b.cd"}, "matching"),
        ("profiles/get", {"db_id": 1, "matching": "custom", "field_name": "card_no", "field_value": [1]},
         "field_value"),
        ("profiles/add", {"db_id": 1, "data": "email=a@b.cd"}, "data"),
        ("profiles/add", {"db_id": 1, "data": ["a@b.cd"]}, "data"),
        ("profiles/add", {"db_id": 1, "data": {"email": "a@b.cd"}, "skip_triggers": "perhaps"}, "skip_triggers"),
        ("profiles/add", {"db_id": 1, "data": {"email": "a@b.cd", "card_no": "twelve"}}, "card_no"),
        ("loyalty/register_member", {"loyalty_program_id": "stars", "matching": "email", "email": "a@b.cd"},
         "loyalty_program_id"),
        ("loyalty/register_member", {"loyalty_program_id": 123, "matching": "email", "email": "a@b.cd",
                                     "registration_date": {"y": 2024}}, "registration_date"),
        ("loyalty/delete_member", {"loyalty_program_id": {"id": 123}, "matching": "email", "email": "a@b.cd"},
         "loyalty_program_id"),
    ],
)
def test_wrong_types_are_400_invalid_parameter_naming_the_field(wire, endpoint, params, name):
    r = wire.api.call(endpoint, **params)
    assert r.status == 400 and r.error == 400 and r.code == "invalid_parameter", r.body
    assert name in r.body["error_text"]


def test_xml_wrong_type_is_400_invalid_parameter(wire):
    body = xml_body(token=wire.api.token, db_id="one", matching="email", email="a@b.cd")
    body_ = assert_failure(post(wire.api, "profiles/get", body, XML), 400, "invalid_parameter")
    assert "db_id" in body_["error_text"]


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_numbers_as_text_are_accepted_for_int_params(wire, fmt):
    r = wire.api.call("profiles/get", fmt=fmt, db_id="1", matching="email", email="ann@example.com")
    assert r.status == 200 and r.data["id"] == wire.ann


def test_missing_required_param_is_400_missing_parameter_naming_it(wire):
    r = wire.api.call("profiles/get", matching="email", email="a@b.cd")
    assert r.status == 400 and r.code == "missing_parameter" and "db_id" in r.body["error_text"]
    r = wire.api.call("loyalty/register_member", matching="email", email="a@b.cd")
    assert r.status == 400 and r.code == "missing_parameter" and "loyalty_program_id" in r.body["error_text"]


# ---------------------------------------------------------------------------------------------------------------
# envelope and never a 500


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_success_envelope_has_error_zero_and_the_fixed_text_and_no_error_code(wire, fmt):
    body, headers = encode(fmt, {"token": wire.api.token, "db_id": 1, "data": {"email": unique_email()}})
    reply = assert_success(post(wire.api, "profiles/add", body, headers))
    assert list(reply)[:2] == ["error", "error_text"]
    assert "error_code" not in reply


def test_unknown_endpoint_answers_with_the_envelope(wire):
    resp = wire.api.client.post("/api/v1.1/loyalty/no_such_thing", json={"token": wire.api.token})
    assert_failure(resp, 404, "endpoint_not_found")


@pytest.mark.parametrize(
    "content",
    [b"", b" ", b"{}", b"[]", b"null", b"\x00\x01\x02", "{\"token\": \"\u202e\"}".encode(), b"{" * 100,
     b'{"token": "x", "db_id": 1}', b'{"token": null}', b'{"token": ["a", "b"]}', b'{"token": {"a": 1}}',
     b'{"db_id": 1e400}', b'{"db_id": -1e-400}'],
)
@pytest.mark.parametrize("endpoint", ["profiles/add", "profiles/get", "profiles/import", "loyalty/register_member",
                                      "loyalty/delete_member"])
def test_garbage_bodies_never_give_a_500(wire, endpoint, content):
    resp = post(wire.api, endpoint, content)
    body = body_of(resp)
    assert resp.status_code < 500, body
    assert resp.status_code == int(body["error"])
    assert body["error_text"] and body["error_code"]


def test_deeply_nested_json_is_refused_without_a_500(wire):
    depth = 100_000
    body = b'{"token": "t", "data": ' + b"[" * depth + b"]" * depth + b"}"
    assert_failure(post(wire.api, "profiles/add", body), 400, "invalid_request")


def test_deeply_nested_xml_is_refused_without_a_500(wire):
    depth = 50_000
    body = b"<xml><data>" + b"<a>" * depth + b"</a>" * depth + b"</data></xml>"
    assert_failure(post(wire.api, "profiles/add", body, XML), 400, "invalid_request")


def test_control_characters_in_stored_text_never_break_an_xml_response(wire):
    email = unique_email()
    r = wire.api.call("profiles/add", db_id=1, data={"email": email, "_fname": "a\x01b"})
    if r.status == 400:  # refusing control characters at write time is as good
        assert r.code == "invalid_parameter"
        return
    resp = post(wire.api, "profiles/get", xml_body(**get_params(wire.api, email=email)), XML)
    assert assert_success(resp)["data"]["email"] == email


# ---- values that reach SQL: these run on both stores -----------------------------------------------------------


def test_out_of_range_integer_ids_are_refused_without_a_500(api):
    for endpoint, params in [
        ("profiles/get", {"db_id": 10**20, "matching": "email", "email": "a@b.cd"}),
        ("loyalty/register_member", {"loyalty_program_id": 10**20, "matching": "email", "email": "a@b.cd"}),
    ]:
        r = api.call(endpoint, **params)
        assert r.status in (400, 404), (endpoint, r.body)
        assert r.error == r.status



def test_over_long_profile_values_never_give_a_500(api, rt, request):
    for data in [{"email": "q" * 400 + "@example.com"}, {"email": "fname@example.com", "_fname": "n" * 300},
                 {"email": "city@example.com", "city": "c" * 600}]:
        r = api.call("profiles/add", db_id=1, data=data)
        assert r.status in (200, 400), r.body
        assert r.error == (0 if r.status == 200 else 400)


def test_nul_character_in_a_profile_value_never_gives_a_500(api, rt, request):
    r = api.call("profiles/add", db_id=1, data={"email": "nul@example.com", "_fname": "a\x00b"})
    assert r.status in (200, 400), r.body


_KEYS = ["db_id", "loyalty_program_id", "matching", "email", "phone", "profile_id", "field_name", "field_value",
         "data", "registration_date", "skip_triggers", "format", "extra"]
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**31), 2**31 - 1),
    st.sampled_from(["email", "phone", "custom", "profile_id", "card_no", "user_id", "123", "1", "+7 912",
                     "a@b.cd", "2024-01-01T00:00:00Z", "2999-01-01T00:00:00Z", "json", "xml", ""]),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12),
)
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.sampled_from(
                                                             ["email", "phones", "card_no", "user_id", "city",
                                                              "_fname", "_regdate", "x"]), inner, max_size=3)),
                       max_leaves=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from(["profiles/add", "profiles/import", "profiles/update", "profiles/get",
                                 "loyalty/register_member", "loyalty/delete_member"]),
       params=st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=8),
       fmt=st.sampled_from(["json", "xml"]))
def test_random_parameters_always_get_an_envelope_and_never_a_500(api, endpoint, params, fmt):
    body, headers = encode(fmt, {"token": api.token, **params})
    resp = post(api, endpoint, body, headers)
    reply = body_of(resp)
    assert resp.status_code != 500, reply
    if resp.status_code == 200:
        assert int(reply["error"]) == 0
    else:
        assert int(reply["error"]) == resp.status_code
        assert reply["error_text"] and reply["error_code"]
