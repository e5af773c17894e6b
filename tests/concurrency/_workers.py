"""Code run in spawned processes by the concurrency tests: only `loyalty` imports, no pytest, no fixtures."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from loyalty.config import Settings
from loyalty.domain.clock import FrozenClock
from loyalty.domain.errors import LoyaltyError
from loyalty.services import ledger, tokens
from loyalty.services.commands import RedeemCmd
from loyalty.services.runtime import Runtime
from loyalty.storage.uow import Store


def redeem_many(url: str, start_iso: str, email: str, amount: str, times: int, barrier: Any) -> dict[str, int]:
    """Build a Runtime of our own on `url`, wait for every process, then redeem `times` times."""
    clock = FrozenClock(datetime.fromisoformat(start_iso))
    rt = Runtime(Settings(database_url=url, run_jobs=False), Store.from_url(url, pool_size=2, group_commit=128), clock)
    admin = tokens.Principal(1, "worker", frozenset(tokens.ROLES), None, None)
    outcomes: dict[str, int] = {}
    try:
        barrier.wait(timeout=60)
        for _ in range(times):
            try:
                ledger.redeem(rt, admin, RedeemCmd(loyalty_program_id=123, matching="email", email=email,
                                                   amount=amount))
                code = "ok"
            except LoyaltyError as exc:
                code = exc.code
            outcomes[code] = outcomes.get(code, 0) + 1
    finally:
        rt.close()
    return outcomes


def redeem_many_into(queue: Any, *args: Any) -> None:
    """Process target: `redeem_many`, with its outcome (or the exception's text) put on `queue`."""
    try:
        queue.put(redeem_many(*args))
    except BaseException as exc:  # reported to the test, which fails with it
        queue.put({f"crash: {exc.__class__.__name__}: {exc}": 1})
