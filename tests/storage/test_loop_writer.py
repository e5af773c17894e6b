"""Store code run on the event loop (storage/cooperative.py, storage/loop_writer.py): on both stores, group
commits run by the loop apply every write once in shared batches, a failing unit fails alone, writes handed over
from other threads land, and shutdown finishes what is queued; on SQLite the commit runs on a thread while the
loop goes on, and a writer waiting for another process's turn does not stop the loop; on PostgreSQL reads
suspend instead of blocking the loop, and the loop gate bounds how many suspended use cases hold a pooled
connection.

Every test runs its use cases with `run_suspendable` on a fresh event loop, the way `loyalty serve` does.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, insert, text
from sqlalchemy.exc import IntegrityError

from loyalty.storage import loop_writer
from loyalty.storage.checkpoints import Checkpoints
from loyalty.storage.cooperative import LoopGate, run_suspendable
from loyalty.storage.engine import sqlite_path
from loyalty.storage.uow import Store
from tests.storage.test_committer import (
    WAIT,
    inserter,
    put,
    reset_scratch,
    scratch_child,
    scratch_store,
    stored,
)


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    with scratch_store(pg_url, writers=2) as s:
        yield s


@pytest.fixture
def loop_store(store_url: str) -> Iterator[Store]:
    """Either store (two writers on PostgreSQL)."""
    with scratch_store(store_url, writers=2) as s:
        yield s


def on_loop(store: Store, main: Any) -> Any:
    """Run `main()` (a coroutine function) on a new loop with the store's writers attached, then detach."""

    async def run() -> Any:
        store.attach_loop(asyncio.get_running_loop())
        try:
            return await asyncio.wait_for(main(), WAIT)
        finally:
            await store.detach_loop()

    return asyncio.run(run())


def test_writes_from_use_cases_on_the_loop_are_each_applied_once_by_the_loop(loop_store):
    count = 60

    async def main() -> list[int]:
        return list(await asyncio.gather(*(run_suspendable(loop_store.write, inserter(i, f"k{i % 5}"), i % 5)
                                           for i in range(count))))

    assert on_loop(loop_store, main) == list(range(count))  # each caller got its own unit's result
    assert stored(loop_store) == {i: f"k{i % 5}" for i in range(count)}
    assert loop_store.committers == []  # no writer thread was started: the loop ran every batch


def test_the_loop_writers_share_transactions(loop_store):
    seen: dict[str, int] = {}

    async def main() -> None:
        await asyncio.gather(*(run_suspendable(loop_store.write, inserter(i), 0) for i in range(40)))
        committer = loop_store._loop_committers[hash(0) % len(loop_store._loop_committers)]
        seen.update(batches=committer.batches, units=committer.units)

    on_loop(loop_store, main)
    assert seen["units"] == 40
    assert seen["batches"] < seen["units"]


def test_a_failing_unit_in_a_loop_batch_fails_alone(loop_store):
    def refuse(conn: Any) -> None:
        put(conn, 1000, "refused")
        raise ValueError("refused")

    def duplicate(conn: Any) -> None:
        put(conn, 1, "again")  # the primary key is taken: a store error that aborts the statement

    async def main() -> list[Any]:
        jobs = [run_suspendable(loop_store.write, inserter(i)) for i in range(1, 4)]
        jobs += [run_suspendable(loop_store.write, refuse), run_suspendable(loop_store.write, duplicate)]
        jobs += [run_suspendable(loop_store.write, inserter(i)) for i in range(4, 7)]
        return list(await asyncio.gather(*jobs, return_exceptions=True))

    results = on_loop(loop_store, main)
    assert results[:3] == [1, 2, 3] and results[5:] == [4, 5, 6]
    assert isinstance(results[3], ValueError)
    assert isinstance(results[4], Exception)  # the duplicate key, after its retries
    assert stored(loop_store) == {i: "x" for i in range(1, 7)}


