"""The machinery that runs store code on the event loop (storage/cooperative.py): `run_suspendable` reuses its
greenlets without letting one call's failure, cancellation or context reach the next; a PostgreSQL session's
socket is registered with the loop once for its whole life, unregistered when something arrives that nobody
waits for, and released when the session closes."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import socket
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import greenlet
import psycopg
import pytest
from sqlalchemy import bindparam, literal, select

from loyalty.storage.cooperative import _SocketWatch, run_suspendable, suspend
from loyalty.storage.prepared import Prepared
from loyalty.storage.uow import Store
from tests.storage.test_committer import scratch_store

mark: contextvars.ContextVar[str] = contextvars.ContextVar("mark", default="unset")
ANSWER = Prepared(select(literal(1) + bindparam("k_n")))


def test_calls_reuse_a_greenlet_and_neither_a_failure_nor_a_context_change_carries_over():
    def failing() -> None:
        mark.set("from the failing call")
        raise ValueError("boom")

    def ok() -> tuple[Any, str]:
        return greenlet.getcurrent(), mark.get()

    async def main() -> list[Any]:
        first, _ = await run_suspendable(ok)
        with pytest.raises(ValueError, match="boom"):
            await run_suspendable(failing)
        second, seen = await run_suspendable(ok)
        return [first, second, seen]

    first, second, seen = asyncio.run(main())
    assert first is second  # the same greenlet served both
    assert seen == "unset"  # the failing call's context did not leak


def test_a_call_cancelled_while_suspended_raises_and_the_next_call_runs_normally():
    def sleeper() -> None:
        suspend(asyncio.sleep(10))

    async def main() -> int:
        task = asyncio.ensure_future(run_suspendable(sleeper))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await run_suspendable(lambda: suspend(asyncio.sleep(0, result=7)))

    assert asyncio.run(main()) == 7


def test_an_idle_greenlet_keeps_nothing_of_its_last_call_alive():
    class Payload:
        pass

    async def main() -> weakref.ref[Payload]:
        result = await run_suspendable(Payload)
        return weakref.ref(result)

    answer = asyncio.run(main())
    gc.collect()
    assert answer() is None


def test_a_socket_watch_on_a_stopped_loop_is_released_from_any_thread():
    loop = asyncio.new_event_loop()
    ours, theirs = socket.socketpair()
    try:
        watch = _SocketWatch(loop, ours.fileno())
        watch.readable(loop.create_future())
        assert watch.registered
        releasing = threading.Thread(target=watch.discard)
        releasing.start()
        releasing.join()
        assert not watch.registered
        with pytest.raises(OSError):
            os.fstat(watch.fd)  # the duplicate descriptor is closed
    finally:
        loop.close()
        ours.close()
        theirs.close()


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    with scratch_store(pg_url) as s:
        yield s


def on_one_session(store: Store, fn: Any) -> Any:
    """Run `fn(raw_connection, loop)` suspendable on a fresh loop, on one pooled session held throughout."""

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        with store.engines.reader.connect() as conn:
            return await run_suspendable(fn, conn, loop)

    return asyncio.run(main())


def test_a_session_s_socket_is_registered_with_the_loop_once_for_many_round_trips(pg_store, monkeypatch):
    registered: list[int] = []

    def many_round_trips(conn: Any, loop: asyncio.AbstractEventLoop) -> list[Any]:
        real = loop.add_reader

        def counting(fd: int, *args: Any) -> None:
            registered.append(fd)
            real(fd, *args)

        monkeypatch.setattr(loop, "add_reader", counting)
        return [ANSWER.first(conn, {"k_n": n})[0] for n in range(10)]

    assert on_one_session(pg_store, many_round_trips) == list(range(1, 11))
    assert len(registered) == 1


def test_data_nobody_waits_for_unregisters_the_socket_and_the_next_round_trip_registers_it_again(pg_store, pg_url):
    def notified(conn: Any, loop: asyncio.AbstractEventLoop) -> tuple[bool, bool, Any]:
        raw = conn.connection.dbapi_connection
        conn.exec_driver_sql("LISTEN cooperative_test")
        ANSWER.first(conn, {"k_n": 0})
        watch = raw.socket_watch(loop)
        before = watch.registered
        with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as other:
            other.execute("NOTIFY cooperative_test")
        suspend(asyncio.sleep(0.2))  # the notification arrives while nobody waits for this session
        after_notice = watch.registered
        return before, after_notice, ANSWER.first(conn, {"k_n": 41})[0]

    before, after_notice, answer = on_one_session(pg_store, notified)
    assert (before, after_notice, answer) == (True, False, 42)


def test_closing_a_session_releases_its_socket_watch(pg_store):
    def closed(conn: Any, loop: asyncio.AbstractEventLoop) -> tuple[bool, bool]:
        raw = conn.connection.dbapi_connection
        ANSWER.first(conn, {"k_n": 1})
        watch = raw.socket_watch(loop)
        alive = raw._forget_watch.alive
        conn.invalidate()  # the pool closes the session
        return alive, watch.registered or raw._forget_watch.alive

    assert on_one_session(pg_store, closed) == (True, False)
