"""Group commit: a writer runs many waiting units of work in one store transaction.

`GroupCommitter` is the writer as a thread; loop_writer.py drives the same batches from the event loop.

A durable commit (an fsync) costs far more than the statements of one ledger operation, so committing each
request on its own caps throughput at the disk's flush rate. The committer takes every unit of work waiting
in its queue, runs them inside one transaction, commits once, and only then answers each caller, so nothing
is acknowledged before it is durable.

- One failing unit never fails its neighbours. On SQLite each unit runs under its own SAVEPOINT, rolled back
  if it fails. On PostgreSQL a unit's writes wait in the connection's queue until a later round trip
  (pipelined.py), so a unit refused before any of its writes went out is undone by dropping them; savepoints
  there cost about an eighth of PostgreSQL's work per accrual (two statements and a subtransaction each). In the rare
  case where the transaction holds some of a failing unit's writes, or a statement failed and aborted it, the
  batch is rolled back and the other units run again as a new batch, the failing one after it on its own.
- A unit that lost a race (a retryable store error) runs again on its own, through the ordinary retry loop.
- If the commit itself fails, nothing of the batch is durable, so every unit runs again on its own (refused
  ones too); units are written to be safe to re-run (they only read and write through the connection).
- Units that name the rows they lock (`key`) run in key order inside a batch, so batches of different
  processes lock accounts in one global order and cannot deadlock each other on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from sqlalchemy import Connection, Engine, RootTransaction
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from loyalty.domain.errors import Unavailable
from loyalty.storage.pipelined import defers

log = logging.getLogger("loyalty.storage")

Work = Callable[[Connection], Any]


class _Unit:
    __slots__ = ("work", "key", "future", "result", "error", "rerun")

    def __init__(self, work: Work, key: Hashable | None, future: Future[Any] | asyncio.Future[Any] | None = None):
        self.work = work
        self.key = key
        self.future = future if future is not None else Future()
        self.result: Any = None
        self.error: BaseException | None = None
        self.rerun = False


class _Batches:
    """What both writers share: running a batch of units in one transaction, each under its own savepoint."""

    # A batch of one runs through the store's ordinary write path (no savepoint), unless the writer commits
    # differently from that path (loop_writer.py, SQLite).
    single_unit_alone = True

    def __init__(self, engine: Engine, run_alone: Callable[[Work], Any],
                 is_retryable: Callable[[DBAPIError], bool], max_batch: int):
        self.engine = engine
        self.run_alone = run_alone
        self.is_retryable = is_retryable
        self.max_batch = max_batch
        self.batches = 0
        self.units = 0

    def _run_guarded(self, batch: list[_Unit]) -> None:
        try:
            self._run_batch(batch)
        except BaseException as exc:  # never leave callers waiting
            if isinstance(exc, PoolTimeout):
                log.warning("writer found no free connection for %d units", len(batch))
                exc = Unavailable("The store has no free connection; retry later")
            elif isinstance(exc, Exception):
                log.exception("writer batch failed unexpectedly")
            for unit in batch:
                _answer(unit.future, error=exc)
            if not isinstance(exc, Exception):
                raise  # the writer itself is being stopped (cancelled, interpreter exit)

    def _run_batch(self, batch: list[_Unit]) -> None:
        self.batches += 1
        self.units += len(batch)
        if len(batch) == 1 and self.single_unit_alone:
            self._alone(batch[0])
            return
        batch.sort(key=lambda u: (u.key is None, _order(u.key)))
        try:
            with self.engine.connect() as conn, conn.begin() as transaction:
                raw = conn.connection.dbapi_connection
                assert raw is not None
                cursor = raw.cursor()
                if defers(raw):
                    self._run_deferring(conn, raw, batch)
                else:
                    for index in range(len(batch)):
                        self._in_savepoint(conn, cursor, batch, index)
                cursor.close()
                try:
                    self._commit(transaction)
                except BaseException:
                    # SQLAlchemy counts a failed COMMIT as the end of the transaction and will not roll back,
                    # but SQLite keeps it open (a deferred foreign key failed, say): end it on the driver.
                    _roll_back_driver(raw)
                    raise
        except _Aborted as aborted:  # rolled back as the `with` ended
            self._run_again(batch, aborted)
            return
        except DBAPIError as exc:
            culprit = _blamed(batch, exc)
            if culprit is not None and not exc.connection_invalidated:
                # PostgreSQL: a write deferred to the COMMIT's round trip failed; the COMMIT did not run.
                self._run_again(batch, _Aborted(culprit, None if self.is_retryable(exc) else exc))
                return
            if exc.connection_invalidated:
                # The connection died, maybe during COMMIT: whether the batch is durable is unknown, so it is
                # not run again (writes without an eid would apply twice); callers retry with their eids.
                log.warning("group commit of %d units lost its connection (%s)", len(batch), exc)
                for unit in batch:
                    _answer(unit.future, error=Unavailable("The store connection was lost; retry later"))
                return
            # The commit (or the transaction) failed: nothing of the batch is durable; run each unit alone. A
            # refusal is decided again too: the state it was decided on never became durable.
            log.warning("group commit of %d units failed (%s); running them one by one", len(batch), exc)
            for unit in batch:
                unit.result, unit.error, unit.rerun = None, None, True
        for unit in batch:
            if unit.rerun:
                self._alone(unit)
            else:
                _answer(unit.future, unit.result, unit.error)

    def _commit(self, transaction: RootTransaction) -> None:
        transaction.commit()

    # --- PostgreSQL: no savepoints --------------------------------------------------------------------------------

    def _run_deferring(self, conn: Connection, raw: Any, batch: list[_Unit]) -> None:
        """Run the units one after another in the transaction; raise `_Aborted` when it cannot go on."""
        try:
            for index, unit in enumerate(batch):
                raw.issuer, raw.issuer_wrote = unit, False
                mark, sent = raw.queued(), raw.flushes
                try:
                    unit.result = unit.work(conn)
                except DBAPIError as exc:
                    raise self._aborted(batch, index, exc) from exc
                except Exception as exc:  # a refusal (insufficient points, ...) or a bug
                    if raw.issuer_wrote:  # some of its writes are in the transaction: only a rollback undoes them
                        raise _Aborted(index, None) from exc
                    # Its writes are all still queued (after the earlier units', unless a round trip sent those).
                    raw.drop_queued(keep=mark if raw.flushes == sent else 0)
                    unit.error = exc
            # The writes still queued go with the COMMIT; a failure among them names its unit (see _run_batch).
        finally:
            raw.issuer = None

    def _aborted(self, batch: list[_Unit], index: int, exc: DBAPIError) -> BaseException:
        """Unit `index` met a store error, which aborted the transaction. The failing statement may be an earlier
        unit's (a write of it deferred to this round trip): that one is to blame."""
        if exc.connection_invalidated:
            return exc
        culprit = _blamed(batch, exc) if hasattr(exc.orig, "issued_by") else index
        return _Aborted(culprit, None if self.is_retryable(exc) else exc)

    def _run_again(self, batch: list[_Unit], aborted: _Aborted) -> None:
        """After a rollback: the units other than the culprit run again as a batch (in the same order, so it
        reaches the states they were decided on), then the culprit alone, unless its store error is final. A
        refusal decided in the rolled-back batch is decided again too: the state it saw never became durable."""
        if aborted.culprit is None:  # blame unknown: each unit on its own
            for unit in batch:
                self._alone(unit)
            return
        culprit = batch[aborted.culprit]
        rest = [unit for unit in batch if unit is not culprit]
        for unit in rest:
            unit.result, unit.error, unit.rerun = None, None, False
        if rest:
            self._run_batch(rest)
        if aborted.error is not None:
            _answer(culprit.future, error=aborted.error)
        else:
            self._alone(culprit)

    # --- SQLite: a savepoint per unit -----------------------------------------------------------------------------

    def _in_savepoint(self, conn: Connection, cursor: Any, batch: list[_Unit], index: int) -> None:
        unit = batch[index]
        _statement(conn, cursor, "SAVEPOINT unit")
        try:
            unit.result = unit.work(conn)
        except Exception as exc:  # a refusal (insufficient points, ...), a store error or a bug: this unit only
            _statement(conn, cursor, "ROLLBACK TO SAVEPOINT unit")
            _statement(conn, cursor, "RELEASE SAVEPOINT unit")
            unit.result = None
            if isinstance(exc, DBAPIError) and self.is_retryable(exc):
                unit.rerun = True  # a lost race: run again alone after the batch
            else:
                unit.error = exc
        else:
            _statement(conn, cursor, "RELEASE SAVEPOINT unit")

    def _alone(self, unit: _Unit) -> None:
        try:
            result = self.run_alone(unit.work)
        except Exception as exc:
            _answer(unit.future, error=exc)
        else:
            _answer(unit.future, result)


