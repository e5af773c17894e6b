"""Concurrent writers never overspend, never move a transaction_eid twice, and leave the store consistent
(engine.md §3.5, §3.6; design.md "Concurrency"). Threads share one Runtime (its Store pools connections);
on PostgreSQL separate processes share the database; one test goes through real HTTP to `loyalty serve`.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from loyalty.domain.errors import LoyaltyError
from loyalty.services import ledger, members, profiles, tokens
from loyalty.services.commands import AccrueCmd, BalanceCmd, RedeemCmd, RegisterCmd, TxnRefCmd
from loyalty.services.runtime import Runtime
from loyalty.services.verify import verify_all
from loyalty.storage.tables import transactions
from tests.concurrency import _workers
from tests.conftest import START

ADMIN = tokens.Principal(1, "t", frozenset(tokens.ROLES), None, None)
THREADS = 20


def who(email: str) -> dict[str, Any]:
    return {"loyalty_program_id": 123, "matching": "email", "email": email}


def enrol(rt: Runtime, email: str, balance: str = "1000") -> None:
    """A member whose active balance is exactly `balance` stars (the 50.00 initial balance topped up)."""
    profiles.add(rt, ADMIN, 1, {"email": email})
    members.register(rt, ADMIN, RegisterCmd(**who(email)))
    ledger.accrue(rt, ADMIN, AccrueCmd(**who(email), amount=str(int(balance) - 50)))
    assert ledger.balance(rt, ADMIN, BalanceCmd(**who(email))).active == f"{int(balance)}.00"


def at_once(n: int, task: Callable[[int], Any]) -> list[Any]:
    """Run task(0..n-1) in n threads released together; return each result or the LoyaltyError it raised."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait(timeout=30)
        try:
            return task(i)
        except LoyaltyError as exc:
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def codes(results: list[Any]) -> Counter[str]:
    return Counter(r.code if isinstance(r, LoyaltyError) else "ok" for r in results)


def assert_clean(rt: Runtime) -> None:
    report = verify_all(rt)
    assert not report.problems, report.problems


# --- (a) many redemptions, one account --------------------------------------------------------------------------

def test_concurrent_redemptions_never_overspend(rt, program):
    enrol(rt, "spender@example.com")
    results = at_once(THREADS, lambda i: ledger.redeem(rt, ADMIN, RedeemCmd(**who("spender@example.com"),
                                                                             amount="100")))
    assert codes(results) == {"ok": 10, "insufficient_points": THREADS - 10}
    assert sorted(r.balance for r in results if not isinstance(r, LoyaltyError)) == \
        [f"{100 * k}.00" for k in range(10)]  # each success saw the one before it
    b = ledger.balance(rt, ADMIN, BalanceCmd(**who("spender@example.com")))
    assert (b.active, b.total, b.held) == ("0.00", "0.00", "0.00")
    assert_clean(rt)


def test_concurrent_temp_redemptions_hold_exactly_the_balance(rt, program):
    enrol(rt, "holder@example.com")
    results = at_once(THREADS, lambda i: ledger.redeem(rt, ADMIN, RedeemCmd(**who("holder@example.com"),
                                                                             amount="100", is_temp=True)))
    assert codes(results) == {"ok": 10, "insufficient_points": THREADS - 10}
    b = ledger.balance(rt, ADMIN, BalanceCmd(**who("holder@example.com")))
    assert (b.active, b.held, b.total) == ("0.00", "1000.00", "1000.00")
    assert_clean(rt)


# --- (b) temp redemptions with commits and rollbacks, mixed ----------------------------------------------------

