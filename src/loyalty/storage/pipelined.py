"""Writes whose outcome nobody reads wait, and go to PostgreSQL together with the next statement.

An accrual inserts its transaction, its lot and its journal rows and updates the account: four statements
whose results the use case never looks at. On PostgreSQL each statement is a round trip (a wait for the server,
a wake-up of its backend, an event-loop turn here), and round trips were most of the cost of a write.
`PgConnection.defer` queues such a statement inside a transaction; the queue is sent in one pipeline
(psycopg's pipeline mode: one round trip) together with the next statement that needs an answer, or on its
own when the group committer ends a unit (`flush`), or before COMMIT. Statements always reach the server in
the order they were issued, so a later read sees the earlier writes. A failure of a deferred statement is
raised by whatever flushed it, which the committer makes the unit that issued it (it flushes at each unit's
end), and it is SQLAlchemy's error type, as a direct statement's would be.

SQLite has no round trips: its connections run every statement at once (`defers` is False).
"""

from __future__ import annotations

from typing import Any

from psycopg import Cursor

from loyalty.storage.cooperative import CooperativeConnection

Queued = tuple[str, Any]  # SQL and its parameters (None: none)


class PgConnection(CooperativeConnection):
    """A cooperative psycopg connection that can hold back writes until the next round trip."""

    _queued: list[Queued]
    flushes = 0  # round trips that sent queued statements

    def defers(self) -> bool:
        """Deferring is for transactions (their COMMIT flushes); an autocommit statement runs at once."""
        return not self.autocommit

    def defer(self, sql: str, params: Any = None) -> None:
        if not hasattr(self, "_queued"):
            self._queued = []
        self._queued.append((sql, params))

    def queued(self) -> int:
        return len(getattr(self, "_queued", ()))

    def drop_queued(self, keep: int = 0) -> None:
        """Forget what is queued beyond the first `keep` statements (their unit was rolled back unsent)."""
        if hasattr(self, "_queued"):
            del self._queued[keep:]

    def flush(self, *reads: tuple[Cursor[Any], str, Any]) -> None:
        """Send what is queued, and each read (cursor, SQL, parameters) after it, in one round trip; the first
        failure raises (psycopg's error). Each read's rows are then ready on its cursor."""
        queued = getattr(self, "_queued", None)
        if not queued and len(reads) <= 1:
            for cursor, sql, params in reads:
                cursor.execute(sql, params)
            return
        self._queued = []
        self.flushes += 1
        writes = self.cursor()
        try:
            with self.pipeline():  # leaving the block sends a Sync and collects every result
                for statement, values in queued or ():
                    writes.execute(statement, values)
                for cursor, sql, params in reads:
                    cursor.execute(sql, params)
        finally:
            writes.close()

    def commit(self) -> None:
        self.flush()
        super().commit()

    def rollback(self) -> None:
        self.drop_queued()
        super().rollback()


def defers(raw: Any) -> bool:
    return isinstance(raw, PgConnection) and raw.defers()