def test_writes_handed_over_by_other_threads_land_while_the_loop_runs(loop_store):
    async def main() -> list[int]:
        def from_thread(i: int) -> int:
            return loop_store.write(inserter(i))

        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(None, from_thread, i) for i in range(20))))

    assert on_loop(loop_store, main) == list(range(20))
    assert stored(loop_store) == {i: "x" for i in range(20)}


def test_detaching_finishes_the_queued_writes_and_later_writes_use_threads(loop_store):
    async def main() -> None:
        for i in range(10):
            asyncio.ensure_future(run_suspendable(loop_store.write, inserter(i)))
        await asyncio.sleep(0)  # the use cases have queued their units; detaching must still commit them

    on_loop(loop_store, main)
    assert stored(loop_store) == {i: "x" for i in range(10)}
    assert loop_store.write(inserter(99)) == 99  # no loop any more: a writer thread takes it
    assert len(loop_store.committers) == loop_store.writers


def test_a_unit_run_by_the_loop_writer_cannot_start_another_write(loop_store):
    def nested(conn: Any) -> None:
        loop_store.write(inserter(7))

    async def main() -> BaseException | None:
        try:
            await run_suspendable(loop_store.write, nested)
        except RuntimeError as exc:
            return exc
        return None

    err = on_loop(loop_store, main)
    assert err is not None and "may not start another write" in str(err)
    assert stored(loop_store) == {}


def test_a_slow_read_suspends_its_use_case_and_the_loop_serves_others_meanwhile(pg_store):
    finished: list[str] = []

    def slow(conn: Any) -> None:
        conn.execute(text("SELECT pg_sleep(0.5)"))
        finished.append("slow")

    def fast(conn: Any) -> None:
        conn.execute(text("SELECT 1"))
        finished.append("fast")

    async def main() -> None:
        first = asyncio.ensure_future(run_suspendable(pg_store.read, slow))
        await asyncio.sleep(0.05)  # the slow read is now waiting for the server
        await run_suspendable(pg_store.read, fast)
        finished.append("loop free")
        await first

    on_loop(pg_store, main)
    assert finished == ["fast", "loop free", "slow"]  # a blocking read would have finished "slow" first


def test_the_loop_gate_bounds_suspended_readers_and_lets_every_one_through(pg_store):
    pg_store._loop_gate = LoopGate(2)
    holding, most = 0, 0
    lock = threading.Lock()

    def read(conn: Any) -> None:
        nonlocal holding, most
        with lock:
            holding += 1
            most = max(most, holding)
        conn.execute(text("SELECT pg_sleep(0.05)"))
        with lock:
            holding -= 1

    async def main() -> None:
        await asyncio.gather(*(run_suspendable(pg_store.read, read) for _ in range(8)))

    on_loop(pg_store, main)
    assert most == 2


def test_a_use_case_cancelled_during_a_read_leaves_no_broken_session_behind(pg_store):
    def slow(conn: Any) -> None:
        conn.execute(text("SELECT pg_sleep(5)"))

    def quick(conn: Any) -> int:
        return int(conn.execute(text("SELECT 41 + 1")).scalar_one())

    async def main() -> list[int]:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(run_suspendable(pg_store.read, slow), 0.2)
        return [await run_suspendable(pg_store.read, quick) for _ in range(pg_store._idle_cap + 2)]

    assert on_loop(pg_store, main) == [42] * (pg_store._idle_cap + 2)  # every later read got a working session


def test_a_request_cancelled_while_its_commit_is_pending_leaves_its_write_and_its_neighbours_answered(loop_store):
    async def main() -> list[Any]:
        jobs = [asyncio.ensure_future(run_suspendable(loop_store.write, inserter(i), 0)) for i in range(10)]
        await asyncio.sleep(0)  # every use case has queued its unit and waits for the commit
        jobs[3].cancel()
        return list(await asyncio.gather(*jobs, return_exceptions=True))

    results = on_loop(loop_store, main)
    assert isinstance(results[3], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 3] == [i for i in range(10) if i != 3]
    assert stored(loop_store) == {i: "x" for i in range(10)}  # the cancelled caller's write stands


