"""PostgreSQL statements in few round trips, sent straight through libpq's pipeline mode.

Writes whose outcome nobody reads wait: an accrual inserts its transaction, its lot and its journal rows and
updates the account, four statements whose results the use case never looks at. `PgConnection.defer` queues
such a statement inside a transaction; `run_all` sends the queue together with the statements that need an
answer in one pipeline (one round trip), and `commit` sends it with the COMMIT. Statements reach the server in
the order they were issued, so a later read sees the earlier writes. A failure among them is raised by
whatever sent it, carrying who issued the failing statement (`issued_by`: the group committer's unit, which
may be an earlier unit than the one whose read sent it).

The pipeline is driven on the connection's libpq object (`pgconn`) rather than through psycopg's cursors and
`Connection.pipeline()`: measured, those layers cost about three times the CPU of the exchange itself (a
zero-timeout poll and a result check per statement, Python generators per step). Statements are server-side
prepared on first use per connection (named `le_N`, apart from psycopg's own `_pg3_N`), parameters go as text
(every statement casts its binds, `$1::BIGINT`), and rows are loaded by psycopg's own (C) Transformer, so
values come back exactly as a psycopg cursor would give them.

SQLite has no round trips: its connections run every statement at once (`defers` is False).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from psycopg import IsolationLevel, errors
from psycopg.adapt import PyFormat, Transformer
from psycopg.pq import ConnStatus, ExecStatus, PGresult, TransactionStatus
from psycopg.waiting import READY_R, WAIT_R, WAIT_RW, Ready

from loyalty.storage.cooperative import CooperativeConnection, wait_for_server

Statement = tuple[bytes, Sequence[Any] | None]  # SQL ($n placeholders) and its parameters (None: none)

_SYNC = ExecStatus.PIPELINE_SYNC
_FAILED = ExecStatus.FATAL_ERROR
_statement_names = itertools.count(1)  # unique in the process, so a name never means two statements
_COMMIT = b"COMMIT"
_NO_SUCH_STATEMENT = "26000"  # invalid_sql_statement_name


class PgConnection(CooperativeConnection):
    """A cooperative psycopg connection that sends statements in pipelines and can hold back writes."""

    def __init__(self, pgconn: Any, *args: Any, **kwargs: Any):
        super().__init__(pgconn, *args, **kwargs)
        self._queued: list[Statement] = []
        self._issuers: list[Any] = []  # who issued each queued statement (see `issuer`)
        self._names: dict[bytes, bytes] = {}  # SQL -> name of its server-side prepared statement on this session
        self._loader = Transformer(self)
        self._is_utf8: bool | None = None  # read on first use, after the session's set-up
        self.flushes = 0  # round trips that sent queued statements
        # Who issues the statements from now on: the group committer names the unit it runs, so that a failure
        # of a deferred statement sent in a later unit's round trip is still laid at the right door
        # (`issued_by` on the raised error).
        self.issuer: Any = None
        # Whether a statement of the current issuer that may change data has reached the server. The group
        # committer runs units without savepoints here: a unit refused while all its writes still wait in the
        # queue is undone by dropping them, one whose writes went out needs its transaction rolled back.
        self.issuer_wrote = False

    def defers(self) -> bool:
        """Deferring is for transactions (their COMMIT flushes); an autocommit statement runs at once."""
        return not self.autocommit

    def defer(self, sql: str | bytes, params: Sequence[Any] | None = None) -> None:
        # Parameters become text now, so a value the store cannot take fails the code that issued it.
        encoded = self._encoded(params)
        self._queued.append((sql.encode() if isinstance(sql, str) else sql, encoded))
        self._issuers.append(self.issuer)

    def queued(self) -> int:
        return len(self._queued)

    def drop_queued(self, keep: int = 0) -> None:
        """Forget what is queued beyond the first `keep` statements (their unit was rolled back unsent)."""
        del self._queued[keep:]
        del self._issuers[keep:]

    def flush(self) -> None:
        """Send what is queued (one round trip), if anything is."""
        if self.queued():
            self.run_all(())

    def run_all(self, statements: Sequence[Statement]) -> list[PGresult]:
        """Send what is queued, then `statements`, in one pipeline (one round trip: a BEGIN first if the
        transaction has not begun); return the results of `statements`. The whole pipeline is read before the
        first failure is raised (psycopg's error class for its SQLSTATE, with `issued_by`)."""
        statements = [(sql, self._encoded(params)) for sql, params in statements]
        queued = self._queued
        issuers = [*self._issuers, *[self.issuer] * len(statements)]
        if self.issuer is not None and not self.issuer_wrote:
            self.issuer_wrote = _writes_of(self.issuer, [*queued, *statements], issuers)
        if queued:
            self._queued, self._issuers = [], []
            self.flushes += 1
        begin = not self.autocommit and self.pgconn.transaction_status == TransactionStatus.IDLE
        results = self._exchange([*queued, *statements], issuers, begin)
        return results[len(queued):]

    def rows(self, result: PGresult, first_only: bool = False) -> list[tuple[Any, ...]]:
        """The rows of a result, loaded as a psycopg cursor would load them."""
        loader = self._loader
        loader.set_pgresult(result)
        count = min(result.ntuples, 1) if first_only else result.ntuples
        rows: list[tuple[Any, ...]] = loader.load_rows(0, count, tuple)
        loader.set_pgresult(None)
        return rows

    def commit(self) -> None:
        if self.queued() or self.pgconn.transaction_status == TransactionStatus.INTRANS:
            self.run_all(((_COMMIT, None),))  # the deferred writes (after a BEGIN if none was sent) and COMMIT
        else:
            self.drop_queued()
            super().commit()

    def rollback(self) -> None:
        self.drop_queued()
        super().rollback()

    # --- the exchange -----------------------------------------------------------------------------------------

    def _exchange(self, statements: list[Statement], issuers: list[Any], begin: bool) -> list[PGresult]:
        pg = self.pgconn
        names = self._names
        # What each result of the pipeline answers: a statement (its index), a PREPARE (its SQL), or the BEGIN;
        # and who issued it.
        expected: list[int | bytes | None] = []
        blame: list[Any] = []
        preparing: dict[bytes, bytes] = {}
        pg.enter_pipeline_mode()
        try:
            if begin:
                pg.send_query_params(self._begin_command(), None)
                expected.append(None)
                blame.append(self.issuer)
            for index, (sql, values) in enumerate(statements):
                if values is None:  # SAVEPOINT, COMMIT, ...: nothing to prepare
                    pg.send_query_params(sql, None)
                else:
                    name = names.get(sql) or preparing.get(sql)
                    if name is None:
                        name = preparing[sql] = b"le_%d" % next(_statement_names)
                        pg.send_prepare(name, sql)
                        expected.append(sql)
                        blame.append(issuers[index])
                    pg.send_query_prepared(name, values)
                expected.append(index)
                blame.append(issuers[index])
            pg.pipeline_sync()
            results = wait_for_server(self, _pipeline_results(pg))
            pg.exit_pipeline_mode()
        except BaseException:
            if pg.status == ConnStatus.OK:  # interrupted mid-exchange: the session's state is unknown
                pg.finish()
            raise
        out: list[PGresult] = []
        failure = failed_by = None
        for what, result, issuer in zip(expected, results, blame, strict=True):
            status = result.status
            if status == _FAILED and failure is None:
                failure, failed_by = result, issuer
            if isinstance(what, bytes):
                if status == ExecStatus.COMMAND_OK:  # prepared statements outlive transactions, even failed ones
                    names[what] = preparing[what]
            elif what is not None:
                out.append(result)
        if failure is not None:
            error = errors.error_from_result(failure, encoding=self.info.encoding)
            if error.sqlstate == _NO_SUCH_STATEMENT:  # the session's statements were dropped (DISCARD ALL)
                names.clear()  # prepare them again on next use; the store retries the unit
            error.issued_by = failed_by  # type: ignore[attr-defined]
            raise error
        return out

    def _encoded(self, params: Sequence[Any] | None) -> list[bytes | None] | None:
        return None if params is None else [self._text(v) for v in params]

    def _text(self, value: Any) -> bytes | None:
        kind = type(value)
        if kind is str and self._utf8():
            if "\x00" in value:  # libpq would cut the value there; psycopg's dumper refuses it too
                raise errors.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
            return value.encode()  # type: ignore[no-any-return]
        if kind is int:
            return b"%d" % value
        if value is None:
            return None
        if kind is bool:
            return b"t" if value else b"f"
        return bytes(self._loader.get_dumper(value, PyFormat.TEXT).dump(value))

    def _utf8(self) -> bool:
        """Whether the session's client encoding is UTF-8 (else strings go through psycopg's dumper)."""
        if self._is_utf8 is None:
            self._is_utf8 = self.info.encoding == "utf-8"
        return self._is_utf8

    def _begin_command(self) -> bytes:
        """BEGIN with the session's transaction characteristics, as psycopg itself would issue it."""
        parts = [b"BEGIN"]
        if self.isolation_level is not None:
            parts.append(b"ISOLATION LEVEL " + IsolationLevel(self.isolation_level).name.replace("_", " ").encode())
        if self.read_only is not None:
            parts.append(b"READ ONLY" if self.read_only else b"READ WRITE")
        if self.deferrable is not None:
            parts.append(b"DEFERRABLE" if self.deferrable else b"NOT DEFERRABLE")
        return b" ".join(parts)


def _pipeline_results(pg: Any) -> Any:
    """Generator (psycopg's wait protocol) sending the pipeline and reading every result up to its sync."""
    while pg.flush():  # the socket's send buffer is full: wait until it drains (reading what arrives)
        ready: Ready = yield WAIT_RW
        if ready & READY_R:
            pg.consume_input()
    results: list[PGresult] = []
    nothing = 0
    while True:
        while pg.is_busy():
            yield WAIT_R
            pg.consume_input()
        result = pg.get_result()
        if result is None:  # the end of one statement's results
            nothing += 1
            if nothing > 1:  # two ends in a row: nothing more will come (the session broke)
                raise errors.OperationalError("the connection ended in the middle of a pipeline")
            continue
        nothing = 0
        if result.status == _SYNC:
            return results
        results.append(result)


def _writes_of(issuer: Any, statements: list[Statement], issuers: list[Any]) -> bool:
    """Whether `statements` hold one of `issuer`'s that may change data (anything but a SELECT)."""
    return any(who is issuer and not sql.startswith(b"SELECT") for (sql, _), who in zip(statements, issuers, strict=True))


def wrote_outside(raw: Any, statement: str | None = None) -> None:
    """Note a statement sent by other means than the pipeline (psycopg's cursors: SQLAlchemy's statements, a
    COPY) as a write of the current issuer, unless it is a SELECT."""
    if isinstance(raw, PgConnection) and raw.issuer is not None and not (
            statement is not None and statement.lstrip()[:6].upper() == "SELECT"):
        raw.issuer_wrote = True


def defers(raw: Any) -> bool:
    return isinstance(raw, PgConnection) and raw.defers()
