"""Synchronous store code run on the event loop thread, suspended while it waits.

Handing every request to a worker thread and back, and every write to a writer thread and back, costs GIL
hand-offs and futex wake-ups that took more CPU than the request itself. So the event loop runs a request's
synchronous use case (and the group committer's batches) directly, inside a greenlet
(`run_suspendable`). When that code waits, for a commit (`wait`) or for the server's answer to a statement,
the greenlet switches back to the loop with what it waits for; the loop awaits it and resumes the greenlet
with the result. Inside such a greenlet the context variable `io_suspender` holds `suspend`;
`CooperativeConnection` uses it to wait for PostgreSQL's answers the way psycopg's async connection does.
Everywhere else (threads, jobs, the CLI) the same code simply blocks.

Reads in such greenlets take a connection from the shared pool; `LoopGate` bounds how many may hold one at
once, because a greenlet that found the pool empty would block the very loop the holders need to finish.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import greenlet
import psycopg
from psycopg import waiting
from psycopg.pq import TransactionStatus

T = TypeVar("T")

io_suspender: ContextVar[Callable[[Awaitable[Any]], Any] | None] = ContextVar("io_suspender", default=None)
# True inside the loop writer's batches (loop_writer.py): the only code on the loop that may wait for SQLite's
# writer turn without blocking it, because no other code on the loop can then hold the writer connection.
in_loop_writer: ContextVar[bool] = ContextVar("in_loop_writer", default=False)


class _Suspendable(greenlet.greenlet):  # type: ignore[misc]
    """A greenlet that may suspend on a store future or an awaitable (see `wait`, `suspend`)."""


async def run_suspendable(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` on the loop thread, awaiting whatever it suspends on."""
    runner = _Suspendable(fn)
    context = contextvars.copy_context()
    context.run(io_suspender.set, suspend)
    runner.gr_context = context
    value = runner.switch(*args)
    while not runner.dead:
        try:
            # A commit is shielded: if the request is cancelled, the write still stands and its writer must
            # still be able to answer the future.
            result = await (asyncio.shield(asyncio.wrap_future(value)) if isinstance(value, Future) else value)
        except BaseException as exc:  # the failure belongs to the suspended code: raise it there
            value = runner.throw(exc)
        else:
            value = runner.switch(result)
    return value  # type: ignore[no-any-return]


def suspendable() -> bool:
    """Whether the caller runs inside `run_suspendable` (and may therefore `suspend`)."""
    return isinstance(greenlet.getcurrent(), _Suspendable)


def wait(future: Future[T] | asyncio.Future[T]) -> T:
    """Wait for a future: suspend when running inside `run_suspendable`, else block (a concurrent Future)."""
    if suspendable():
        return suspend(future)  # type: ignore[arg-type]
    return future.result()


def suspend(awaitable: Awaitable[T]) -> T:
    """Suspend the running greenlet until `awaitable` (or a concurrent Future) completes on the event loop."""
    current = greenlet.getcurrent()
    if not isinstance(current, _Suspendable):
        raise RuntimeError("suspend() outside code run by run_suspendable")
    return current.parent.switch(awaitable)  # type: ignore[no-any-return]


class CooperativeConnection(psycopg.Connection[Any]):
    """A psycopg connection that waits for the server on the event loop when its caller can be suspended."""

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        suspend = io_suspender.get()
        if suspend is None:
            return super().wait(gen, interval, timeout)
        try:
            return suspend(waiting.wait_async(gen, self.pgconn.socket, interval=interval, timeout=timeout))
        except BaseException:
            if self.pgconn.transaction_status == TransactionStatus.ACTIVE:
                # Interrupted (cancelled) with a statement in flight: the session's state is unknown, so it is
                # closed rather than given back to the pool half-way through a protocol exchange.
                self.pgconn.finish()
            raise


def wait_for_server(conn: psycopg.Connection[Any], gen: Any) -> Any:
    """Drive a libpq exchange (a generator of psycopg's wait protocol) to its end: suspended on the event loop
    inside `run_suspendable`, else blocking as psycopg does.

    Leaner than psycopg's asyncio wait, which arms a timer and polls the socket at every step: this waits only
    when libpq says it must, and on nothing but the socket."""
    suspend = io_suspender.get()
    if suspend is None:
        return psycopg.Connection.wait(conn, gen)
    loop = asyncio.get_running_loop()
    fileno = conn.pgconn.socket
    try:
        state = next(gen)
        while True:
            future = loop.create_future()
            if state & waiting.WAIT_R:
                loop.add_reader(fileno, _wake, future, waiting.READY_R)
            if state & waiting.WAIT_W:
                loop.add_writer(fileno, _wake, future, waiting.READY_W)
            try:
                ready = suspend(future)
            finally:
                if state & waiting.WAIT_R:
                    loop.remove_reader(fileno)
                if state & waiting.WAIT_W:
                    loop.remove_writer(fileno)
            state = gen.send(ready)
    except StopIteration as done:
        return done.value


def _wake(future: asyncio.Future[int], ready: int) -> None:
    if not future.done():
        future.set_result(ready)


class LoopGate:
    """At most `size` holders at once among the suspendable use cases of one event loop (one semaphore per
    loop: test clients and servers may run several loops over one store)."""

    def __init__(self, size: int):
        self.size = size
        self._by_loop: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = WeakKeyDictionary()

    @contextmanager
    def held(self, suspend: Callable[[Awaitable[Any]], Any]) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        gate = self._by_loop.get(loop)
        if gate is None:
            gate = self._by_loop[loop] = asyncio.Semaphore(self.size)
        suspend(gate.acquire())
        try:
            yield
        finally:
            gate.release()