def test_concurrent_holds_commits_and_rollbacks_keep_the_books(rt, program):
    email = "mixed@example.com"
    enrol(rt, email)

    def task(i: int) -> tuple[str, str]:
        """Even threads hold then commit, odd ones hold then roll back, every fourth spends outright."""
        if i % 4 == 3:
            r = ledger.redeem(rt, ADMIN, RedeemCmd(**who(email), amount="50"))
            return "spent", r.transaction_id
        r = ledger.redeem(rt, ADMIN, RedeemCmd(**who(email), amount="50", is_temp=True))
        if i % 2 == 0:
            ledger.commit(rt, ADMIN, TxnRefCmd(transaction_id=r.transaction_id))
            return "committed", r.transaction_id
        ledger.rollback(rt, ADMIN, TxnRefCmd(transaction_id=r.transaction_id))
        return "rolled_back", r.transaction_id

    rounds = [at_once(THREADS, task) for _ in range(2)]
    outcomes = [r for results in rounds for r in results]
    unexpected = [r for r in outcomes if isinstance(r, LoyaltyError) and r.code != "insufficient_points"]
    assert not unexpected, unexpected
    done = [r for r in outcomes if not isinstance(r, LoyaltyError)]
    spent = 50 * sum(1 for kind, _ in done if kind in ("spent", "committed"))
    assert spent <= 1000
    b = ledger.balance(rt, ADMIN, BalanceCmd(**who(email)))
    assert (b.active, b.held, b.total) == (f"{1000 - spent}.00", "0.00", f"{1000 - spent}.00")
    statuses = dict(rt.store.read(lambda conn: conn.execute(
        select(transactions.c.id, transactions.c.status)).all()))
    for kind, txn_id in done:
        assert statuses[txn_id] == ("committed" if kind == "spent" else kind)
    assert_clean(rt)


