"""The unit of work: every use case runs its store work through `Store.write` or `Store.read`.

`write` runs a function in one store transaction and retries it, with bounded jittered backoff, when the store
says the transaction lost a race (serialization failure, deadlock, busy, a unique key taken by a concurrent
writer). The function must therefore be safe to run again: it only reads and writes through the connection.
With group commit on (the default), `write` hands the function to the store's writer thread, which runs it
with other waiting writes in one transaction (see committer.py); `key` names the rows it locks first.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from loyalty.domain.errors import Unavailable
from loyalty.storage import catalog_repo
from loyalty.storage.committer import GroupCommitter
from loyalty.storage.engine import Engines, make_engines

T = TypeVar("T")

MAX_ATTEMPTS = 8
# Reader connections kept checked out between reads: at most a quarter of the pool, so writes, snapshots and
# health probes taking a connection from the pool directly still find one.
IDLE_READERS = 4
_RETRY_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock not available


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


class Store:
    def __init__(self, engines: Engines, group_commit: int = 0):
        self.engines = engines
        self.group_commit = group_commit  # most units per batch; 0: every write commits on its own
        self._committer: GroupCommitter | None = None
        self._committer_lock = threading.Lock()
        # How a caller waits for its commit; the API layer swaps in one that suspends instead of blocking.
        self.wait_for: Callable[[Future[Any]], Any] = Future.result
        # Open reader Connections between reads: checking one out of the pool and wrapping it costs more than
        # the keyed lookups a request makes with it. list.append/pop are atomic, so threads share the list.
        self._idle_readers: list[Connection] = []
        self._idle_cap = min(IDLE_READERS, engines.reader.pool.size() // 4)  # type: ignore[attr-defined]

    @classmethod
    def from_url(cls, url: str | None, pool_size: int = 20, group_commit: int = 0) -> Store:
        return cls(make_engines(url, pool_size), group_commit)

    @property
    def dialect(self) -> str:
        return self.engines.dialect

    @property
    def committer(self) -> GroupCommitter | None:
        return self._committer

    def write(self, work: Callable[[Connection], T], key: Hashable | None = None) -> T:
        if not self.group_commit:
            return self.write_alone(work)
        committer = self._committer
        if committer is None:
            with self._committer_lock:
                if self._committer is None:
                    self._committer = GroupCommitter(self.engines.writer, self.write_alone, _is_retryable,
                                                     max_batch=self.group_commit)
                committer = self._committer
        if committer.is_writer_thread():
            raise RuntimeError("a unit of work may not start another write")
        return self.wait_for(committer.submit(work, key))  # type: ignore[no-any-return]

    def write_alone(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in its own transaction, retrying lost races."""
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
                time.sleep(min(0.2, 0.002 * 2**attempt) * random.uniform(0.5, 1.5))
        raise Unavailable("The store stayed busy; retry later") from last

    def read(self, work: Callable[[Connection], T], snapshot: bool = False) -> T:
        """Run `work` on a reader. By default each statement sees the latest commits (SQLite: SQLAlchemy
        statements share one transaction begun on first use; PostgreSQL: autocommit, as READ COMMITTED would
        give anyway, without the BEGIN/ROLLBACK round trips). `snapshot=True` gives one consistent snapshot for
        every statement (exports, verify)."""
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
        if self._committer is not None:
            self._committer.stop()
            self._committer = None
        self.engines.dispose()
