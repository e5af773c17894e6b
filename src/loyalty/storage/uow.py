"""The unit of work: every use case runs its store work through `Store.write` or `Store.read`.

`write` runs a function in one store transaction and retries it, with bounded jittered backoff, when the store
says the transaction lost a race (serialization failure, deadlock, busy, a unique key taken by a concurrent
writer). The function must therefore be safe to run again: it only reads and writes through the connection.
With group commit on (the default), `write` hands the function to a writer, which runs it with other waiting
writes in one transaction (see committer.py); `key` names the member whose rows it locks.

PostgreSQL gets several writers, each with its own connection: a writer spends most of its time waiting for
the server's answers, one statement at a time, so one writer leaves both the server and this process idle.
Under `serve` the event loop drives the writers of both stores (loop_writer.py); elsewhere they are threads.
A unit goes to the writer its key hashes to, so units on one member always share a writer and never wait on
each other's row locks across writers; units without a key (catalogue, tokens, jobs, the sweeper's set-based
expiry) go to the first, and a lock wait between writers is at worst a deadlock PostgreSQL breaks and the
losing unit runs again. SQLite allows one writer at a time, so it gets one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from loyalty.domain.errors import Unavailable
from loyalty.storage import catalog_repo, counters_repo
from loyalty.storage.change_watch import ChangeWatch
from loyalty.storage.checkpoints import Checkpoints
from loyalty.storage.committer import GroupCommitter
from loyalty.storage.cooperative import LoopGate, io_suspender, wait
from loyalty.storage.engine import Engines, make_engines, sqlite_path
from loyalty.storage.loop_writer import LoopCommitter

T = TypeVar("T")
log = logging.getLogger("loyalty.storage")

MAX_ATTEMPTS = 8
# Reader connections kept checked out between reads: at most a quarter of the pool, so writes, snapshots and
# health probes taking a connection from the pool directly still find one.
IDLE_READERS = 4
DEFAULT_PG_WRITERS = 4
CONNECT_BACKOFF_SEC = 1.0  # after a failed first connection, requests answer 503 at once for this long
# Serialization failure, deadlock, lock not available; a prepared statement the session lost (pipelined.py).
_RETRY_SQLSTATES = {"40001", "40P01", "55P03", "26000"}


def _is_retryable(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError):
        return True  # a concurrent writer took the key first; the retry reads what it wrote
    code = getattr(exc.orig, "sqlstate", None)
    if code in _RETRY_SQLSTATES:
        return True
    text = str(exc.orig).lower()
    return "database is locked" in text or "database is busy" in text


def _is_unreachable(exc: DBAPIError) -> bool:
    return isinstance(exc, OperationalError) and (
        exc.connection_invalidated or "connection" in str(exc.orig).lower()
    )


def _pause(seconds: float) -> None:
    suspend = io_suspender.get()
    if suspend is not None:
        suspend(asyncio.sleep(seconds))  # a use case on the event loop must not stop the loop
    else:
        time.sleep(seconds)


def _pick(committers: list[Any], key: Hashable | None) -> Any:
    """The writer of `key`: units on one member always share one; units without a key go to the first."""
    return committers[hash(key) % len(committers)] if key is not None else committers[0]


class Store:
    def __init__(self, engines: Engines, group_commit: int = 0, writers: int = 0):
        self.engines = engines
        self.group_commit = group_commit  # most units per batch; 0: every write commits on its own
        pool_size = engines.reader.pool.size()  # type: ignore[attr-defined]
        # Writers (0: the store's default); SQLite serialises writers, so more than one only contend. Each holds
        # a connection while it writes: at most a quarter of the pool.
        self.writers = 1 if engines.dialect == "sqlite" else min(writers or DEFAULT_PG_WRITERS,
                                                                  max(1, pool_size // 4))
        self._committers: list[GroupCommitter] = []
        self._loop_committers: list[LoopCommitter] = []  # while a server's event loop runs them
        self._committer_lock = threading.Lock()
        self._closing: list[LoopCommitter] = []
        self._retired_stats = (0, 0)  # what detached loop writers ran, still counted in commit_stats
        # Open reader Connections between reads: checking one out of the pool and wrapping it costs more than
        # the keyed lookups a request makes with it. list.append/pop are atomic, so threads share the list.
        self._idle_readers: list[Connection] = []
        self._idle_cap = min(IDLE_READERS, pool_size // 4)
        # Use cases suspended on the event loop may hold what the writers and the idle readers leave of the pool,
        # less a quarter kept for worker threads (which may wait for a connection without harm). The loop must
        # never find the pool empty because of what its own suspended use cases hold (see cooperative.py).
        self._loop_gate = LoopGate(max(1, pool_size - self.writers - self._idle_cap - pool_size // 4)) \
            if engines.dialect == "postgresql" else None
        self._connected = False
        self._connect_again_at = 0.0
        self._watch: ChangeWatch | None = None  # while a server's event loop runs (PostgreSQL)

    @classmethod
    def from_url(cls, url: str | None, pool_size: int = 20, group_commit: int = 0, writers: int = 0) -> Store:
        return cls(make_engines(url, pool_size), group_commit, writers)

    @property
    def dialect(self) -> str:
        return self.engines.dialect

    @property
    def change_watch(self) -> ChangeWatch | None:
        """What holds the change counters while a server's event loop runs (PostgreSQL; change_watch.py)."""
        return self._watch

    @property
    def committer(self) -> GroupCommitter | None:
        """The writer of units without a key (the only one on SQLite)."""
        return self._committers[0] if self._committers else None

    @property
    def committers(self) -> list[GroupCommitter]:
        return list(self._committers)

    def commit_stats(self) -> tuple[int, int]:
        """Batches and units the writers have run so far (thread and event-loop writers alike)."""
        writers = [*self._committers, *self._loop_committers, *self._closing]
        batches, units = self._retired_stats
        return batches + sum(w.batches for w in writers), units + sum(w.units for w in writers)

    def write(self, work: Callable[[Connection], T], key: Hashable | None = None) -> T:
        if not self.group_commit:
            return self.write_alone(work)
        committers: list[Any] = self._loop_committers
        if not committers or committers[0].loop.is_closed():
            committers = self._committers or self._start_writers()
        if any(c.is_writer_thread() for c in committers):
            raise RuntimeError("a unit of work may not start another write")
        return wait(_pick(committers, key).submit(work, key))  # suspended when on the event loop, else blocked

    def _submit_to_thread(self, work: Callable[[Connection], Any], key: Hashable | None) -> Future[Any]:
        return _pick(self._committers or self._start_writers(), key).submit(work, key)

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let `loop` run the group commits from now on (called on the loop's thread at start-up); on SQLite
        each commit runs on a thread of its own writer, off the loop."""
        if self.group_commit and not self._loop_committers:
            try:
                self._first_connect()
            except Unavailable:  # the server starts all the same; requests answer 503 until the store is back
                log.warning("the store is unreachable at start-up")
            path = sqlite_path(self.engines.url)
            self._loop_committers = [
                LoopCommitter(self.engines.writer, self.write_alone, _is_retryable, loop, self._submit_to_thread,
                              self._first_connect, max_batch=self.group_commit, name=f"loyalty-writer-{i}",
                              commit_in_thread=self.dialect == "sqlite",
                              checkpoints=Checkpoints(path) if path is not None else None)
                for i in range(self.writers)]
        if self.dialect == "postgresql" and self._watch is None:
            self._watch = ChangeWatch.for_engine(self.engines.writer)
            self._watch.start(loop)

    async def detach_loop(self) -> None:
        """Finish the loop's queued writes; later writes go to writer threads (on the loop, at shutdown)."""
        if self._watch is not None:
            watch, self._watch = self._watch, None
            await watch.stop()
        committers, self._loop_committers = self._loop_committers, []
        self._closing = committers  # still counted in commit_stats while they finish
        for committer in committers:
            await committer.close()
        batches, units = self._retired_stats
        self._retired_stats = (batches + sum(c.batches for c in committers), units + sum(c.units for c in committers))
        self._closing = []

    def _start_writers(self) -> list[GroupCommitter]:
        with self._committer_lock:
            if not self._committers:
                self._committers = [
                    GroupCommitter(self.engines.writer, self.write_alone, _is_retryable,
                                   max_batch=self.group_commit, name=f"loyalty-writer-{i}")
                    for i in range(self.writers)]
            return self._committers

    def write_alone(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in its own transaction, retrying lost races."""
        return self._gated(self._write_alone, work)

    def _write_alone(self, work: Callable[[Connection], T]) -> T:
        # A write must read the counters afresh even inside a request's scope (group commit off runs it there).
        with counters_repo.no_request_scope():
            return self._write_retrying(work)

    def _write_retrying(self, work: Callable[[Connection], T]) -> T:
        last: Exception | None = None
        for attempt in range(MAX_ATTEMPTS):
            try:
                with self.engines.writer.begin() as conn:
                    return work(conn)
            except DBAPIError as exc:
                last = exc
                if _is_unreachable(exc) and not _is_retryable(exc):
                    raise Unavailable("The store is unreachable; retry later") from exc
                if not _is_retryable(exc) or attempt == MAX_ATTEMPTS - 1:
                    raise
                _pause(min(0.2, 0.002 * 2**attempt) * random.uniform(0.5, 1.5))
        raise Unavailable("The store stayed busy; retry later") from last

    def read(self, work: Callable[[Connection], T], snapshot: bool = False) -> T:
        """Run `work` on a reader. By default each statement sees the latest commits (SQLite: SQLAlchemy
        statements share one transaction begun on first use; PostgreSQL: autocommit, as READ COMMITTED would
        give anyway, without the BEGIN/ROLLBACK round trips). `snapshot=True` gives one consistent snapshot for
        every statement (exports, verify)."""
        return self._gated(self._read, work, snapshot)

    def _gated(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn`, first taking a turn at the loop gate if the caller is a suspendable use case."""
        suspend = io_suspender.get() if self._loop_gate is not None else None
        try:
            if suspend is None:
                return fn(*args)
            self._first_connect()
            with self._loop_gate.held(suspend):  # type: ignore[union-attr]
                return fn(*args)
        except PoolTimeout as exc:  # every connection stayed in use for the pool's whole timeout
            raise Unavailable("The store has no free connection; retry later") from exc

    def _first_connect(self) -> None:
        """Open the pool's first connection without suspending: SQLAlchemy sets the dialect up on it under a
        lock, and a second use case suspended-on while one holds that lock would block the loop for good."""
        if self._connected:
            return
        if time.monotonic() < self._connect_again_at:  # connecting blocks the loop: not on every request
            raise Unavailable("The store is unreachable; retry later")
        blocking = io_suspender.set(None)
        try:
            with self.engines.reader.connect():
                self._connected = True
        except DBAPIError as exc:
            self._connect_again_at = time.monotonic() + CONNECT_BACKOFF_SEC
            raise Unavailable("The store is unreachable; retry later") from exc
        finally:
            io_suspender.reset(blocking)

    def _read(self, work: Callable[[Connection], T], snapshot: bool) -> T:
        try:
            if snapshot:
                with self.engines.snapshot.begin() as conn:
                    return work(conn)
            return self._read_on_idle(work)
        except OperationalError as exc:
            if _is_unreachable(exc):
                raise Unavailable("The store is unreachable; retry later") from exc
            raise

    def _read_on_idle(self, work: Callable[[Connection], T]) -> T:
        try:
            conn = self._idle_readers.pop()
        except IndexError:
            conn = self.engines.reader.connect()
        try:
            result = work(conn)
        except DBAPIError:
            conn.close()  # the pool resets it, or discards it if it is broken
            raise
        except Exception:  # a refusal (profile not found, ...): the connection is as good as before
            self._give_back(conn)
            raise
        except BaseException:
            conn.close()
            raise
        self._give_back(conn)
        return result

    def _give_back(self, conn: Connection) -> None:
        if conn.in_transaction():  # statements through SQLAlchemy began one: end it, and its snapshot
            conn.rollback()
        catalog_repo.end_of_use(conn)
        if len(self._idle_readers) < self._idle_cap:
            self._idle_readers.append(conn)
        else:
            conn.close()

    def dispose(self) -> None:
        while self._idle_readers:
            self._idle_readers.pop().close()
        committers, self._committers = self._committers, []
        for committer in committers:
            committer.stop()
        self.engines.dispose()
