"""Group commit driven by the event loop (both stores, under `loyalty serve`).

A writer thread spends most of its time waiting for PostgreSQL's answers, one statement at a time, and every
answer makes it take the GIL back from the event loop: measured, those hand-offs (futex waits and wake-ups)
took more of the server's CPU than the requests' own work. `LoopCommitter` runs the same batches (committer.py:
one transaction, a savepoint per unit, answers after the commit) inside a greenlet on the event loop, whose
statements suspend while PostgreSQL works (cooperative.py). Units queued while a batch is in flight form the
next batch, as with the thread. Threads that are not the loop (jobs, endpoints run in the thread pool) hand
their units over with `call_soon_threadsafe` and block on the future as before. Units that arrive once the
writer has stopped (shutdown) go to a writer thread (`after_stop`), so no write is refused or lost.

SQLite runs its batches on the loop too: its statements never wait for a server, so the thread only cost
hand-offs (each statement gives up the GIL and must win it back from the loop). The COMMIT, an fsync that would
stop the loop, runs on a thread of its own (`commit_in_thread`) while the batch's greenlet is suspended, when
commits take long (a disk without a write cache): the loop parses the next requests meanwhile, and they form the
next batch. When they are quick (INLINE_COMMIT_SEC) the loop commits itself: the hand-off costs more. (A unit that lost a race, or every
unit of a batch whose COMMIT failed, runs again through the store's ordinary write path, whose COMMIT does
stop the loop: a rare path, kept simple.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import greenlet
from sqlalchemy import Engine, RootTransaction
from sqlalchemy.exc import DBAPIError

from loyalty.storage.checkpoints import Checkpoints
from loyalty.storage.committer import Work, _answer, _Batches, _Unit
from loyalty.storage.cooperative import in_loop_writer, run_suspendable, suspendable, wait

log = logging.getLogger("loyalty.storage")
CLOSE_WAIT_SEC = 30.0  # as long as a writer thread's stop() waits
# SQLite commits taking less than this on average run on the loop itself: handing one to the commit thread and
# back costs the loop about 150 µs of CPU (a thread wake-up, two GIL hand-offs, a loop wake-up), more than an
# fsync takes on a disk with a fast write cache. Slower disks keep their commits on the thread.
INLINE_COMMIT_SEC = 0.0005


class LoopCommitter(_Batches):
    """A writer on `loop`; create it on the loop's thread."""

    def __init__(self, engine: Engine, run_alone: Callable[[Work], Any],
                 is_retryable: Callable[[DBAPIError], bool], loop: asyncio.AbstractEventLoop,
                 after_stop: Callable[[Work, Hashable | None], Future[Any]], before_batch: Callable[[], None],
                 max_batch: int = 128, name: str = "loyalty-writer", commit_in_thread: bool = False,
                 checkpoints: Checkpoints | None = None):
        super().__init__(engine, run_alone, is_retryable, max_batch)
        self.loop = loop
        self.checkpoints = checkpoints  # SQLite: run on the commit thread, after the answers (checkpoints.py)
        self._commits = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-commit") if commit_in_thread else None
        # Moving average of how long a commit takes (see INLINE_COMMIT_SEC); the disk is taken for a slow one until
        # commits show otherwise (a few dozen).
        self._commit_sec = 0.01
        self._checkpoint: Future[None] | None = None  # the last checkpoint handed to the commit thread
        self._restart: Future[None] | None = None  # a checkpoint the next batch waits for (checkpoints.py)
        self.single_unit_alone = not commit_in_thread  # a lone unit's commit must not stop the loop either
        self._interrupted: BaseException | None = None  # a stop that came while a commit was in flight
        self.after_stop = after_stop  # who takes the units that arrive once this writer is stopped
        # Run on the loop before each batch, without suspending: opens the store's first connection if the
        # store was away at start-up (SQLAlchemy sets it up under a lock no suspended code may hold).
        self.before_batch = before_batch
        self._loop_thread = threading.get_ident()
        self._pending: deque[_Unit] = deque()
        self._wake = asyncio.Event()
        self._running: greenlet.greenlet | None = None  # the greenlet running the current batch
        self._stopped = False
        self._task = loop.create_task(self._drive(), name=name)
        self._task.add_done_callback(self._ended)

    def submit(self, work: Work, key: Hashable | None = None) -> Future[Any] | asyncio.Future[Any]:
        if threading.get_ident() == self._loop_thread:
            # A use case suspended on this loop waits on a future of the loop itself: no thread-safe hand-over,
            # no wrapping. A cancelled caller cancels it, and the answer is then dropped; the write stands.
            unit = _Unit(work, key, self.loop.create_future() if suspendable() else None)
            self._enqueue(unit)
        else:
            unit = _Unit(work, key)
            try:
                self.loop.call_soon_threadsafe(self._enqueue, unit)
            except RuntimeError:  # the loop is closed
                self._hand_over(unit)
        return unit.future

    def _enqueue(self, unit: _Unit) -> None:
        if self._stopped:  # a late unit (a thread submitted it as the server stopped): a writer thread runs it
            self._hand_over(unit)
            return
        self._pending.append(unit)
        self._wake.set()

    def _hand_over(self, unit: _Unit) -> None:
        def relay(done: Future[Any]) -> None:  # on the writer thread
            error = done.exception()
            result = None if error else done.result()
            if isinstance(unit.future, asyncio.Future):
                try:
                    self.loop.call_soon_threadsafe(_answer, unit.future, result, error)
                except RuntimeError:  # the loop is closed: nobody is left waiting
                    pass
            else:
                _answer(unit.future, result, error)

        self.after_stop(unit.work, unit.key).add_done_callback(relay)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The driving task is over: at shutdown (cancelled) or, if ever, by a failure; no unit is left behind."""
        self._stopped = True
        if not task.cancelled() and task.exception() is not None:
            log.error("the event loop's writer stopped", exc_info=task.exception())
        while self._pending:
            self._hand_over(self._pending.popleft())

    def is_writer_thread(self) -> bool:
        return self._running is not None and greenlet.getcurrent() is self._running

    async def _drive(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._let_the_wal_restart()
                batch = [self._pending.popleft() for _ in range(min(len(self._pending), self.max_batch))]
                await run_suspendable(self._run_here, batch)

    async def _let_the_wal_restart(self) -> None:
        restart, self._restart = self._restart, None
        if restart is not None and not restart.done():
            try:
                await asyncio.wrap_future(restart)
            except Exception:  # Checkpoints.run logs the store's errors itself; a bug must not stop the writer
                log.exception("WAL checkpoint failed")

    def _run_here(self, batch: list[_Unit]) -> None:
        self._running = greenlet.getcurrent()
        in_loop_writer.set(True)  # this greenlet's own context: it may wait for the writer turn on the loop
        try:
            self.before_batch()
            self._run_guarded(batch)
        except Exception as exc:  # the store is unreachable: every unit of the batch says so
            for unit in batch:
                _answer(unit.future, error=exc)
        finally:
            self._running = None
        interrupted, self._interrupted = self._interrupted, None
        if interrupted is not None:
            raise interrupted

    def _commit(self, transaction: RootTransaction) -> None:
        if self._commits is None:
            transaction.commit()
            return
        checkpoint = self._checkpoint
        if self._commit_sec < INLINE_COMMIT_SEC and (checkpoint is None or checkpoint.done()):
            # On the loop: shorter than handing it to the thread. Not while a checkpoint runs there: the commit
            # then queues behind it, so their syncs never fight over the disk (checkpoints.py).
            self._commit_then_checkpoint(transaction)
            return
        done = self._commits.submit(self._commit_then_checkpoint, transaction)
        try:
            wait(done)
        except Exception:  # the COMMIT failed: the batch handles it (its units run again, one by one)
            raise
        except BaseException as exc:
            # Stopped while the commit is in flight: its outcome, not the interruption, is what the batch's
            # callers hear (a failed commit raises here as usual); the interruption is raised after they have.
            self._interrupted = exc
            done.result()

    def _commit_then_checkpoint(self, transaction: RootTransaction) -> None:
        """The commit (timed), then a checkpoint if one is due, queued on the commit thread: the batch is answered
        as soon as the commit returns, while the checkpoint runs."""
        checkpoints = self.checkpoints
        assert self._commits is not None
        if checkpoints is not None:
            checkpoints.before_commit(transaction.connection.connection)
        started = time.perf_counter()
        transaction.commit()
        self._commit_sec += (time.perf_counter() - started - self._commit_sec) * 0.1
        if checkpoints is not None and checkpoints.due_after_commit():
            restart = checkpoints.wants_restart()  # asked before the run, which answers it
            self._checkpoint = self._commits.submit(checkpoints.run)
            if restart:
                self._restart = self._checkpoint

    async def close(self) -> None:
        """Finish what is queued, then stop (on the loop, at shutdown); later units go to `after_stop`."""
        self._stopped = True
        deadline = self.loop.time() + CLOSE_WAIT_SEC
        while (self._pending or self._running is not None) and not self._task.done():
            if self.loop.time() > deadline:  # a batch stuck on a lock held elsewhere: its callers get an error
                log.warning("the event loop's writer did not finish within %s s; stopping it", CLOSE_WAIT_SEC)
                break
            await asyncio.sleep(0.005)  # the batches in flight answer within their statements' time
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        except Exception:  # already logged by _ended; the executor must still be shut down
            pass
        if self._commits is not None:
            if self.checkpoints is not None:
                self._commits.submit(self.checkpoints.close)
            self._commits.shutdown(wait=False)
