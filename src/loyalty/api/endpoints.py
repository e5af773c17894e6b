"""The Altcraft routes: each endpoint is a command model plus a function that calls one use case.

`register_endpoints` mounts them all under /api/v1.1/, each as a `Route` with one request pipeline: size limit →
parse body → authenticate → validate → run the use case (in the thread pool, or on the event loop, see
storage/cooperative.py) → envelope. Every failure goes through `respond_error`, so no request ever answers with a traceback.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from loyalty.api import wire
from loyalty.api.auth import Authenticator
from loyalty.api.metrics import ApiMetrics
from loyalty.domain.errors import LoyaltyError
from loyalty.services import exports, history, ledger, members, orders, profiles, promotions, tiers
from loyalty.services.commands import (
    AccrueCmd,
    BalanceCmd,
    DeleteCmd,
    ExpiringCmd,
    ExportCmd,
    ExportStatusCmd,
    HistoryCmd,
    PreorderCmd,
    ProfileAddCmd,
    ProfileGetCmd,
    ProfileImportCmd,
    PromotionsCmd,
    RedeemCmd,
    RegisterCmd,
    TiersCmd,
    TxnRefCmd,
)
from loyalty.services.runtime import Runtime, request_scope, run_on_loop
from loyalty.services.tokens import Principal

log = logging.getLogger("loyalty.api")

Handler = Callable[[Runtime, Principal, Any], dict[str, Any]]
# The request's base URL, for answers that carry links (export downloads); copied into the worker thread.
base_url: contextvars.ContextVar[str] = contextvars.ContextVar("base_url", default="")
DOWNLOAD_PATH = "/api/v1.1/loyalty/transactions_export/download/"
# Request ids: a random prefix per process and a counter (unique without a system call per request).
_ID_PREFIX = secrets.token_hex(6)
_id_counter = itertools.count(1)


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):012x}"


@dataclass(frozen=True)
class Endpoint:
    path: str
    model: type[BaseModel]
    handler: Handler
    summary: str
    # Short use cases run on the event loop itself, suspending while they wait (see storage/cooperative.py).
    inline: bool = False
    # Answers carry links built from the request's base URL (`base_url`).
    links: bool = False


def _register(rt: Runtime, p: Principal, cmd: RegisterCmd) -> dict[str, Any]:
    return {"profile_id": members.register(rt, p, cmd)}


def _delete(rt: Runtime, p: Principal, cmd: DeleteCmd) -> dict[str, Any]:
    return {"profile_id": members.delete(rt, p, cmd)}


def _txn(result: ledger.TxnResult) -> dict[str, Any]:
    return {"data": {"transaction_id": result.transaction_id, "balance": result.balance}}


def _balance(rt: Runtime, p: Principal, cmd: BalanceCmd) -> dict[str, Any]:
    b = ledger.balance(rt, p, cmd)
    return {"data": {"total_balance": b.total, "active_balance": b.active, "pending_balance": b.pending,
                     "held_balance": b.held, "temp_accrued_balance": b.temp_accrued}}


def _history(rt: Runtime, p: Principal, cmd: HistoryCmd) -> dict[str, Any]:
    page = history.transactions(rt, p, cmd)
    return {"data": page.items, "next_from_id": page.next_from_id, "total_count": page.total_count}


def _expiring(rt: Runtime, p: Principal, cmd: ExpiringCmd) -> dict[str, Any]:
    return {"data": {"expiring_points": history.expiring_points(rt, p, cmd)}}


def _export(rt: Runtime, p: Principal, cmd: ExportCmd) -> dict[str, Any]:
    return {"data": {"task_id": exports.create(rt, p, cmd)}}


def _export_status(rt: Runtime, p: Principal, cmd: ExportStatusCmd) -> dict[str, Any]:
    view = exports.status(rt, p, cmd.task_id)
    url = f"{base_url.get().rstrip('/')}{DOWNLOAD_PATH}{view.task_id}" if view.ready else None
    return {"data": {"task_id": view.task_id, "status": view.status, "rows": view.rows, "error": view.error,
                     "download_url": url}}


def _profile_add(rt: Runtime, p: Principal, cmd: ProfileAddCmd) -> dict[str, Any]:
    return {"profile_id": profiles.add(rt, p, cmd.db_id, cmd.data)}


def _profile_import(create: bool) -> Handler:
    def handler(rt: Runtime, p: Principal, cmd: ProfileImportCmd) -> dict[str, Any]:
        return {"profile_id": profiles.import_(rt, p, cmd.db_id, cmd.lookup(), cmd.data, create)}

    return handler


def _profile_get(rt: Runtime, p: Principal, cmd: ProfileGetCmd) -> dict[str, Any]:
    return {"data": profiles.get(rt, p, cmd.db_id, cmd.lookup())}


ENDPOINTS: list[Endpoint] = [
    Endpoint("loyalty/register_member", RegisterCmd, _register, "Enrol a profile in a program"),
    Endpoint("loyalty/delete_member", DeleteCmd, _delete, "Remove a membership, forfeiting points"),
    Endpoint("loyalty/accrue_points", AccrueCmd, lambda rt, p, c: _txn(ledger.accrue(rt, p, c)), "Accrue points", inline=True),
    Endpoint("loyalty/redeeme_points", RedeemCmd, lambda rt, p, c: _txn(ledger.redeem(rt, p, c)), "Redeem points", inline=True),
    Endpoint("loyalty/redeem_points", RedeemCmd, lambda rt, p, c: _txn(ledger.redeem(rt, p, c)),
             "Redeem points (alias)", inline=True),
    Endpoint("loyalty/commit_transaction", TxnRefCmd, lambda rt, p, c: _txn(ledger.commit(rt, p, c)),
             "Commit a temporary transaction", inline=True),
    Endpoint("loyalty/rollback_transaction", TxnRefCmd, lambda rt, p, c: _txn(ledger.rollback(rt, p, c)),
             "Roll back a temporary transaction", inline=True),
    Endpoint("loyalty/cancel_transaction", TxnRefCmd, lambda rt, p, c: _txn(ledger.cancel(rt, p, c)),
             "Cancel a transaction", inline=True),
    Endpoint("loyalty/account/balance", BalanceCmd, _balance, "Balances of a member's account", inline=True),
    Endpoint("loyalty/account/transactions", HistoryCmd, _history, "A member's transaction history"),
    Endpoint("loyalty/account/expiring_points", ExpiringCmd, _expiring, "Points expiring in a period"),
    Endpoint("loyalty/account/tiers", TiersCmd, lambda rt, p, c: tiers.render(tiers.account_tiers(rt, p, c)),
             "Tiers the member has reached in a group"),
    Endpoint("loyalty/trigger_promotions", PromotionsCmd, promotions.list_promotions, "List trigger promotions"),
    Endpoint("market/orders/preorder", PreorderCmd, lambda rt, p, c: {"data": orders.preorder(rt, p, c)},
             "Quote the points an order earns and may spend"),
    Endpoint("market/orders/preorder_commit", PreorderCmd,
             lambda rt, p, c: {"data": orders.preorder_commit(rt, p, c)}, "Confirm an order's points, once"),
    Endpoint("loyalty/transactions_export", ExportCmd, _export, "Start a CSV export of a currency's transactions"),
    Endpoint("loyalty/transactions_export/status", ExportStatusCmd, _export_status, "Status of an export task",
             links=True),
    Endpoint("profiles/add", ProfileAddCmd, _profile_add, "Create a profile"),
    Endpoint("profiles/import", ProfileImportCmd, _profile_import(create=True), "Update or create a profile"),
    Endpoint("profiles/update", ProfileImportCmd, _profile_import(create=False), "Update a profile"),
    Endpoint("profiles/get", ProfileGetCmd, _profile_get, "Find a profile"),
    Endpoint("profiles/get/", ProfileGetCmd, _profile_get, "Find a profile"),
]


@functools.cache
def _request_body(model: type[BaseModel]) -> dict[str, Any]:
    # Built once per process: schema generation is the slowest part of creating an app.
    return {"requestBody": {"content": {
        "application/json": {"schema": model.model_json_schema()},
        "application/xml": {"schema": {"type": "object"}},
    }}}


def register_endpoints(app: FastAPI, rt: Runtime, auth: Authenticator, metrics: ApiMetrics) -> dict[str, Route]:
    """Mount every contract route on `app` (for the OpenAPI document) and return them by path, for the
    application to answer straight from the ASGI call (see app.LoyaltyApp)."""
    routes: dict[str, Route] = {}
    for endpoint in ENDPOINTS:
        path = f"/api/v1.1/{endpoint.path}"
        routes[path] = route = Route(rt, auth, endpoint, metrics)
        app.add_api_route(path, route.via_framework, methods=["POST"], summary=endpoint.summary,
                          name=endpoint.path, openapi_extra=_request_body(endpoint.model))
    return routes


def register_download(app: FastAPI, rt: Runtime, auth: Authenticator) -> None:
    """GET on an export's download_url streams its CSV; the token goes in the header or `?token=`."""

    async def download(task_id: str, request: Request) -> Response:
        try:
            token = wire.pick_token(request.headers.get("authorization", ""),
                                    {"token": request.query_params.get("token")})
            principal = await run_in_threadpool(auth.principal, token)
            path = await run_in_threadpool(exports.file_for_download, rt, principal, task_id)
        except LoyaltyError as error:
            return wire.respond_error(error, "json").response()
        return FileResponse(path, media_type="text/csv; charset=utf-8", filename=f"{task_id}.csv")

    app.add_api_route(DOWNLOAD_PATH + "{task_id}", download, methods=["GET"], summary="Download an export")


