"""The transport rules of altcraft-api.md §1: body formats, size limit, negotiation, token, envelope.

`Incoming` and `read_body` take what a request carries straight from the ASGI scope and receive channel;
`respond` and `respond_error` turn a payload or an error into the envelope in the negotiated format (an
`Answer`), with the HTTP status equal to `error` on failure.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from loyalty.api import xmlcodec
from loyalty.api.textcheck import check_text
from loyalty.domain.errors import (
    InvalidParameter,
    InvalidRequest,
    LoyaltyError,
    MissingParameter,
    PayloadTooLarge,
    TokenMissing,
)
from loyalty.services.json_values import dumps_ordered, loads_exact

SUCCESS = "Successful operation"
_STATUS_FROM_ERROR = {400, 401, 403, 404, 409, 413, 422, 429, 500, 503}
JSON_TYPE = "application/json; charset=utf-8"
XML_TYPE = "application/xml; charset=utf-8"


class Incoming:
    """What the pipeline reads of an HTTP request, taken from the ASGI scope once: headers by lower-case name
    (the first of repeated ones) and the query parameters (the last of repeated ones)."""

    __slots__ = ("headers", "query")

    def __init__(self, scope: dict[str, Any]):
        self.headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            self.headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        raw_query = scope.get("query_string") or b""
        self.query: dict[str, str] = dict(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True)) \
            if raw_query else {}


def body_format_of(incoming: Incoming, body: bytes) -> str:
    ctype = incoming.headers.get("content-type", "").lower()
    if "xml" in ctype:
        return "xml"
    if "json" in ctype:
        return "json"
    return "xml" if body.lstrip()[:1] == b"<" else "json"


def response_format_of(incoming: Incoming, body_format: str, params: dict[str, Any] | None) -> str:
    explicit = incoming.query.get("format") or (params or {}).get("format")
    if isinstance(explicit, str) and explicit.lower() in ("json", "xml"):
        return explicit.lower()
    accept = incoming.headers.get("accept", "").lower()
    wants_xml = "application/xml" in accept or "text/xml" in accept
    wants_json = "application/json" in accept
    if wants_xml and not wants_json:
        return "xml"
    if wants_json and not wants_xml:
        return "json"
    if wants_xml and wants_json:
        return "xml" if accept.find("xml") < accept.find("json") else "json"
    return body_format


async def read_body(incoming: Incoming, receive: Callable[[], Awaitable[dict[str, Any]]], limit: int) -> bytes:
    declared = incoming.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise InvalidRequest("The client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_params(body: bytes, body_format: str, model: type[BaseModel] | None) -> dict[str, Any]:
    if not body.strip():
        return {}
    if body_format == "xml":
        return xmlcodec.parse(body, model)
    try:
        value = loads_exact(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("The body nests too deeply") from None
    if not isinstance(value, dict):
        raise InvalidRequest("The body must be a JSON object")
    check_text(value, "")
    return value


def pick_token(authorization: str, params: dict[str, Any]) -> str:
    """The token from the `Authorization: Bearer` header or the body's `token`, which must agree if both."""
    header = authorization
    bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
    body_token = params.get("token")
    if body_token is not None and not isinstance(body_token, str):
        raise InvalidParameter("token", "must be a string")
    body_token = body_token.strip() if body_token else None
    if bearer and body_token and bearer != body_token:
        raise InvalidParameter("token", "the body token and the Authorization header disagree")
    token = bearer or body_token
    if not token:
        raise TokenMissing("No token: send it in the body as `token` or as `Authorization: Bearer <token>`")
    return token


def validate(model: type[BaseModel], params: dict[str, Any]) -> Any:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        # pydantic adds union branches ("constrained-str") to the location; the caller knows only field names.
        parts = [str(p) for p in first["loc"] if isinstance(p, int) or re.fullmatch(r"[A-Za-z_]\w*", str(p))]
        name = ".".join(parts) or "body"
        if first["type"] == "missing":
            raise MissingParameter(name) from None
        raise InvalidParameter(name, first["msg"]) from None


class Answer(NamedTuple):
    status: int
    body: bytes
    content_type: str

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, media_type=self.content_type)


def respond(payload: dict[str, Any], fmt: str) -> Answer:
    body = {"error": 0, "error_text": SUCCESS, **payload}
    return _render(body, fmt, 200)


def respond_error(error: LoyaltyError, fmt: str) -> Answer:
    body = {"error": error.error, "error_text": error.message, "error_code": error.code}
    status = error.error if error.error in _STATUS_FROM_ERROR else 500
    return _render(body, fmt, status)


def _render(body: dict[str, Any], fmt: str, status: int) -> Answer:
    if fmt == "xml":
        return Answer(status, xmlcodec.render(body), XML_TYPE)
    return Answer(status, dumps_ordered(body).encode("utf-8"), JSON_TYPE)
