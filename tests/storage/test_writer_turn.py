"""SQLite writers in different processes take turns on a lock file before BEGIN IMMEDIATE (engine._WriterTurn).

flock locks belong to an open file, so two engines in one process contend exactly as two processes do."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from sqlalchemy import Connection, text

from loyalty.storage.engine import Engines, make_engines


def test_a_second_writer_waits_for_the_first_to_hand_its_connection_back(sqlite_url: str) -> None:
    first, second = make_engines(sqlite_url), make_engines(sqlite_url)
    began = threading.Event()
    order: list[str] = []
    try:
        conn = _writing(first)
        conn.execute(text("UPDATE change_counters SET value = value + 1"))

        def other() -> None:
            began.set()
            with second.writer.begin() as c:
                order.append("second began")
                c.execute(text("UPDATE change_counters SET value = value + 1"))

        thread = threading.Thread(target=other)
        thread.start()
        began.wait(5)
        time.sleep(0.3)
        assert order == []  # still waiting for its turn, not polling SQLite's busy handler
        conn.commit()
        order.append("first committed")
        conn.close()  # back to the pool: the turn passes on
        thread.join(10)
        assert order == ["first committed", "second began"]
    finally:
        first.dispose()
        second.dispose()


def test_the_turn_survives_a_failed_transaction_and_is_taken_again(sqlite_url: str) -> None:
    engines = make_engines(sqlite_url)
    try:
        try:
            with engines.writer.begin() as conn:
                conn.execute(text("SELECT no_such_column FROM change_counters"))
        except Exception:
            pass
        with engines.writer.begin() as conn:  # would block forever if the failed one kept the turn
            conn.execute(text("UPDATE change_counters SET value = value + 1"))
        other = make_engines(sqlite_url)
        try:
            with other.writer.begin() as conn:  # and another engine gets it too
                conn.execute(text("UPDATE change_counters SET value = value + 1"))
        finally:
            other.dispose()
    finally:
        engines.dispose()


def _turn_is_free(lock: Path) -> bool:
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops our lock, if we got it
    return True


def _lock_file(sqlite_url: str) -> Path:
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    return db.parent / (db.name + "-writer.lock")


def _writing(engines: Engines) -> Connection:
    """A writer connection with its transaction begun (and so the turn taken)."""
    conn = engines.writer.connect()
    conn.begin()
    return conn


def test_the_turn_is_held_from_begin_until_the_connection_goes_back(sqlite_url: str) -> None:
    engines = make_engines(sqlite_url)
    lock = _lock_file(sqlite_url)
    try:
        conn = _writing(engines)
        assert lock.exists() and not _turn_is_free(lock)
        conn.execute(text("UPDATE change_counters SET value = value + 1"))
        conn.commit()
        conn.close()
        assert _turn_is_free(lock)
        with engines.reader.connect() as reading:  # readers never take the turn
            reading.execute(text("SELECT 1")).scalar()
            assert _turn_is_free(lock)
    finally:
        engines.dispose()


def test_a_writer_connection_found_broken_hands_the_turn_on(sqlite_url: str) -> None:
    engines = make_engines(sqlite_url)
    lock = _lock_file(sqlite_url)
    try:
        conn = _writing(engines)
        assert not _turn_is_free(lock)
        conn.invalidate()  # as SQLAlchemy does when the driver reports the connection dead
        conn.close()
        assert _turn_is_free(lock)
        with engines.writer.begin() as again:  # a fresh connection takes the turn again
            again.execute(text("UPDATE change_counters SET value = value + 1"))
    finally:
        engines.dispose()
