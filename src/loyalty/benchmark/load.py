"""The load generator: asyncio + httpx with a fixed number of concurrent clients (closed loop), or a fixed
arrival rate (open loop, for latency at a given share of peak). Runs in its own process."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from loyalty.services.json_values import dumps_ordered, loads_exact

PROGRAM = 123


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, float | int | dict[str, int]]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else 0.0

        return {"requests": self.requests, "rps": round(self.requests / self.seconds, 1) if self.seconds else 0,
                "p50_ms": pct(0.50), "p99_ms": pct(0.99), "errors": self.errors}


class Driver:
    def __init__(self, base: str, token: str, members: int, stats: Stats):
        self.http = httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=256))
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.members = members
        self.stats = stats
        self.recent: deque[str] = deque(maxlen=2000)

    async def call(self, endpoint: str, expected: str | None = None, **params: object) -> dict:
        started = time.perf_counter()
        response = await self.http.post(f"/api/v1.1/{endpoint}", content=dumps_ordered(params), headers=self.headers)
        self.stats.latencies.append(time.perf_counter() - started)
        self.stats.requests += 1
        body = loads_exact(response.content)
        if body.get("error") and body.get("error_code") != expected:
            code = body.get("error_code", str(body["error"]))
            self.stats.errors[code] = self.stats.errors.get(code, 0) + 1
        return body

    def member(self, hot: bool = False) -> dict[str, object]:
        n = 0 if hot else random.randrange(self.members)
        return {"loyalty_program_id": PROGRAM, "matching": "email", "email": f"m{n}@bench.example"}

    # --- operations ---------------------------------------------------------------------------------------

    async def accrue(self, hot: bool = False) -> None:
        body = await self.call("loyalty/accrue_points", amount="1.00", **self.member(hot))
        if not body.get("error"):
            self.recent.append(body["data"]["transaction_id"])

    async def redeem(self, hot: bool = False) -> None:
        await self.call("loyalty/redeeme_points", amount="0.01", **self.member(hot))

    async def balance(self) -> None:
        await self.call("loyalty/account/balance", **self.member())

    async def floor(self) -> None:
        """A request refused by validation: HTTP, parsing, authentication and the envelope, no store work."""
        await self.call("loyalty/account/balance", expected="invalid_parameter", **self.member(),
                        points_currency_iid="none")

    async def hold_and_commit(self) -> None:
        body = await self.call("loyalty/redeeme_points", amount="0.01", is_temp=True, **self.member())
        if not body.get("error"):
            await self.call("loyalty/commit_transaction", transaction_id=body["data"]["transaction_id"])

    async def cancel(self) -> None:
        if self.recent:
            await self.call("loyalty/cancel_transaction", transaction_id=self.recent.popleft())
        else:
            await self.accrue()

    async def checkout_mix(self) -> None:
        roll = random.random()
        if roll < 0.60:
            await self.balance()
        elif roll < 0.80:
            await self.accrue()
        elif roll < 0.95:
            await self.hold_and_commit()
        else:
            await self.cancel()

    async def hot(self) -> None:
        await (self.accrue(hot=True) if random.random() < 0.5 else self.redeem(hot=True))


async def closed_loop(driver: Driver, op: Callable[[], Awaitable[None]], clients: int, seconds: float) -> None:
    end = time.perf_counter() + seconds
    started = time.perf_counter()

    async def client() -> None:
        while time.perf_counter() < end:
            await op()

    await asyncio.gather(*(client() for _ in range(clients)))
    driver.stats.seconds = time.perf_counter() - started


async def open_loop(driver: Driver, op: Callable[[], Awaitable[None]], rate: float, seconds: float) -> None:
    """Start operations at a fixed rate whatever the answers' speed, so latency is not hidden by back-off."""
    started = time.perf_counter()
    tasks = []
    i = 0
    while (now := time.perf_counter()) < started + seconds:
        due = started + i / rate
        if due > now:
            await asyncio.sleep(due - now)
        tasks.append(asyncio.create_task(op()))
        i += 1
    await asyncio.gather(*tasks)
    driver.stats.seconds = time.perf_counter() - started


def run(base: str, token: str, members: int, scenario: str, clients: int, seconds: float,
        rate: float | None = None) -> dict:
    """Entry point for the load process: returns the scenario's summary."""
    stats = Stats()

    async def main() -> None:
        driver = Driver(base, token, members, stats)
        op = {"accrue": driver.accrue, "redeem": driver.redeem, "checkout_mix": driver.checkout_mix,
              "hot_member": driver.hot, "balance": driver.balance, "floor": driver.floor}[scenario]
        if rate:
            await open_loop(driver, op, rate, seconds)
        else:
            await closed_loop(driver, op, clients, seconds)
        await driver.http.aclose()

    cpu = time.process_time()
    asyncio.run(main())
    summary = stats.summary()
    # The load generator's own CPU per request: when it nears 1000 / rps, the client is the limit, not the server.
    summary["client_cpu_ms_per_request"] = round((time.process_time() - cpu) * 1000 / max(1, stats.requests), 2)
    return summary
