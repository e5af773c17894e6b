"""Leased jobs and export tasks across real OS processes (multiprocessing 'spawn'), each process with its own
Runtime on one store: the SQLite file of the test, and separately the PostgreSQL test database.

These tests use the real clock (leases are compared across processes) and short leases (job_lease_sec).
- run_leased: a job never runs in two processes at once, nor twice within one period;
- process_queue: several queued exports processed by two processes: every task is done exactly once;
- a worker killed (SIGKILL) holding an export lease: once the lease runs out, another process completes the task.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import random
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from loyalty.config import Settings
from loyalty.domain.clock import SystemClock
from loyalty.domain.model import Txn
from loyalty.services import exports, jobs, programfile, tokens
from loyalty.services.commands import ExportCmd
from loyalty.services.demo import example_path
from loyalty.services.ids import new_txn_id
from loyalty.services.runtime import Runtime
from loyalty.storage import jobs_repo, ledger_repo
from loyalty.storage.tables import transactions
from loyalty.storage.uow import Store

CTX = multiprocessing.get_context("spawn")
JOIN_TIMEOUT = 120.0
ADMIN = tokens.Principal(0, "test", frozenset(tokens.ROLES), None, None)


def runtime(url: str, export_dir: Path, lease_sec: float) -> Runtime:
    cfg = Settings(database_url=url, run_jobs=False, job_lease_sec=lease_sec, export_dir=export_dir)
    return Runtime(cfg, Store.from_url(url, group_commit=cfg.group_commit_max), SystemClock())


# --- child process bodies (module level, so that 'spawn' can import them) ---------------------------------------


def _child(target: Callable[..., None], report: str, *args: Any) -> None:
    try:
        target(*args)
    except BaseException:
        Path(report).write_text(traceback.format_exc())
        raise


def leased_child(url: str, name: str, log: str, every_sec: float, duration: float, barrier: Any,
                 attempts_file: str) -> None:
    rt = runtime(url, Path(log).parent, lease_sec=30)
    owner = jobs.new_owner()
    pid = os.getpid()

    def work() -> None:
        began = time.time()
        time.sleep(random.uniform(0.005, 0.03))
        with open(log, "a") as fh:
            fh.write(f"{pid} {began!r} {time.time()!r}\n")
            fh.flush()
            os.fsync(fh.fileno())

    barrier.wait(timeout=90)
    attempts = wins = 0
    stop = time.time() + duration
    while time.time() < stop:
        attempts += 1
        if jobs.run_leased(rt, name, owner, timedelta(seconds=every_sec), work):
            wins += 1
        time.sleep(random.uniform(0, 0.01))
    Path(attempts_file).write_text(f"{attempts} {wins}")
    rt.close()


def queue_child(url: str, export_dir: str, log: str, barrier: Any) -> None:
    rt = runtime(url, Path(export_dir), lease_sec=60)
    owner = jobs.new_owner()
    original = exports.run_task

    def logged_run_task(rt_: Runtime, task: dict[str, Any], owner_: str, *args: Any, **kwargs: Any) -> int:
        rows = original(rt_, task, owner_, *args, **kwargs)
        with open(log, "a") as fh:
            fh.write(f"{task['id']} {owner_} {rows}\n")
        return rows

    exports.run_task = logged_run_task  # process_queue looks it up at call time
    barrier.wait(timeout=90)
    idle = 0
    while idle < 3:
        done = exports.process_queue(rt, owner, limit=1)
        idle = 0 if done else idle + 1
        time.sleep(random.uniform(0, 0.01))
    rt.close()


def claim_and_hang(url: str, export_dir: str, lease_sec: float, claimed: str) -> None:
    rt = runtime(url, Path(export_dir), lease_sec=lease_sec)
    owner = jobs.new_owner()
    task = rt.store.write(lambda conn: jobs_repo.claim_task(conn, owner, rt.clock.now(),
                                                            timedelta(seconds=lease_sec)))
    Path(claimed).write_text(f"{task['id'] if task else ''} {owner}")
    time.sleep(600)  # "working" until killed


def start(target: Callable[..., None], tmp: Path, *args: Any) -> tuple[Any, Path]:
    report = tmp / f"child-{target.__name__}-{random.getrandbits(32)}.err"
    proc = CTX.Process(target=_child, args=(target, str(report), *args), daemon=True)
    proc.start()
    return proc, report


def join_all(procs: list[tuple[Any, Path]]) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT
    for proc, _ in procs:
        proc.join(max(0.1, deadline - time.monotonic()))
    for proc, report in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(10)
            pytest.fail(f"child {proc.pid} did not finish within {JOIN_TIMEOUT}s")
        assert proc.exitcode == 0, report.read_text() if report.exists() else f"exit code {proc.exitcode}"


# --- data for exports --------------------------------------------------------------------------------------------


def seed_transactions(rt: Runtime, n: int) -> None:
    """n committed stars/status_points transactions of a few profiles, straight into the store."""
    base = datetime(2025, 1, 1, tzinfo=UTC)
    profiles = [f"{i:024x}" for i in range(1, 6)]
    rows = []
    for i in range(n):
        rows.append(asdict(Txn(
            id=new_txn_id(), program_id=123, profile_id=profiles[i % 5], currency_iid=1 if i % 4 else 2,
            eid=None, type="accrual", status="committed", amount=i + 1, balance_before=0, balance_after=i + 1,
            created_at=base + timedelta(minutes=i), recorded_at=base + timedelta(minutes=i),
            description=f"row {i}, seeded")))
    rt.store.write(lambda conn: conn.execute(insert(transactions), rows))


def expected_count(rt: Runtime, task_id: str) -> int:
    def read(conn: Any) -> int:
        t = jobs_repo.get_task(conn, task_id)
        assert t is not None
        return ledger_repo.export_count(conn, t["program_id"], t["currency_iid"], t["date_from"], t["date_to"],
                                        t["from_id"])

    return rt.store.read(read)


def csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


@pytest.fixture
def prt(store_url: str, tmp_path: Path) -> Any:
    """A runtime on the test store with the real clock and the example program applied."""
    runtime_ = runtime(store_url, tmp_path / "exports", lease_sec=60)
    programfile.apply_spec(runtime_, programfile.load(example_path()))
    yield runtime_
    runtime_.close()


# --- (a) run_leased ------------------------------------------------------------------------------------------------


def test_a_leased_job_never_runs_twice_at_once_or_within_its_period(store_url, tmp_path):
    every = 0.25
    log = tmp_path / "runs.log"
    log.touch()
    barrier = CTX.Barrier(2)
    procs = [start(leased_child, tmp_path, store_url, "test-job", str(log), every, 4.0, barrier,
                   str(tmp_path / f"attempts-{i}")) for i in range(2)]
    join_all(procs)

    runs = sorted((float(b), float(e), int(p)) for p, b, e in (line.split() for line in log.read_text().splitlines()))
    attempts = [tuple(map(int, (tmp_path / f"attempts-{i}").read_text().split())) for i in range(2)]
    assert sum(w for _, w in attempts) == len(runs)
    assert sum(a for a, _ in attempts) > 4 * len(runs)  # the processes really competed for the lease
    assert 4 <= len(runs) <= 4.0 / every + 2
    for (b1, e1, p1), (b2, e2, p2) in zip(runs, runs[1:], strict=False):
        assert b2 >= e1, f"runs overlap: {p1} [{b1}, {e1}] and {p2} [{b2}, {e2}]"
        # the next run may only start a whole period after the previous one finished
        assert b2 - e1 >= every - 0.002, f"ran twice within one period: gap {b2 - e1:.3f}s < {every}s"

    rt = runtime(store_url, tmp_path, lease_sec=30)
    try:
        (row,) = [r for r in jobs.job_status(rt) if r["name"] == "test-job"]
        assert row["runs"] == len(runs)
        assert row["lease_owner"] is None and row["lease_until"] is None and row["last_error"] is None
    finally:
        rt.close()


# --- (b) many exports, two processes -------------------------------------------------------------------------------


def test_queued_exports_are_each_done_exactly_once_by_two_processes(prt, store_url, tmp_path):
    seed_transactions(prt, 2000)
    task_ids = []
    for i in range(8):
        cmd = ExportCmd(loyalty_program_id=123, points_currency_iid=1 if i % 3 else 2,
                        date_from=f"2025-01-01T{i:02d}:00:00Z", date_to="2025-01-03T00:00:00Z")
        task_ids.append(exports.create(prt, ADMIN, cmd))
    export_dir = tmp_path / "exports"
    logs = [tmp_path / f"queue-{i}.log" for i in range(2)]
    barrier = CTX.Barrier(2)
    procs = [start(queue_child, tmp_path, store_url, str(export_dir), str(log), barrier) for log in logs]
    join_all(procs)

    done: dict[str, list[tuple[str, int]]] = {}
    owners_seen = set()
    for log in logs:
        for line in (log.read_text().splitlines() if log.exists() else []):
            task_id, owner, rows = line.split()
            done.setdefault(task_id, []).append((owner, int(rows)))
            owners_seen.add(owner)
    assert sorted(done) == sorted(task_ids)
    assert all(len(v) == 1 for v in done.values()), {k: v for k, v in done.items() if len(v) != 1}
    for task_id in task_ids:
        task = prt.store.read(lambda conn, t=task_id: jobs_repo.get_task(conn, t))
        want = expected_count(prt, task_id)
        assert task["status"] == "done" and task["error"] is None, task
        assert task["lease_owner"] is None
        assert int(task["rows"]) == want == done[task_id][0][1]
        path = Path(task["file"])
        assert path.parent == export_dir.resolve()
        rows = csv_rows(path)
        assert rows[0] == exports.COLUMNS and len(rows) == want + 1
    assert not list(export_dir.glob("*.part"))
    # nothing left to claim
    assert prt.store.write(lambda conn: jobs_repo.claim_task(conn, "late", prt.clock.now(),
                                                             timedelta(seconds=5))) is None


# --- (c) a killed worker -------------------------------------------------------------------------------------------


def test_a_killed_workers_export_is_completed_by_another_process_after_the_lease(prt, store_url, tmp_path):
    seed_transactions(prt, 300)
    lease = 3.0
    export_dir = tmp_path / "exports"
    task_id = exports.create(prt, ADMIN, ExportCmd(loyalty_program_id=123, points_currency_eid="stars",
                                                   date_from="2025-01-01T00:00:00Z",
                                                   date_to="2025-12-31T23:59:59Z"))
    claimed = tmp_path / "claimed"
    proc, report = start(claim_and_hang, tmp_path, store_url, str(export_dir), lease, str(claimed))
    deadline = time.monotonic() + 90
    while not claimed.exists() or not claimed.read_text().strip():
        assert proc.is_alive() or proc.exitcode is None, report.read_text() if report.exists() else "child died"
        assert time.monotonic() < deadline, "the worker never claimed the task"
        time.sleep(0.05)
    claimed_id, dead_owner = claimed.read_text().split()
    assert claimed_id == task_id
    task = prt.store.read(lambda conn: jobs_repo.get_task(conn, task_id))
    assert task["status"] == "running" and task["lease_owner"] == dead_owner

    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL

    survivor = runtime(store_url, export_dir, lease_sec=lease)
    try:
        owner = jobs.new_owner()
        lease_until = task["lease_until"]
        if lease_until - survivor.clock.now() > timedelta(seconds=0.5):
            # still leased: nobody may take it yet
            assert exports.process_queue(survivor, owner) == 0
            assert prt.store.read(lambda conn: jobs_repo.get_task(conn, task_id))["lease_owner"] == dead_owner
        while survivor.clock.now() <= lease_until:
            time.sleep(0.05)
        assert exports.process_queue(survivor, owner) == 1
        task = prt.store.read(lambda conn: jobs_repo.get_task(conn, task_id))
        want = expected_count(prt, task_id)
        assert task["status"] == "done" and task["error"] is None and task["lease_owner"] is None
        assert int(task["rows"]) == want > 0
        rows = csv_rows(Path(task["file"]))
        assert rows[0] == exports.COLUMNS and len(rows) == want + 1
        assert exports.process_queue(survivor, owner) == 0
    finally:
        survivor.close()
