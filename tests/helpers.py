"""Test helpers: an API client that speaks the contract in JSON or XML and returns (status, body)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from defusedxml.ElementTree import fromstring

from loyalty.api import xmlcodec
from loyalty.services.json_values import loads_exact


def xml_to_dict(body: bytes) -> dict[str, Any]:
    """Generic reading of a response: repeated elements become lists, `data` of list endpoints included."""
    root = fromstring(body)
    return _element(root)


def _element(element: Any) -> Any:
    if len(element) == 0:
        return element.text
    out: dict[str, Any] = {}
    for child in element:
        value = _element(child)
        if child.tag in out:
            prior = out[child.tag]
            out[child.tag] = (prior if isinstance(prior, list) else [prior]) + [value]
        else:
            out[child.tag] = value
    return out


@dataclass
class Reply:
    status: int
    body: dict[str, Any]

    @property
    def error(self) -> int:
        return int(self.body["error"])

    @property
    def code(self) -> str | None:
        return self.body.get("error_code")

    @property
    def data(self) -> Any:
        return self.body.get("data")


class ApiClient:
    """`api.call("loyalty/accrue_points", loyalty_program_id=123, ...)`; fmt="xml" sends and reads XML."""

    def __init__(self, client: Any, token: str):
        self.client = client
        self.token = token

    def call(self, endpoint: str, fmt: str = "json", token: str | None = "default", **params: Any) -> Reply:
        if token == "default":
            token = self.token
        if token is not None:
            params = {"token": token, **params}
        if fmt == "xml":
            body = xmlcodec.render(params)
            resp = self.client.post(f"/api/v1.1/{endpoint}", content=body,
                                    headers={"Content-Type": "application/xml"})
            return Reply(resp.status_code, xml_to_dict(resp.content))
        resp = self.client.post(f"/api/v1.1/{endpoint}", json=params)
        return Reply(resp.status_code, loads_exact(resp.content))

    def raw(self, endpoint: str, content: bytes, headers: dict[str, str]) -> Any:
        return self.client.post(f"/api/v1.1/{endpoint}", content=content, headers=headers)

    # Shortcuts used by many tests -------------------------------------------------------------------------

    def add_profile(self, email: str, db_id: int = 1, **data: Any) -> str:
        r = self.call("profiles/add", db_id=db_id, data={"email": email, **data})
        assert r.status == 200, r.body
        return r.body["profile_id"]

    def member(self, email: str, program_id: int = 123, **data: Any) -> str:
        """Create a profile with this email and enrol it."""
        profile_id = self.add_profile(email, **data)
        r = self.call("loyalty/register_member", loyalty_program_id=program_id, matching="email", email=email)
        assert r.status == 200, r.body
        return profile_id

    def balance(self, email: str, program_id: int = 123, **params: Any) -> dict[str, str]:
        r = self.call("loyalty/account/balance", loyalty_program_id=program_id, matching="email", email=email,
                      **params)
        assert r.status == 200, r.body
        return r.data


def ok(reply: Reply) -> Reply:
    """The reply is a success in the contract's envelope."""
    assert reply.status == 200 and int(reply.body["error"]) == 0, reply.body
    return reply


def assert_failure(reply: Reply, status: int, code: str) -> None:
    """The reply is the contract's failure: HTTP status = `error`, the stable code, and an explanation."""
    assert reply.status == status, reply.body
    assert int(reply.body["error"]) == status, reply.body
    assert reply.code == code, reply.body
    assert reply.body["error_text"], reply.body
