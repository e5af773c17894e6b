"""Hot-path statements, compiled once per dialect and run on the driver's cursor.

SQLAlchemy's `Connection.execute` costs about 100 µs of Python per statement, several times what SQLite needs to
run a keyed lookup; on the request path that overhead was most of the work. A `Prepared` keeps the statement as a
Core construct (so it stays portable and visible), compiles it once per dialect, and runs it on the raw DBAPI
cursor of the same `Connection`, inside the same transaction. Datetimes are the only type that needs converting
(`UtcMicros`: integer microseconds in both stores); everything else the drivers pass through as is.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import Executable
from sqlalchemy.sql.sqltypes import NullType

from loyalty.storage.pipelined import PgConnection, Statement, defers, wrote_outside
from loyalty.storage.types import UtcMicros, from_micros, to_micros

_cursor_names = itertools.count(1)
# Statements sent through libpq directly (pipelined.py) take PostgreSQL's own $n placeholders.
_NUMBERED = PGDialect_psycopg(paramstyle="numeric_dollar")


class _Compiled:
    __slots__ = ("sql", "sql_bytes", "names", "positional", "micros_columns", "literals", "values_of",
                 "datetime_binds")

    def __init__(self, stmt: Any, dialect: Dialect, column_keys: list[str] | None):
        compiled = stmt.compile(dialect=dialect, column_keys=column_keys)
        self.sql: str = compiled.string
        self.sql_bytes = self.sql.encode()
        self.positional: bool = bool(dialect.positional)
        # The bind names in the order the driver expects them (positional styles), or the names (named styles).
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ()) if self.positional else tuple(
            compiled.bind_names.values())
        # Literals in the statement (`remaining > 0`) become bind parameters with their value attached.
        self.literals: dict[str, Any] = {
            name: _value(bind.effective_value) for name, bind in compiled.binds.items() if not bind.required}
        # The values in `names` order, fetched in C; a single name gets a 1-tuple too.
        names = self.names
        self.values_of: Callable[[Mapping[str, Any]], Sequence[Any]] = (
            itemgetter(*names) if len(names) > 1 else (lambda p: (p[names[0]],)) if names else (lambda p: ()))
        # Only binds typed as instants (or untyped) may carry a datetime to turn into microseconds.
        self.datetime_binds: tuple[int, ...] = tuple(
            i for i, name in enumerate(names)
            if name not in self.literals and isinstance(compiled.binds[name].type, (UtcMicros, NullType)))
        columns = getattr(stmt, "selected_columns", None)
        self.micros_columns: tuple[int, ...] = tuple(
            i for i, col in enumerate(columns or ()) if isinstance(col.type, UtcMicros))

    def bind(self, params: Mapping[str, Any]) -> Any:
        if self.literals:
            params = {**params, **self.literals}
        values = self.values_of(params)
        if self.datetime_binds:
            values = list(values)
            for i in self.datetime_binds:
                if isinstance(values[i], datetime):
                    values[i] = to_micros(values[i])
        return values if self.positional else dict(zip(self.names, values, strict=True))

    def decode(self, row: Sequence[Any]) -> tuple[Any, ...]:
        if not self.micros_columns:
            return tuple(row)
        out = list(row)
        for i in self.micros_columns:
            if out[i] is not None:
                out[i] = from_micros(out[i])
        return tuple(out)


def _value(value: Any) -> Any:
    return to_micros(value) if isinstance(value, datetime) else value


class Prepared:
    """One statement; `column_keys` names the columns an INSERT or UPDATE sets (all of them must be given)."""

    def __init__(self, stmt: Executable, column_keys: Iterable[str] | None = None):
        self.stmt = stmt
        self.column_keys = list(column_keys) if column_keys is not None else None
        self._by_dialect: dict[str, _Compiled] = {}

    def _compiled(self, conn: Connection) -> _Compiled:
        name = conn.dialect.name
        compiled = self._by_dialect.get(name)
        if compiled is None:
            compiled = self._by_dialect[name] = _Compiled(self.stmt, conn.dialect, self.column_keys)
        return compiled

    def _numbered(self) -> _Compiled:
        compiled = self._by_dialect.get("$n")
        if compiled is None:
            compiled = self._by_dialect["$n"] = _Compiled(self.stmt, _NUMBERED, self.column_keys)
        return compiled

    def _on_server(self, conn: Connection, raw: PgConnection, params: Mapping[str, Any],
                   first_only: bool = False) -> tuple[list[tuple[Any, ...]], int, _Compiled]:
        """PostgreSQL: run the statement after what is deferred, in one round trip; its rows and row count."""
        compiled = self._numbered()
        bound = compiled.bind(params)
        try:
            (result,) = raw.run_all(((compiled.sql_bytes, bound),))
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(exc, compiled.sql, bound, conn) from exc
        return raw.rows(result, first_only), result.command_tuples or 0, compiled

    def _cursor(self, conn: Connection, params: Mapping[str, Any],
                server_side: bool = False) -> tuple[Any, _Compiled]:
        compiled = self._compiled(conn)
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor(name=f"stream_{next(_cursor_names)}") if server_side else raw.cursor()
        bound = compiled.bind(params)
        try:
            if server_side and defers(raw):  # a named cursor cannot join a pipeline: the queued writes go first
                raw.flush()
            cursor.execute(compiled.sql, bound)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(exc, compiled.sql, bound, conn) from exc
        return cursor, compiled

    def run(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Execute; return the number of rows changed."""
        raw = conn.connection.dbapi_connection
        if isinstance(raw, PgConnection):
            return self._on_server(conn, raw, params)[1]
        cursor, _ = self._cursor(conn, params)
        count = int(cursor.rowcount)
        cursor.close()
        return count

    def send(self, conn: Connection, params: Mapping[str, Any]) -> None:
        """Execute a write whose outcome the caller does not read: on PostgreSQL it waits to go with the next
        statement that needs an answer (pipelined.py), and a failure is raised there."""
        self._send(conn, [params])

    def first(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        raw = conn.connection.dbapi_connection
        if isinstance(raw, PgConnection):
            rows, _, compiled = self._on_server(conn, raw, params, first_only=True)
            return compiled.decode(rows[0]) if rows else None
        cursor, compiled = self._cursor(conn, params)
        row = cursor.fetchone()
        cursor.close()
        return compiled.decode(row) if row is not None else None

    @staticmethod
    def first_of_each(conn: Connection, *reads: tuple[Prepared, Mapping[str, Any]]) -> list[tuple[Any, ...] | None]:
        """The first row of each statement, run in order; on PostgreSQL all in one round trip (with the writes
        deferred before them), for reads whose parameters do not depend on each other's answers."""
        raw = conn.connection.dbapi_connection
        if not isinstance(raw, PgConnection):
            return [stmt.first(conn, params) for stmt, params in reads]
        compiled = [stmt._numbered() for stmt, _ in reads]
        batch: list[Statement] = [(c.sql_bytes, c.bind(params)) for c, (_, params) in zip(compiled, reads, strict=True)]
        try:
            results = raw.run_all(batch)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(exc, "; ".join(c.sql for c in compiled), None, conn) from exc
        firsts = [raw.rows(result, first_only=True) for result in results]
        return [c.decode(rows[0]) if rows else None for c, rows in zip(compiled, firsts, strict=True)]

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        raw = conn.connection.dbapi_connection
        if isinstance(raw, PgConnection):
            rows, _, compiled = self._on_server(conn, raw, params)
            return [compiled.decode(r) for r in rows]
        cursor, compiled = self._cursor(conn, params)
        rows = cursor.fetchall()
        cursor.close()
        return [compiled.decode(r) for r in rows]

    def stream(self, conn: Connection, params: Mapping[str, Any], size: int) -> Iterator[list[tuple[Any, ...]]]:
        """Batches of `size` rows as the driver returns them (instants stay integer microseconds), read while
        the caller consumes them: a server-side cursor on PostgreSQL (it needs the transaction the caller holds),
        SQLite's own stepping otherwise. Memory stays one batch whatever the row count."""
        cursor, _ = self._cursor(conn, params, server_side=conn.dialect.name == "postgresql")
        try:
            while rows := cursor.fetchmany(size):
                yield rows
        finally:
            cursor.close()

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per parameter set (inserts of several rows); deferred as `send` is."""
        if rows:
            self._send(conn, rows)

    def _send(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        if isinstance(raw, PgConnection):
            numbered = self._numbered()
            try:
                for row in rows:
                    raw.defer(numbered.sql_bytes, numbered.bind(row))
                if not raw.defers():  # autocommit: nothing to wait for
                    raw.flush()
            except conn.dialect.loaded_dbapi.Error as exc:
                raise _wrapped(exc, numbered.sql, None, conn) from exc
            return
        compiled = self._compiled(conn)
        bound = [compiled.bind(r) for r in rows]
        cursor = raw.cursor()
        try:
            if len(bound) == 1:
                cursor.execute(compiled.sql, bound[0])
            else:
                cursor.executemany(compiled.sql, bound)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(exc, compiled.sql, bound, conn) from exc
        finally:
            cursor.close()


def send_deferred(conn: Connection) -> None:
    """Send the writes deferred on `conn` now, before a write of the caller's own on the driver that cannot join
    their pipeline (a COPY); a failure among them raised as SQLAlchemy's error type, naming the unit that issued
    it. The caller's write counts as its unit's (pipelined.py)."""
    raw = conn.connection.dbapi_connection
    if defers(raw):
        try:
            raw.flush()  # type: ignore[union-attr]
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(exc, "(deferred writes)", None, conn) from exc
        wrote_outside(raw)


def _wrapped(exc: Exception, sql: str, params: Any, conn: Connection) -> Exception:
    """The driver's error as SQLAlchemy's (IntegrityError, OperationalError, ...), as `Connection.execute` would
    raise it, so the unit of work recognises lost races and retries them."""
    return DBAPIError.instance(sql, params, exc, conn.dialect.loaded_dbapi.Error,
                               dialect=conn.dialect)
