"""Engines for the two stores, with every dialect-specific setting in one place.

SQLite: WAL, synchronous=FULL (an acknowledged write survives power loss), one writer connection whose
transactions begin IMMEDIATE (so read-then-write never loses an update), a small pool of readers.
PostgreSQL: one pool; writers lock the member's account rows FOR UPDATE (see ledger_repo).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

DEFAULT_URL = "sqlite:///./loyalty.db"


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
    reader: Engine

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def dispose(self) -> None:
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def make_engines(url: str | None, pool_size: int = 10) -> Engines:
    url = normalise_url(url)
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return Engines(url, "sqlite", _sqlite_engine(url, immediate=True, size=1), _sqlite_engine(url, False, 4))
    if backend == "postgresql":
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                               pool_timeout=10)
        return Engines(url, "postgresql", engine, engine)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")


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
        cur.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql(begin)

    return engine