class Route:
    """One contract endpoint's request pipeline: size limit → parse body → authenticate → validate → use case →
    envelope. Every failure becomes an envelope, so no request ever answers with a traceback."""

    def __init__(self, rt: Runtime, auth: Authenticator, endpoint: Endpoint, metrics: ApiMetrics):
        self.rt = rt
        self.auth = auth
        self.endpoint = endpoint
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Answer as an ASGI application."""
        started = time.perf_counter()
        incoming = wire.Incoming(scope)
        request_id = incoming.headers.get("x-request-id") or _new_request_id()
        answer, code = await self._handle(scope, receive, incoming, request_id)
        await send({"type": "http.response.start", "status": answer.status, "headers": [
            (b"content-type", answer.content_type.encode()), (b"content-length", b"%d" % len(answer.body)),
            (b"x-request-id", request_id.encode("latin-1"))]})
        await send({"type": "http.response.body", "body": answer.body})
        self.metrics.observe(self.endpoint.path, code, time.perf_counter() - started)

    async def via_framework(self, request: Request) -> Response:
        """The same answer as a FastAPI endpoint (the app answers these paths before FastAPI routes them)."""
        incoming = wire.Incoming(request.scope)
        request_id = incoming.headers.get("x-request-id") or _new_request_id()
        answer, _ = await self._handle(request.scope, request.receive, incoming, request_id)
        response = answer.response()
        response.headers["X-Request-Id"] = request_id
        return response

    def _serve(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        principal = self.auth.principal(token)  # authentication answers before validation does
        cmd = wire.validate(self.endpoint.model, params)
        return self.endpoint.handler(self.rt, principal, cmd)

    async def _handle(self, scope: dict[str, Any], receive: Any, incoming: wire.Incoming,
                      request_id: str) -> tuple[wire.Answer, str]:
        endpoint = self.endpoint
        # The declared format answers failures that happen before the body is read (413).
        fmt = wire.response_format_of(incoming, wire.body_format_of(incoming, b""), None)
        try:
            body = await wire.read_body(incoming, receive, self.rt.settings.max_body_bytes)
            body_format = wire.body_format_of(incoming, body)
            fmt = wire.response_format_of(incoming, body_format, None)
            params = wire.parse_params(body, body_format, endpoint.model)
            fmt = wire.response_format_of(incoming, body_format, params)
            token = wire.pick_token(incoming.headers.get("authorization", ""), params)
            if endpoint.links:
                base_url.set(str(Request(scope).base_url))
            if endpoint.inline:
                request_scope()  # the token and catalogue checks share one read
                payload = await run_on_loop(self._serve, token, params)
            else:
                # One trip to the thread pool per request: each hand-off between threads costs a GIL switch.
                payload = await run_in_threadpool(self._serve, token, params)
            return wire.respond(payload, fmt), "ok"
        except LoyaltyError as error:
            if error.error >= 500:
                log.warning("request %s failed: %s %s", request_id, endpoint.path, error.code)
            return wire.respond_error(error, fmt), error.code
        except Exception:
            log.exception("request %s: unhandled error on %s", request_id, endpoint.path)
            error = LoyaltyError(f"Internal error (request {request_id}); see the server log")
            return wire.respond_error(error, fmt), error.code