def test_a_write_handed_over_by_a_thread_after_the_loop_writer_stopped_is_run_by_a_writer_thread(loop_store):
    async def main() -> Any:
        stopped = loop_store._loop_committers[0]
        await loop_store.detach_loop()
        # A thread that picked the loop writer before the detach hands its unit over afterwards.
        late = await asyncio.get_running_loop().run_in_executor(None, stopped.submit, inserter(5))
        return await asyncio.wrap_future(late)

    assert on_loop(loop_store, main) == 5
    assert stored(loop_store) == {5: "x"}
    assert len(loop_store.committers) == loop_store.writers  # the writer threads took it


def test_an_unreachable_store_answers_503_on_the_loop_and_the_server_still_starts(tmp_path):
    from fastapi.testclient import TestClient

    from loyalty.api.app import create_app
    from loyalty.config import Settings
    from loyalty.domain.errors import Unavailable
    from loyalty.services.runtime import Runtime

    url = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1
    store = Store.from_url(url, group_commit=128)
    try:
        async def main() -> BaseException | None:
            try:
                await run_suspendable(store.read, lambda conn: conn.execute(text("SELECT 1")))
            except Unavailable as exc:
                return exc
            return None

        assert isinstance(asyncio.run(main()), Unavailable)
    finally:
        store.dispose()

    rt = Runtime.from_settings(Settings(database_url=url, run_jobs=False, export_dir=tmp_path))
    try:
        with TestClient(create_app(rt, run_jobs=False)) as client:  # the lifespan starts without the store
            answer = client.post("/api/v1.1/loyalty/account/balance", headers={"Authorization": "Bearer x"},
                                 json={"loyalty_program_id": 123, "matching": "email", "email": "a@example.com"})
        assert answer.status_code == 503
        assert answer.json()["error"] == 503
    finally:
        rt.close()


# --- SQLite: the commit on a thread, the writer turn waited for off the loop --------------------------------

@pytest.fixture
def sqlite_loop_store(sqlite_url: str) -> Iterator[Store]:
    with scratch_store(sqlite_url) as s:
        yield s


def slow_commits(store: Store, seconds: float) -> list[str]:
    """Make every commit of the store's writer take `seconds` (a slow disk); returns the committing threads."""
    threads: list[str] = []

    @event.listens_for(store.engines.writer, "commit")
    def slow(_conn: Any) -> None:
        threads.append(threading.current_thread().name)
        time.sleep(seconds)

    return threads


def test_on_sqlite_the_loop_writer_commits_on_a_thread_while_the_loop_goes_on(sqlite_loop_store):
    store = sqlite_loop_store
    committed_on = slow_commits(store, 0.3)

    async def main() -> tuple[int, str, int]:
        write = asyncio.ensure_future(run_suspendable(store.write, inserter(1)))
        ticks = 0
        while not write.done():
            ticks += 1
            await asyncio.sleep(0.01)
        return await write, threading.current_thread().name, ticks

    result, loop_thread, ticks = on_loop(store, main)
    assert result == 1 and stored(store) == {1: "x"}
    assert committed_on and loop_thread not in committed_on  # even a batch of one commits off the loop
    assert ticks >= 10  # the loop kept running through the 0.3 s commit


def test_on_sqlite_quick_commits_run_on_the_loop_and_commits_that_turn_slow_go_back_to_the_thread(
        sqlite_loop_store, monkeypatch):
    store = sqlite_loop_store
    # The disk's own fsync times vary from one machine (and minute) to the next: "quick" here is under 5 ms,
    # still below the first guess of 10 ms, and the slow commits take ten times that.
    monkeypatch.setattr(loop_writer, "INLINE_COMMIT_SEC", 0.005)
    committed_on: list[str] = []
    slow = threading.Event()

    @event.listens_for(store.engines.writer, "commit")
    def record(_conn: Any) -> None:
        committed_on.append(threading.current_thread().name)
        if slow.is_set():
            time.sleep(0.05)

    async def main() -> str:
        for i in range(60):
            await run_suspendable(store.write, inserter(i))
        slow.set()
        for i in range(60, 80):
            await run_suspendable(store.write, inserter(i))
        return threading.current_thread().name

    loop_thread = on_loop(store, main)
    assert committed_on[0] != loop_thread  # a disk is taken for slow until its commits show otherwise
    assert committed_on[59] == loop_thread  # these commits took well under INLINE_COMMIT_SEC
    assert committed_on[-1] != loop_thread  # 50 ms commits went back to the thread
    assert len(stored(store)) == 80


