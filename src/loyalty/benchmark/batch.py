"""Batch work at scale: the background sweeper expiring a million lots, and a transaction export of a
million-row currency over HTTP while the server's memory is sampled.

Expiry runs in this process against the store (no server may be running: its own sweeper would take part);
the export runs in a server started by the caller, whose job runner writes the file.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from typing import Any

import httpx
from sqlalchemy import Connection, func, select

from loyalty.benchmark.server import Server
from loyalty.services import verify
from loyalty.services.runtime import Runtime
from loyalty.services.sweeper import sweep_all
from loyalty.storage import bulk_repo
from loyalty.storage.tables import lots, profiles

PROGRAM = 123
CURRENCY = 1
LOT_UNITS = 100  # 1.00 star
MEMBERS_PER_WRITE = 10_000


def verdict(rt: Runtime) -> str:
    report = verify.verify_all(rt)
    return "OK" if not report.problems else f"DRIFT: {report.problems[:3]}"


def sequential_ids() -> Iterator[str]:
    """UUIDv7 strings, time-ordered like the engine's transaction ids, without uuid6's per-id cost (~11 µs,
    eleven seconds for a million): this millisecond, then a counter from a random start in the random bits."""
    head = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | secrets.randbits(12) << 64 | 0b10 << 62
    for n in itertools.count(secrets.randbits(40)):
        h = f"{head | n:032x}"
        yield f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _bench_members(conn: Connection) -> list[str]:
    """The members m0..mN the benchmark seeded (not the two history members)."""
    return list(conn.execute(select(profiles.c.id).where(profiles.c.email.like("m%@bench.example"))
                             .order_by(profiles.c.id)).scalars())


def seed_expired_lots(rt: Runtime, count: int) -> dict[str, Any]:
    """`count` committed accruals of 1.00 star spread evenly over the benchmark's members, each a lot that
    expired yesterday, so the next sweep has every one of them to expire."""
    members = rt.store.read(_bench_members)
    if not members:
        raise RuntimeError("no benchmark members to give lots to: seed the store first")
    each, extra = divmod(count, len(members))
    counts = [(member, each + (1 if i < extra else 0)) for i, member in enumerate(members)]
    now = rt.clock.now()
    ids = sequential_ids()
    started = time.perf_counter()
    written = 0
    for start in range(0, len(counts), MEMBERS_PER_WRITE):
        written += rt.store.write(partial(
            bulk_repo.seed_expiring_lots, program_id=PROGRAM, currency_iid=CURRENCY,
            counts=counts[start:start + MEMBERS_PER_WRITE], amount=LOT_UNITS, created_at=now - timedelta(days=2),
            expires_at=now - timedelta(days=1), ids=ids))
    seeded = {"lots": written, "members": len(members), "seed_seconds": round(time.perf_counter() - started, 1)}
    if rt.store.dialect == "postgresql":
        seeded |= rt.store.read(bulk_repo.tidy_after_load)  # a reader is in autocommit: VACUUM may run
    return seeded


def _due_lots(rt: Runtime) -> int:
    now = rt.clock.now()
    return int(rt.store.read(lambda conn: conn.execute(
        select(func.count()).select_from(lots).where(lots.c.remaining > 0, lots.c.expires_at <= now)).scalar_one()))


def measure_expiry(rt: Runtime, count: int) -> dict[str, Any]:
    """Seed `count` expired lots, then time the sweeper (as the job runner calls it) until nothing is due."""
    seeded = seed_expired_lots(rt, count)
    due = _due_lots(rt)
    started = time.perf_counter()
    accounts = 0
    while swept := sweep_all(rt):
        accounts += swept
    seconds = time.perf_counter() - started
    return {**seeded,
            "due_before": due, "accounts_swept": accounts, "seconds": round(seconds, 2),
            "lots_per_second": round(seeded["lots"] / seconds, 1) if seconds else 0.0,
            "seconds_per_million_lots": _per_million(seconds, seeded["lots"]),
            "due_after": _due_lots(rt), "verify": verdict(rt)}


def measure_export(server: Server, token: str, poll_sec: float = 0.1, timeout_sec: float = 900) -> dict[str, Any]:
    """Export the benchmark currency's whole history (loyalty/transactions_export), poll its status until
    done, download the file; the server's RSS is sampled every 0.1 s throughout."""
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(server.rss_mb())
            stop.wait(0.1)

    headers = {"Authorization": f"Bearer {token}"}
    rss_before = server.rss_mb()
    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        with httpx.Client(base_url=server.base, headers=headers, timeout=120) as http:
            task_id = _call(http, "loyalty/transactions_export", loyalty_program_id=PROGRAM,
                            points_currency_iid=CURRENCY, date_from="2000-01-01T00:00:00Z",
                            date_to="2100-01-01T00:00:00Z")["task_id"]
            while True:
                status = _call(http, "loyalty/transactions_export/status", task_id=task_id)
                if status["status"] in ("done", "failed") or time.perf_counter() - started > timeout_sec:
                    break
                time.sleep(poll_sec)
            if status["status"] != "done" or not status["download_url"]:
                raise RuntimeError(f"export {task_id} did not finish: {status}")
            written = time.perf_counter() - started
            lines = 0
            with http.stream("GET", status["download_url"]) as response:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    lines += chunk.count(b"\n")
        seconds = time.perf_counter() - started
    finally:
        stop.set()
        sampler.join()
    peak = max([rss_before, *samples])
    return {"rows": status["rows"], "downloaded_rows": lines - 1, "seconds": round(seconds, 2),
            "write_seconds": round(written, 2), "seconds_per_million_rows": _per_million(seconds, status["rows"]),
            "rss_before_mb": rss_before, "rss_peak_mb": peak,
            "rss_growth_mb": round(peak - rss_before, 1), "rss_samples": len(samples)}


def _per_million(seconds: float, count: int) -> float | None:
    """The targets are stated per million (lots, rows); the run's own count may differ (an export takes the
    currency's whole history, which the scenarios before it have grown)."""
    return round(seconds / count * 1_000_000, 2) if count else None


def _call(http: httpx.Client, endpoint: str, **params: Any) -> dict[str, Any]:
    body = http.post(f"/api/v1.1/{endpoint}", json=params).json()
    if body.get("error"):
        raise RuntimeError(f"{endpoint}: {body}")
    return body["data"]  # type: ignore[no-any-return]
