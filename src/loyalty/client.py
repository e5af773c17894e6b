"""A typed Python client for the Altcraft-compatible Loyalty API v1.1, synchronous and asynchronous.

    with LoyaltyClient("http://127.0.0.1:8000", token) as api:
        api.register_member(123, email="ann@example.com")
        result = api.accrue_points(123, "100.50", email="ann@example.com", transaction_eid="order-1")
        print(result.transaction_id, result.balance)

Every failure raises `LoyaltyApiError` with the contract's `error`, `error_code` and `error_text`. Amounts are
`Decimal` (or decimal strings) both ways; the client never turns money into a float.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from loyalty.services.json_values import dumps_ordered, loads_exact

PREFIX = "/api/v1.1/"


class LoyaltyApiError(Exception):
    def __init__(self, error: int, code: str | None, text: str):
        super().__init__(f"{error} {code}: {text}")
        self.error, self.code, self.text = error, code, text


@dataclass(frozen=True)
class TxnResult:
    transaction_id: str
    balance: Decimal


@dataclass(frozen=True)
class Balance:
    total: Decimal
    active: Decimal
    pending: Decimal
    held: Decimal
    temp_accrued: Decimal


def _member(matching: str | None, email: str | None, phone: str | None, profile_id: str | None,
            field_name: str | None, field_value: str | int | None) -> dict[str, Any]:
    given = {k: v for k, v in {"email": email, "phone": phone, "profile_id": profile_id,
                               "field_name": field_name, "field_value": field_value}.items() if v is not None}
    if matching is None:
        matching = "custom" if "field_name" in given else next(iter(given), "email")
    return {"matching": matching, **given}


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in params.items() if v is not None}


def _envelope(response: httpx.Response) -> dict[str, Any]:
    try:
        body = loads_exact(response.content)
    except ValueError:
        raise LoyaltyApiError(response.status_code, None, response.text[:200]) from None
    if body.get("error", 0) != 0:
        raise LoyaltyApiError(int(body["error"]), body.get("error_code"), body.get("error_text", ""))
    return body


def _txn(body: dict[str, Any]) -> TxnResult:
    return TxnResult(body["data"]["transaction_id"], Decimal(body["data"]["balance"]))


def _balance(body: dict[str, Any]) -> Balance:
    d = body["data"]
    return Balance(Decimal(d["total_balance"]), Decimal(d["active_balance"]), Decimal(d["pending_balance"]),
                   Decimal(d["held_balance"]), Decimal(d["temp_accrued_balance"]))


class _Calls:
    """Request building shared by both clients; `_call` is the transport."""

    def _call(self, endpoint: str, params: dict[str, Any]) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def register_member(self, program_id: int, *, matching: str | None = None, email: str | None = None,
                        phone: str | None = None, profile_id: str | None = None, field_name: str | None = None,
                        field_value: str | int | None = None, registration_date: str | None = None) -> Any:
        return self._call("loyalty/register_member", {
            "loyalty_program_id": program_id, "registration_date": registration_date,
            **_member(matching, email, phone, profile_id, field_name, field_value)})

    def delete_member(self, program_id: int, **member: Any) -> Any:
        return self._call("loyalty/delete_member", {"loyalty_program_id": program_id, **_member(None, **_m(member))})

    def accrue_points(self, program_id: int, amount: Decimal | str | None = None, **options: Any) -> Any:
        return self._move("loyalty/accrue_points", program_id, amount, options)

    def redeem_points(self, program_id: int, amount: Decimal | str | None = None, **options: Any) -> Any:
        return self._move("loyalty/redeeme_points", program_id, amount, options)

    def _move(self, endpoint: str, program_id: int, amount: Any, options: dict[str, Any]) -> Any:
        member = {k: options.pop(k) for k in list(options) if k in _MEMBER_KEYS}
        return self._call(endpoint, {"loyalty_program_id": program_id, "amount": amount,
                                     **_member(member.pop("matching", None), **_m(member)), **options})

    def commit_transaction(self, transaction_id: str | None = None, transaction_eid: str | None = None) -> Any:
        return self._call("loyalty/commit_transaction",
                          {"transaction_id": transaction_id, "transaction_eid": transaction_eid})

    def rollback_transaction(self, transaction_id: str | None = None, transaction_eid: str | None = None) -> Any:
        return self._call("loyalty/rollback_transaction",
                          {"transaction_id": transaction_id, "transaction_eid": transaction_eid})

    def cancel_transaction(self, transaction_id: str | None = None, transaction_eid: str | None = None) -> Any:
        return self._call("loyalty/cancel_transaction",
                          {"transaction_id": transaction_id, "transaction_eid": transaction_eid})

    def balance(self, program_id: int, **options: Any) -> Any:
        member = {k: options.pop(k) for k in list(options) if k in _MEMBER_KEYS}
        return self._call("loyalty/account/balance", {"loyalty_program_id": program_id,
                                                      **_member(member.pop("matching", None), **_m(member)),
                                                      **options})

    def transactions(self, program_id: int, *, from_id: str | None = None, limit: int = 20, **options: Any) -> Any:
        member = {k: options.pop(k) for k in list(options) if k in _MEMBER_KEYS}
        return self._call("loyalty/account/transactions", {
            "loyalty_program_id": program_id, "from_id": from_id, "limit": limit,
            **_member(member.pop("matching", None), **_m(member)), **options})

    def raw(self, endpoint: str, **params: Any) -> Any:
        """Any endpoint of the contract; returns the whole envelope."""
        return self._call(endpoint, params)


_MEMBER_KEYS = {"matching", "email", "phone", "profile_id", "field_name", "field_value"}


def _m(member: dict[str, Any]) -> dict[str, Any]:
    return {k: member.get(k) for k in ("email", "phone", "profile_id", "field_name", "field_value")}


_SHAPES = {
    "loyalty/accrue_points": _txn, "loyalty/redeeme_points": _txn, "loyalty/commit_transaction": _txn,
    "loyalty/rollback_transaction": _txn, "loyalty/cancel_transaction": _txn, "loyalty/account/balance": _balance,
    "loyalty/register_member": lambda b: b["profile_id"], "loyalty/delete_member": lambda b: b["profile_id"],
}


class LoyaltyClient(_Calls):
    def __init__(self, base_url: str, token: str, timeout: float = 10.0, http: httpx.Client | None = None):
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def _call(self, endpoint: str, params: dict[str, Any]) -> Any:
        response = self._http.post(PREFIX + endpoint, content=dumps_ordered(_clean(params)), headers=self._headers)
        body = _envelope(response)
        return _SHAPES.get(endpoint, lambda b: b)(body)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LoyaltyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncLoyaltyClient(_Calls):
    """Same methods as LoyaltyClient, each returning an awaitable."""

    def __init__(self, base_url: str, token: str, timeout: float = 10.0, http: httpx.AsyncClient | None = None):
        self._http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def _call(self, endpoint: str, params: dict[str, Any]) -> Any:  # type: ignore[override]
        response = await self._http.post(PREFIX + endpoint, content=dumps_ordered(_clean(params)), headers=self._headers)
        body = _envelope(response)
        return _SHAPES.get(endpoint, lambda b: b)(body)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncLoyaltyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