def _blamed(batch: list[_Unit], exc: DBAPIError) -> int | None:
    """The index of the unit that issued the failing statement (pipelined.py's `issued_by`), if in `batch`."""
    issuer = getattr(exc.orig, "issued_by", None)
    return next((i for i, unit in enumerate(batch) if unit is issuer), None) if issuer is not None else None


class _Aborted(Exception):
    """The batch's transaction must be rolled back (PostgreSQL): unit `culprit` failed (None: unknown), with a
    store `error` that is its final answer, or None when it is to run again on its own."""

    def __init__(self, culprit: int | None, error: DBAPIError | None):
        super().__init__(culprit, error)
        self.culprit = culprit
        self.error = error


def _statement(conn: Connection, cursor: Any, sql: str) -> None:
    """Run a savepoint statement on the driver's cursor; its failure raised as SQLAlchemy's error type, marked
    when the connection is dead (the transaction's rollback then discards it from the pool)."""
    try:
        cursor.execute(sql)
    except conn.dialect.loaded_dbapi.Error as exc:
        lost = conn.invalidated or conn.dialect.is_disconnect(exc, cursor.connection, cursor)
        raise DBAPIError.instance(sql, None, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect,
                                  connection_invalidated=lost) from exc


def _roll_back_driver(raw: Any) -> None:
    try:
        raw.rollback()
    except Exception:  # the connection is dead: the pool discards it
        log.debug("rollback after a failed commit failed", exc_info=True)


