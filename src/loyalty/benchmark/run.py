"""Orchestration of one benchmark run: seed a store, start `loyalty serve` as a separate process, drive each
scenario from a load process, sample the server's RSS, check the invariants after each scenario, and write
every figure (with its ratio to the raw store ceiling of the same run) to bench/results/*.json."""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from loyalty.benchmark import load, raw
from loyalty.config import Settings
from loyalty.services import programfile, schema, tokens, verify
from loyalty.services.demo import example_path
from loyalty.services.ids import new_txn_id
from loyalty.services.runtime import Runtime
from loyalty.storage import bulk_repo

INITIAL_UNITS = 100_000_000  # 1,000,000.00 stars each, so redemptions never run dry during a run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


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
    return pool.apply(_load, ((base, token, members, scenario, clients, seconds, rate),))


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


def bench_store(store: str, members: int, history: int, seconds: float, pg_admin: str, work: Path) -> dict:
    url = f"sqlite:///{work / 'bench.db'}" if store == "sqlite" else _pg_database(pg_admin, "loyalty_bench")
    rt = Runtime.from_settings(Settings(database_url=url))
    schema.upgrade(rt)
    started = time.perf_counter()
    token = seed(rt, members, history)
    result: dict[str, Any] = {"store": store, "members": members, "history_rows": history,
                              "seed_seconds": round(time.perf_counter() - started, 1)}
    if store == "sqlite":
        result["raw_tps"] = round(raw.sqlite_ceiling(work / "raw.db", seconds), 1)
    else:
        result["raw_tps"] = round(raw.postgres_ceiling(url.replace("postgresql://", "postgresql://", 1), seconds), 1)
    port = _free_port()
    env = {**os.environ, "LOYALTY_DATABASE_URL": url, "LOYALTY_EXPORT_DIR": str(work / "exports")}
    server = subprocess.Popen([sys.executable, "-m", "loyalty.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        result["rss_idle_mb"] = _rss_mb(server.pid)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            scenarios: dict[str, Any] = {}
            for name, clients in (("accrue", 32), ("redeem", 32), ("checkout_mix", 32), ("hot_member", 32)):
                summary = run_load(pool, base, token, members, name, clients, seconds)
                summary["ratio_to_raw"] = round(summary["rps"] / result["raw_tps"], 3)
                summary["rss_mb"] = _rss_mb(server.pid)
                report = verify.verify_all(rt)
                summary["verify"] = "OK" if not report.problems else f"DRIFT: {report.problems[:3]}"
                scenarios[name] = summary
            half = scenarios["checkout_mix"]["rps"] / 2
            paced = run_load(pool, base, token, members, "checkout_mix", 0, seconds, rate=half)
            scenarios["checkout_mix_at_half_peak"] = {**paced, "target_rps": round(half, 1)}
            result["scenarios"] = scenarios
        long_member = history_latency(base, token, "long@bench.example", 50)
        short_member = history_latency(base, token, "short@bench.example", 50)
        result["history"] = {"long_ms": long_member, "short_ms": short_member,
                             "ratio": {k: round(long_member[k] / short_member[k], 2) for k in long_member}}
        result["rss_end_mb"] = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
        rt.close()
    return result


def main(stores: list[str], members: int, history: int, seconds: float, out_dir: Path,
         pg_admin: str = "postgresql://postgres@127.0.0.1:5432/postgres") -> Path:
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(), "machine": {"cpus": os.cpu_count(),
                                                                 "python": platform.python_version()},
        "settings": {"members": members, "history_rows": history, "seconds_per_scenario": seconds},
        "stores": [],
    }
    with tempfile.TemporaryDirectory(prefix="loyalty-bench-") as tmp:
        for store in stores:
            print(f"[bench] {store}: seeding {members} members and a {history}-row history", flush=True)
            results["stores"].append(bench_store(store, members, history, seconds, pg_admin, Path(tmp)))
            print(json.dumps(results["stores"][-1], indent=2), flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"[bench] results written to {path}")
    return path
