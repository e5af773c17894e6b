"""Engines for the two stores, with every dialect-specific setting in one place.

SQLite: WAL, synchronous=FULL (an acknowledged write survives power loss), one writer connection whose
transactions begin IMMEDIATE (so read-then-write never loses an update), a small pool of readers.
PostgreSQL: one pool; writers lock the member's account rows FOR UPDATE (see ledger_repo); connections wait
for the server cooperatively inside use cases running on the event loop (see cooperative.py).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from loyalty.storage.cooperative import in_loop_writer, io_suspender
from loyalty.storage.pipelined import PgConnection, wrote_outside

DEFAULT_URL = "sqlite:///./loyalty.db"
# SQLite's WAL file keeps the size of the largest transaction it ever held (a seed or an import: ~1 GB seen
# after 100,000 members) unless a limit is set; it is cut back to this when the WAL next starts over. Steady
# load keeps the WAL at 30-80 MB (checkpoints.py): under this, so a file that is reused is never cut and
# grown again.
WAL_SIZE_LIMIT = 128 * 1024 * 1024


def normalise_url(url: str | None) -> str:
    """Accept the URLs operators write (postgresql://, postgres://) and pick our drivers."""
    url = (url or DEFAULT_URL).strip()
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


@dataclass
class Engines:
    url: str
    dialect: str  # "sqlite" or "postgresql"
    writer: Engine
    reader: Engine  # single reads: autocommit on PostgreSQL (no BEGIN/ROLLBACK round trips)
    snapshot: Engine  # reads that must see one snapshot across statements (exports, verify)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def dispose(self) -> None:
        self.writer.dispose()
        if self.reader.pool is not self.writer.pool:
            self.reader.dispose()


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def make_engines(url: str | None, pool_size: int = 20) -> Engines:
    url = normalise_url(url)
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        reader = _sqlite_engine(url, False, 16)
        return Engines(url, "sqlite", _sqlite_engine(url, immediate=True, size=1), reader, reader)
    if backend == "postgresql":
        # A fixed-size pool: overflow connections are closed on return, and opening a PostgreSQL session costs
        # a process fork, which under load churned sessions per request. No pre-ping either (a round trip per
        # checkout); a connection found dead is invalidated with the rest of the pool and its request answers
        # 503 (the outcome of an interrupted commit is unknown, so it is not retried blindly).
        # Opening a session blocks its caller, the event loop included (psycopg connects synchronously): bound
        # it unless the URL says otherwise.
        timeout = {} if "connect_timeout" in make_url(url).query else {"connect_timeout": 10}
        engine = create_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=30, pool_recycle=1800,
                               connect_args=timeout)
        event.listen(engine, "do_connect", _cooperative_connect)
        event.listen(engine, "before_cursor_execute", _send_deferred_first)
        return Engines(url, "postgresql", engine, engine.execution_options(isolation_level="AUTOCOMMIT"),
                       engine.execution_options(isolation_level="REPEATABLE READ"))
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")


def _cooperative_connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> PgConnection:
    # Server-side prepared statements are pipelined.py's alone: psycopg's own cache answers a ROLLBACK TO
    # SAVEPOINT or a DROP with DEALLOCATE ALL, which would drop ours too.
    return PgConnection.connect(*cargs, **{**cparams, "prepare_threshold": None})


def _send_deferred_first(conn: Any, _cursor: Any, statement: str, _parameters: Any, _context: Any,
                         _executemany: bool) -> None:
    """A statement issued through SQLAlchemy goes after the writes deferred before it (pipelined.py), and
    counts as a write of the unit issuing it unless it is a SELECT."""
    raw = conn.connection.dbapi_connection
    if raw.queued():
        raw.flush()
    wrote_outside(raw, statement)


def _sqlite_engine(url: str, immediate: bool, size: int) -> Engine:
    engine = create_engine(
        url,
        poolclass=QueuePool,
        pool_size=size,
        max_overflow=0,
        pool_timeout=60,
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # Let us issue BEGIN ourselves: the driver's implicit deferred BEGIN loses updates under concurrency.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        # Savepoints (one per unit of a group commit) keep the pages they change in a sub-journal, a temporary
        # file by default: measured, those writes were half of all the writes an accrual made.
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.execute(f"PRAGMA journal_size_limit={int(WAL_SIZE_LIMIT)}")
        cur.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"
    turn = _WriterTurn.for_url(url) if immediate else None

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        if turn is not None:
            turn.take(conn.connection.dbapi_connection)
        conn.exec_driver_sql(begin)

    if turn is not None:
        event.listen(engine, "checkin", turn.give_back)
    return engine


class _WriterTurn:
    """Writers in several processes (`serve --workers N`, a separate `loyalty worker`, the CLI) take turns on
    an advisory lock file next to the database before they BEGIN IMMEDIATE, and hand it on when their connection
    goes back to the pool. Without it they would meet at SQLite's busy handler, which polls with sleeps of up to
    100 ms: under load one process's batches waited behind the other's for whole seconds. The kernel wakes the
    next waiter as soon as the lock is free. (A separate file: opening and closing the database file itself
    would drop SQLite's own POSIX locks on it.)"""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._holder: object | None = None

    @classmethod
    def for_url(cls, url: str) -> _WriterTurn | None:
        path = sqlite_path(url)
        return cls(path.with_name(path.name + "-writer.lock")) if path is not None else None

    def take(self, dbapi_conn: object) -> None:
        if self._holder is dbapi_conn:
            return  # a second transaction on the same checkout: the turn is still ours
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process writes: wait for its turn to end
            self._wait_for_turn(self._fd)
        self._holder = dbapi_conn

    def _wait_for_turn(self, fd: int) -> None:
        """Block; in a batch of the loop's writer, wait on a thread while the loop goes on. (Elsewhere on the loop,
        with group commit off, a suspended holder of the one writer connection would let the next request block
        the loop on the pool, so those block here as they always did.)"""
        suspend = io_suspender.get() if in_loop_writer.get() else None
        if suspend is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        taken = asyncio.get_running_loop().run_in_executor(None, fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            suspend(asyncio.shield(taken))
        except BaseException:
            # Interrupted (the writer is stopping): the lock may still be granted to the thread; hand it on then,
            # unless a writer of this process holds the turn by then (the lock belongs to the shared descriptor).
            def hand_on(done: asyncio.Future[None]) -> None:
                if not done.cancelled() and done.exception() is None and self._holder is None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

            taken.add_done_callback(hand_on)
            raise

    def give_back(self, _dbapi_conn: object, _record: object) -> None:
        # The writer pool holds one connection, so any check-in is the holder's; an invalidated one comes back
        # as None, and must hand the turn on all the same.
        if self._holder is not None and self._fd is not None:
            self._holder = None
            fcntl.flock(self._fd, fcntl.LOCK_UN)