def _answer(future: Future[Any] | asyncio.Future[Any], result: Any = None,
            error: BaseException | None = None) -> None:
    """Answer a caller, unless it stopped waiting (its future was cancelled): the work stands either way."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except (InvalidStateError, asyncio.InvalidStateError):
        pass


class GroupCommitter(_Batches):
    """A writer thread over `engine`. `run_alone(work)` must run one unit in its own transaction with retries
    (the store's ordinary write path); `is_retryable(exc)` tells a lost race from a real failure."""

    def __init__(self, engine: Engine, run_alone: Callable[[Work], Any],
                 is_retryable: Callable[[DBAPIError], bool], max_batch: int = 128, name: str = "loyalty-writer"):
        super().__init__(engine, run_alone, is_retryable, max_batch)
        self._queue: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, work: Work, key: Hashable | None = None) -> Future[Any]:
        if self._stopped:
            raise RuntimeError("the writer is stopped")
        unit = _Unit(work, key)
        self._queue.put(unit)
        return unit.future

    def is_writer_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)
            self._thread.join(timeout=30)

    # --- the writer thread ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    unit = self._queue.get_nowait()
                except queue.Empty:
                    break
                if unit is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(unit)
            self._run_guarded(batch)


def _order(key: Hashable | None) -> Any:
    return key if key is not None else ()