def test_a_loop_writer_stopped_while_its_commit_is_in_flight_answers_with_the_commit_s_outcome(sqlite_loop_store):
    store = sqlite_loop_store
    slow_commits(store, 0.3)

    async def main() -> Any:
        writes = [asyncio.ensure_future(run_suspendable(store.write, inserter(i))) for i in range(3)]
        await asyncio.sleep(0.1)  # the batch's commit is in flight
        writer = store._loop_committers[0]
        writer._task.cancel()  # as a shutdown that stopped waiting would
        results = await asyncio.gather(*writes, return_exceptions=True)
        await asyncio.sleep(0)
        return results, writer._task.cancelled()

    results, writer_cancelled = on_loop(store, main)
    assert results == [0, 1, 2]  # durable, and their callers were told so
    assert writer_cancelled
    assert stored(store) == {0: "x", 1: "x", 2: "x"}


def test_a_loop_writer_waiting_for_another_process_s_turn_leaves_the_loop_running(sqlite_loop_store, sqlite_url):
    store = sqlite_loop_store
    path = sqlite_path(sqlite_url)
    assert path is not None
    other = os.open(path.with_name(path.name + "-writer.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(other, fcntl.LOCK_EX)  # another process holds the writer turn (a separate open file: it conflicts)
    try:
        async def main() -> tuple[int, int]:
            write = asyncio.ensure_future(run_suspendable(store.write, inserter(1)))
            ticks = 0
            for _ in range(20):
                await asyncio.sleep(0.01)
                ticks += 1
            assert not write.done()  # it waits for the turn...
            fcntl.flock(other, fcntl.LOCK_UN)  # ...which the other process now hands on
            return await write, ticks

        result, ticks = on_loop(store, main)
    finally:
        os.close(other)
    assert result == 1 and ticks == 20
    assert stored(store) == {1: "x"}


def test_on_sqlite_checkpoints_run_on_the_commit_thread_after_the_batch_has_its_answer(sqlite_loop_store):
    store = sqlite_loop_store
    finished: list[str] = []

    async def main() -> tuple[Any, int]:
        writer = store._loop_committers[0]
        checkpoints = writer.checkpoints
        assert checkpoints is not None
        copy = checkpoints.run

        def slow_copy() -> None:  # a checkpoint of many pages
            time.sleep(0.3)
            copy()
            finished.append("checkpoint")

        checkpoints.run = slow_copy  # type: ignore[method-assign]
        await run_suspendable(store.write, inserter(1))  # the first commit makes a checkpoint due
        finished.append("answered")
        own = await run_suspendable(store.write, lambda conn: conn.exec_driver_sql(
            "PRAGMA wal_autocheckpoint").scalar_one())
        return own, checkpoints.done

    own_autocheckpoint, done = on_loop(store, main)
    assert finished[:2] == ["answered", "checkpoint"]  # the caller did not wait for the copy
    assert own_autocheckpoint == 0 and done >= 1  # the writer's connection never checkpoints on its own
    assert stored(store) == {1: "x"}


def test_checkpoints_come_about_every_thousand_wal_pages(tmp_path):
    path = tmp_path / "wal.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")

    def commits(count: int, rows: int) -> Checkpoints:
        checkpoints = Checkpoints(path, pages=1000)
        for _ in range(count):
            db.execute("BEGIN")
            db.executemany("INSERT INTO t (v) VALUES (?)", [("x" * 1000,) for _ in range(rows)])
            db.execute("COMMIT")
            checkpoints.due_after_commit()
        checkpoints.run()
        checkpoints.close()
        return checkpoints

    small = commits(4, 1)  # a page or two per commit
    large = commits(4, 400)  # about a hundred pages per commit
    assert small.done == large.done == 1
    assert small._every >= 300
    assert 2 <= large._every <= 20
    db.close()


def test_a_loop_batch_whose_commit_fails_is_rerun_unit_by_unit_and_the_loop_writer_goes_on(loop_store):
    store = loop_store

    def orphan(conn: Any) -> str:
        conn.execute(insert(scratch_child).values(id=10, parent_id=999))  # checked at COMMIT: fails there
        return "orphan"

    async def main() -> tuple[list[Any], int, bool]:
        writer = store._loop_committers[0]
        first = await asyncio.gather(run_suspendable(store.write, inserter(1)),
                                     run_suspendable(store.write, orphan), return_exceptions=True)
        later = await run_suspendable(store.write, inserter(2))
        return [*first, later], writer.units, writer._task.done()

    results, units, writer_stopped = on_loop(store, main)  # and detaching raised nothing
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], IntegrityError)  # the orphan alone was refused
    assert not writer_stopped and units >= 3  # the later write went through the same loop writer
    assert stored(store) == {1: "x", 2: "x"}
    assert store.committers == []  # no fallback writer thread was needed


