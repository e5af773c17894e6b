"""Orchestration of one benchmark run: seed a store, start `loyalty serve` as a separate process, drive each
scenario from a load process, sample the server's RSS, check the invariants after each scenario, and write
every figure (with its ratio to the raw store ceiling of the same run) to bench/results/*.json.

After the request scenarios: accrue and checkout-mix throughput with 1, 2 and 4 server processes, the sweeper
expiring a million lots, and a million-row export (batch.py)."""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from loyalty.benchmark import batch, load, raw, wrk
from loyalty.benchmark.server import serving
from loyalty.config import Settings
from loyalty.services import programfile, schema, tokens
from loyalty.services.demo import example_path
from loyalty.services.ids import new_txn_id
from loyalty.services.runtime import Runtime
from loyalty.storage import bulk_repo

INITIAL_UNITS = 100_000_000  # 1,000,000.00 stars each, so redemptions never run dry during a run
# Connections per server process in the throughput scenarios: group commit needs writes waiting to batch them.
CLIENTS_PER_PROCESS = 64
HOT_CLIENTS = 32  # the hot-member scenario: 32 concurrent clients on one member


def _pg_database(admin_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        db.execute(f"CREATE DATABASE {name}")
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def seed(rt: Runtime, members: int, history: int) -> str:
    """The example program, `members` enrolled members m0..mN, and two history members; returns a token."""
    programfile.apply_spec(rt, programfile.load(example_path()))
    now = rt.clock.now()
    people = [{"id": secrets.token_hex(12), "email": f"m{i}@bench.example", "phone": f"+1555{i:07d}",
               "txn_id": new_txn_id()} for i in range(members)]
    people += [{"id": secrets.token_hex(12), "email": f"{name}@bench.example", "phone": f"+1666{i:07d}",
                "txn_id": new_txn_id()} for i, name in enumerate(("long", "short"))]
    rt.store.write(lambda conn: bulk_repo.seed_members(conn, program_id=123, db_id=1, currency_iid=1, people=people,
                                                       initial=INITIAL_UNITS, expires_at=None, now=now))
    for person, size in ((people[-2], history), (people[-1], 10)):
        step = 100_000
        for start in range(0, size, step):
            ids = [new_txn_id() for _ in range(min(step, size - start))]
            rt.store.write(lambda conn, ids=ids, pid=person["id"]: bulk_repo.seed_history(
                conn, program_id=123, profile_id=pid, currency_iid=1, ids=ids, amount=100, now=now))
    raw_token, _ = tokens.create(rt, "bench", ["admin"])
    return raw_token


def _load(args: tuple) -> dict:
    return load.run(*args)


def run_load(pool: Any, base: str, token: str, members: int, scenario: str, clients: int, seconds: float,
             rate: float | None = None) -> dict:
    """Scenarios run on wrk when it is installed (it leaves the CPU to the server), closed-loop or paced at
    `rate` per second; machines without wrk use the Python generator."""
    if wrk.available():
        return wrk.run(base, token, members, scenario, clients, seconds, rate=rate)
    return {**pool.apply(_load, ((base, token, members, scenario, clients, seconds, rate),)), "generator": "python"}


def history_latency(base: str, token: str, email: str, samples: int) -> dict[str, float]:
    """p50 of balance and of history pages (the first page and one deep in the history) for one member."""
    headers = {"Authorization": f"Bearer {token}"}
    member = {"loyalty_program_id": 123, "matching": "email", "email": email, "points_currency_iid": 1}
    out: dict[str, float] = {}
    with httpx.Client(base_url=base, timeout=60) as http:
        # Pages of 10 rows for both members, so the comparison is of the history's length, not the page's.
        first = http.post("/api/v1.1/loyalty/account/transactions", json={**member, "limit": 10}, headers=headers)
        cursor = first.json()["data"][4]["transaction_id"]
        for name, endpoint, params in (("balance", "loyalty/account/balance", {}),
                                       ("history_first_page", "loyalty/account/transactions", {"limit": 10}),
                                       ("history_later_page", "loyalty/account/transactions",
                                        {"limit": 10, "from_id": cursor})):
            times = []
            for _ in range(samples):
                started = time.perf_counter()
                http.post(f"/api/v1.1/{endpoint}", json={**member, **params}, headers=headers).raise_for_status()
                times.append(time.perf_counter() - started)
            times.sort()
            out[name] = round(times[len(times) // 2] * 1000, 3)
    return out


def bench_store(store: str, members: int, history: int, seconds: float, pg_admin: str, work: Path,
                expiry_lots: int = 1_000_000, scaling: bool = True, export: bool = True) -> dict:
    url = f"sqlite:///{work / 'bench.db'}" if store == "sqlite" else _pg_database(pg_admin, "loyalty_bench")
    rt = Runtime.from_settings(Settings(database_url=url))
    exports_dir = work / "exports"
    try:
        schema.upgrade(rt)
        started = time.perf_counter()
        token = seed(rt, members, history)
        result: dict[str, Any] = {"store": store, "members": members, "history_rows": history,
                                  "seed_seconds": round(time.perf_counter() - started, 1)}
        if store == "sqlite":
            result["raw_tps"] = round(raw.sqlite_ceiling(work / "raw.db", seconds), 1)
        else:
            result["raw_tps"] = round(raw.postgres_ceiling(url, seconds), 1)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            with serving(url, exports_dir) as server:
                result["rss_idle_mb"] = server.rss_mb()
                scenarios: dict[str, Any] = {}
                for name, clients in (("floor", CLIENTS_PER_PROCESS), ("balance", CLIENTS_PER_PROCESS),
                                      ("accrue", CLIENTS_PER_PROCESS), ("redeem", CLIENTS_PER_PROCESS),
                                      ("checkout_mix", CLIENTS_PER_PROCESS), ("hot_member", HOT_CLIENTS)):
                    summary = run_load(pool, server.base, token, members, name, clients, seconds)
                    summary["ratio_to_raw"] = round(summary["rps"] / result["raw_tps"], 3)
                    summary["rss_mb"] = server.rss_mb()
                    summary["verify"] = batch.verdict(rt)
                    scenarios[name] = summary
                half = scenarios["checkout_mix"]["rps"] / 2
                paced = run_load(pool, server.base, token, members, "checkout_mix", CLIENTS_PER_PROCESS, seconds,
                                 rate=half)
                scenarios["checkout_mix_at_half_peak"] = {**paced, "target_rps": round(half, 1)}
                result["scenarios"] = scenarios
                long_member = history_latency(server.base, token, "long@bench.example", 50)
                short_member = history_latency(server.base, token, "short@bench.example", 50)
                result["history"] = {"long_ms": long_member, "short_ms": short_member,
                                     "ratio": {k: round(long_member[k] / short_member[k], 2) for k in long_member}}
                result["rss_end_mb"] = server.rss_mb()
            if scaling:
                _progress(store, "accrue and the checkout mix with 1, 2 and 4 server processes")
                result["scaling"] = measure_scaling(rt, pool, url, exports_dir, token, members, seconds,
                                                    result["raw_tps"])
        if expiry_lots:
            # No server runs now: the sweeper timed here is the only one.
            _progress(store, f"seeding {expiry_lots} expired lots, then sweeping them")
            result["expiry"] = batch.measure_expiry(rt, expiry_lots)
        if export:
            _progress(store, "exporting the currency's transactions")
            with serving(url, exports_dir) as server:
                result["export"] = batch.measure_export(server, token)
    finally:
        rt.close()
    return result


def measure_scaling(rt: Runtime, pool: Any, url: str, exports_dir: Path, token: str, members: int,
                    seconds: float, raw_tps: float) -> dict[str, Any]:
    """Against `serve --workers N` for N = 1, 2, 4 (64 connections per process): accrue, the checkout mix, and
    the checkout mix paced at half of that peak (latency)."""
    out: dict[str, Any] = {}
    for workers in (1, 2, 4):
        clients = CLIENTS_PER_PROCESS * workers
        with serving(url, exports_dir, workers=workers) as server:
            accrue = run_load(pool, server.base, token, members, "accrue", clients, seconds)
            mix = run_load(pool, server.base, token, members, "checkout_mix", clients, seconds)
            half = run_load(pool, server.base, token, members, "checkout_mix", clients, seconds,
                            rate=mix["rps"] / 2)
            rss = server.rss_mb()
        out[str(workers)] = {
            "accrue": {**accrue, "ratio_to_raw": round(accrue["rps"] / raw_tps, 3)},
            "checkout_mix": mix,
            "checkout_mix_at_half_peak": {**half, "target_rps": round(mix["rps"] / 2, 1)},
            "rss_mb": rss, "verify": batch.verdict(rt),
        }
    return out


def _progress(store: str, what: str) -> None:
    print(f"[bench] {store}: {what}", flush=True)


def main(stores: list[str], members: int, history: int, seconds: float, out_dir: Path,
         pg_admin: str = "postgresql://postgres@127.0.0.1:5432/postgres", expiry_lots: int = 1_000_000,
         scaling: bool = True, export: bool = True) -> Path:
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(), "machine": {"cpus": os.cpu_count(),
                                                                 "python": platform.python_version()},
        "settings": {"members": members, "history_rows": history, "seconds_per_scenario": seconds,
                     "expiry_lots": expiry_lots, "scaling": scaling, "export": export},
        "stores": [],
    }
    with tempfile.TemporaryDirectory(prefix="loyalty-bench-") as tmp:
        for store in stores:
            _progress(store, f"seeding {members} members and a {history}-row history")
            work = Path(tmp) / store
            work.mkdir()
            results["stores"].append(bench_store(store, members, history, seconds, pg_admin, work,
                                                 expiry_lots=expiry_lots, scaling=scaling, export=export))
            print(json.dumps(results["stores"][-1], indent=2), flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"[bench] results written to {path}")
    return path
