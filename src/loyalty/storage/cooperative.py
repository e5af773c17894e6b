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
import os
import threading
import weakref
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
    """A greenlet that runs the functions handed to it one after another (`run_suspendable`), and may suspend
    on a store future or an awaitable while it does (see `wait`, `suspend`).

    Kept for reuse rather than made per call: a new greenlet's first Python frame maps a fresh frame stack
    (16 KB, mmap) that is unmapped when the greenlet ends, and both calls, with the page faults in between,
    came about once per request."""

    def __init__(self) -> None:
        super().__init__(self._serve)

    def _serve(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        while True:
            try:
                outcome = _Finished(fn(*args), None)
            except greenlet.GreenletExit:  # the greenlet is being collected while suspended
                raise
            except BaseException as exc:  # the caller's to raise (run_suspendable)
                outcome = _Finished(None, exc)
            fn = args = None  # type: ignore[assignment]  # hold nothing of the last call while idle
            fn, args = self.parent.switch(outcome)


class _Finished:
    __slots__ = ("value", "error")

    def __init__(self, value: Any, error: BaseException | None):
        self.value = value
        self.error = error


_idle = threading.local()  # per thread: a greenlet runs only on the thread that made it
MAX_IDLE = 256


async def run_suspendable(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` on the loop thread, awaiting whatever it suspends on."""
    pool: list[_Suspendable] = _idle.__dict__.setdefault("greenlets", [])
    runner = pool.pop() if pool else _Suspendable()
    context = contextvars.copy_context()
    context.run(io_suspender.set, suspend)
    runner.gr_context = context
    value = runner.switch(fn, args)
    while not isinstance(value, _Finished):
        try:
            # A commit is shielded: if the request is cancelled, the write still stands and its writer must
            # still be able to answer the future.
            result = await (asyncio.shield(asyncio.wrap_future(value)) if isinstance(value, Future) else value)
        except BaseException as exc:  # the failure belongs to the suspended code: raise it there
            value = runner.throw(exc)
        else:
            value = runner.switch(result)
    runner.gr_context = None
    if len(pool) < MAX_IDLE:
        pool.append(runner)
    # The idle greenlet's frame still refers to this outcome: keep neither the answer nor the error alive.
    result, error = value.value, value.error
    value.value = value.error = None
    if error is not None:
        raise error
    return result  # type: ignore[no-any-return]


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


class _SocketWatch:
    """A session's socket watched by one event loop for as long as the session lasts.

    Registering the socket for each wait and removing it afterwards cost about 5 µs of the loop's own work and
    two or three epoll_ctl calls per round trip, several round trips per request. The watch registers once, on a
    duplicate of the socket's descriptor, which stays ours (never closed under the loop, never reused for another
    file) until `discard`, whatever libpq does with its own. Readiness with nobody waiting (a notice, the server
    ending the session, a thread using the connection with psycopg's blocking wait) unregisters it, or the
    level-triggered poll would call again and again; the next wait registers it again."""

    __slots__ = ("loop", "fd", "waiter", "registered", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: int):
        self.loop = loop
        self.fd = os.dup(sock)
        self.waiter: asyncio.Future[int] | None = None
        self.registered = False

    def readable(self, future: asyncio.Future[int]) -> None:
        """Resolve `future` with READY_R when the socket is readable (on the loop's thread)."""
        self.waiter = future
        if not self.registered:
            self.loop.add_reader(self.fd, self._ready)
            self.registered = True

    def _ready(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            self.loop.remove_reader(self.fd)
            self.registered = False
        else:
            waiter.set_result(waiting.READY_R)

    def discard(self) -> None:
        """Unregister and close the duplicate (from any thread; on the loop's own, at once)."""
        try:
            if self.loop.is_closed():
                os.close(self.fd)
            elif _on_loop_thread(self.loop) or not self.loop.is_running():  # a stopped loop would never call back
                self._close()
            else:
                self.loop.call_soon_threadsafe(self._close)
        except RuntimeError:  # the loop closed meanwhile: its registrations are gone with it
            os.close(self.fd)

    def _close(self) -> None:
        if self.registered:
            self.loop.remove_reader(self.fd)
            self.registered = False
        os.close(self.fd)


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class CooperativeConnection(psycopg.Connection[Any]):
    """A psycopg connection that waits for the server on the event loop when its caller can be suspended."""

    _socket_watch: _SocketWatch | None = None
    _forget_watch: Any = None

    def socket_watch(self, loop: asyncio.AbstractEventLoop) -> _SocketWatch:
        """The watch of this session's socket on `loop` (a new one when the connection moved to another loop)."""
        watch = self._socket_watch
        if watch is None or watch.loop is not loop:
            if self._forget_watch is not None:
                self._forget_watch()
            watch = self._socket_watch = _SocketWatch(loop, self.pgconn.socket)
            # Discarded when the connection closes, or is collected without closing.
            self._forget_watch = weakref.finalize(self, watch.discard)
        return watch

    def close(self) -> None:
        super().close()
        if self._forget_watch is not None:
            self._forget_watch()
            self._socket_watch = None

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


def wait_for_server(conn: CooperativeConnection, gen: Any) -> Any:
    """Drive a libpq exchange (a generator of psycopg's wait protocol) to its end: suspended on the event loop
    inside `run_suspendable`, else blocking as psycopg does.

    Leaner than psycopg's asyncio wait, which arms a timer and polls the socket at every step: this waits only
    when libpq says it must, and on nothing but the socket."""
    suspend = io_suspender.get()
    if suspend is None:
        return psycopg.Connection.wait(conn, gen)
    loop = asyncio.get_running_loop()
    watch = conn.socket_watch(loop)
    try:
        state = next(gen)
        while True:
            future = loop.create_future()
            if state & waiting.WAIT_R:
                watch.readable(future)
            if state & waiting.WAIT_W:  # rare: the send buffer was full
                loop.add_writer(watch.fd, _wake, future, waiting.READY_W)
            try:
                ready = suspend(future)
            finally:
                if state & waiting.WAIT_R:
                    watch.waiter = None
                if state & waiting.WAIT_W:
                    loop.remove_writer(watch.fd)
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