def test_with_group_commit_off_a_write_waiting_for_another_process_s_turn_does_not_freeze_the_loop(sqlite_url):
    reset_scratch(sqlite_url, create=True)
    store = Store.from_url(sqlite_url, group_commit=0)
    path = sqlite_path(sqlite_url)
    assert path is not None
    other = os.open(path.with_name(path.name + "-writer.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(other, fcntl.LOCK_EX)  # another process writes for a moment
    threading.Timer(0.2, fcntl.flock, (other, fcntl.LOCK_UN)).start()
    try:
        async def main() -> list[Any]:
            return list(await asyncio.gather(run_suspendable(store.write, inserter(1)),
                                             run_suspendable(store.write, inserter(2)), return_exceptions=True))

        started = time.monotonic()
        results = asyncio.run(main())
        assert results == [1, 2]  # neither waited out the pool's timeout (a 503)
        assert time.monotonic() - started < 10
        assert stored(store) == {1: "x", 2: "x"}
    finally:
        os.close(other)
        store.dispose()


def test_under_writes_that_never_pause_the_wal_still_starts_over_instead_of_growing(sqlite_loop_store):
    """SQLite restarts the WAL from its start only when a write transaction begins after a checkpoint has copied
    all of it. Under steady load the loop writer begins its next batch while the commit thread checkpoints, so
    without a pause now and then the WAL would grow for as long as the load lasts (seen: 1 GB in a minute)."""
    store = sqlite_loop_store
    slow_commits(store, 0.002)  # commits on the thread, as on a disk without a write cache
    path = sqlite_path(store.engines.url)
    assert path is not None
    wal = path.with_name(path.name + "-wal")
    row = "x" * 3000  # about a page per row
    units, in_flight = 240, 6

    def big(i: int) -> Any:
        return lambda conn: [put(conn, i * 100 + j, row) for j in range(20)]  # ~20 pages a unit

    async def main() -> int:
        checkpoints = store._loop_committers[0].checkpoints
        assert checkpoints is not None
        checkpoints.pages, checkpoints.restart_pages = 8, 32
        queue = iter(range(units))

        async def client() -> None:  # a new write as soon as the last one is answered: the writer never idles
            for i in queue:
                await run_suspendable(store.write, big(i))

        await asyncio.gather(*(client() for _ in range(in_flight)))
        return checkpoints.done

    done = on_loop(store, main)
    written = units * 20 * 3000
    assert done > 10
    assert wal.stat().st_size < written / 4  # started over many times, not ~all the data written
    assert len(stored(store)) == units * 20