def test_racing_commit_and_rollback_of_one_hold_resolve_it_once(rt, program):
    email = "racer@example.com"
    enrol(rt, email)
    holds = [ledger.redeem(rt, ADMIN, RedeemCmd(**who(email), amount="100", is_temp=True)).transaction_id
             for _ in range(5)]

    def task(i: int) -> Any:
        ref = TxnRefCmd(transaction_id=holds[i // 4])
        return [ledger.commit, ledger.rollback, ledger.cancel, ledger.commit][i % 4](rt, ADMIN, ref)

    results = at_once(4 * len(holds), task)
    unexpected = [r for r in results if isinstance(r, LoyaltyError) and r.code != "transaction_state"]
    assert not unexpected, unexpected
    statuses = dict(rt.store.read(lambda conn: conn.execute(
        select(transactions.c.id, transactions.c.status)).all()))
    kept = sum(1 for h in holds if statuses[h] == "committed")
    assert all(statuses[h] in ("committed", "rolled_back", "cancelled") for h in holds)
    b = ledger.balance(rt, ADMIN, BalanceCmd(**who(email)))
    assert (b.active, b.held) == (f"{1000 - 100 * kept}.00", "0.00")
    assert_clean(rt)


# --- (c) one transaction_eid from many threads -----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["accrue", "redeem"])
def test_concurrent_duplicates_of_one_eid_move_points_once(rt, program, kind):
    email = "dup@example.com"
    enrol(rt, email)
    call, cmd = (ledger.accrue, AccrueCmd) if kind == "accrue" else (ledger.redeem, RedeemCmd)
    results = at_once(THREADS, lambda i: call(rt, ADMIN, cmd(**who(email), amount="25", transaction_eid="order-1")))
    assert codes(results) == {"ok": THREADS}
    assert len({r.transaction_id for r in results}) == 1
    expected = "1025.00" if kind == "accrue" else "975.00"
    assert ledger.balance(rt, ADMIN, BalanceCmd(**who(email))).active == expected
    count = rt.store.read(lambda conn: len(conn.execute(
        select(transactions.c.id).where(transactions.c.eid == "order-1")).all()))
    assert count == 1
    assert_clean(rt)


@pytest.mark.parametrize("spread", ["one member", "four members"])
def test_concurrent_different_payloads_of_one_eid_let_exactly_one_win(rt, program, spread):
    emails = [f"eid{k}@example.com" for k in range(1 if spread == "one member" else 4)]
    for email in emails:
        enrol(rt, email)

    def task(i: int) -> Any:
        return ledger.accrue(rt, ADMIN, AccrueCmd(**who(emails[i % len(emails)]), amount=str(i + 1),
                                                  transaction_eid="shared-eid"))

    results = at_once(THREADS, task)
    assert codes(results) == {"ok": 1, "duplicate_transaction_eid": THREADS - 1}
    winner = next(i for i, r in enumerate(results) if not isinstance(r, LoyaltyError))
    for k, email in enumerate(emails):
        gained = winner + 1 if k == winner % len(emails) else 0
        assert ledger.balance(rt, ADMIN, BalanceCmd(**who(email))).active == f"{1000 + gained}.00"
    assert_clean(rt)


# --- (d) several processes on one store (each with its own group-commit writer) --------------------------------

@pytest.mark.slow
def test_processes_redeeming_from_one_member_never_overspend(store_url, clock):
    from loyalty.services import programfile
    from loyalty.services.demo import example_path
    from tests.conftest import make_runtime

    rt = make_runtime(store_url, clock)
    try:
        programfile.apply_spec(rt, programfile.load(example_path()))
        enrol(rt, "procs@example.com")
        ctx = multiprocessing.get_context("spawn")
        processes, times = 4, 5  # 20 redemptions of 100 asked of 1,000
        barrier = ctx.Barrier(processes)
        queue = ctx.Queue()
        workers = [ctx.Process(target=_workers.redeem_many_into,
                               args=(queue, store_url, START.isoformat(), "procs@example.com", "100", times, barrier))
                   for _ in range(processes)]
        for w in workers:
            w.start()
        outcomes: Counter[str] = Counter()
        for _ in workers:
            outcomes.update(queue.get(timeout=120))
        for w in workers:
            w.join(timeout=30)
        assert outcomes == {"ok": 10, "insufficient_points": processes * times - 10}
        b = ledger.balance(rt, ADMIN, BalanceCmd(**who("procs@example.com")))
        assert (b.active, b.total) == ("0.00", "0.00")
        assert_clean(rt)
    finally:
        rt.close()


# --- over real HTTP ----------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """`loyalty demo` on a fresh SQLite file, then `loyalty serve` on a free port: (base URL, token, env)."""
    loyalty_cli = shutil.which("loyalty")
    command = [loyalty_cli] if loyalty_cli else [sys.executable, "-m", "loyalty.cli"]
    env = {**os.environ, "LOYALTY_DATABASE_URL": f"sqlite:///{tmp_path / 'served.db'}",
           "LOYALTY_EXPORT_DIR": str(tmp_path / "exports")}
    demo = subprocess.run([*command, "demo", "--quiet"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert demo.returncode == 0, demo.stderr
    token = demo.stdout.strip().splitlines()[-1]
    port = _free_port()
    server = subprocess.Popen([*command, "serve", "--port", str(port), "--no-jobs"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else "server exited"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield base, token, env
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.slow
def test_http_redemptions_from_many_threads_never_overspend(served):
    import httpx

    base, token, env = served
    anna = {"loyalty_program_id": 123, "matching": "email", "email": "anna@example.com"}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"{base}/api/v1.1/", headers=headers, timeout=30,
                      limits=httpx.Limits(max_connections=THREADS)) as client:
        start = client.post("loyalty/account/balance", json=anna).json()
        assert start["data"]["active_balance"] == "170.50", start

        def spend(i: int) -> tuple[int, dict[str, Any]]:
            r = client.post("loyalty/redeeme_points", json={**anna, "amount": "10.00"})
            return r.status_code, r.json()

        replies = at_once(THREADS, spend)
        statuses = Counter(status for status, _ in replies)
        errors = Counter(body.get("error_code") for _, body in replies if body.get("error") != 0)
        assert not [b for s, b in replies if s >= 500], replies
        assert sum(1 for _, b in replies if b.get("error") == 0) == 17, (statuses, errors)
        assert errors == {"insufficient_points": THREADS - 17}, errors
        end = client.post("loyalty/account/balance", json=anna).json()["data"]
        assert (end["active_balance"], end["total_balance"]) == ("0.50", "0.50")
    loyalty_cli = shutil.which("loyalty")
    command = [loyalty_cli] if loyalty_cli else [sys.executable, "-m", "loyalty.cli"]
    verified = subprocess.run([*command, "verify"], env=env, capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
