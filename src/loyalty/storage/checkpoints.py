"""SQLite under `serve`: WAL checkpoints after the answers, not inside a COMMIT.

SQLite checkpoints inside the COMMIT that takes the WAL past 1,000 pages: the commit returns only once every
page is copied into the database file and that file is synced, and the batch's callers wait for all of it.
With many members a batch's pages rarely repeat, so this was most of the paced checkout mix's tail latency
(p99 about 11 ms with checkpoints; 5.2 ms in a run with them held off). The loop writer's connections therefore never
checkpoint on their own (`wal_autocheckpoint=0`); the writer's commit thread runs a PASSIVE checkpoint on a
connection of its own right after a commit has been answered, while the loop runs the next batch's statements
(WAL mode lets a checkpoint run beside a writer). The next COMMIT queues behind it on the same thread, so the
two never fight over the disk. Checkpoints come about every `pages` WAL pages, as SQLite's own would: each one
reports how many pages the WAL held, and the number of commits until the next follows from it.

SQLite starts the WAL over from its beginning only when a write transaction begins after a checkpoint has copied
all of it. Under steady load the loop begins its next batch while the commit thread checkpoints, so that moment
never comes and the WAL grows for as long as the load lasts (measured: 1 GB in a minute of accruals, every read
slower for it). Once a checkpoint finds the WAL at `restart_pages` (four checkpoints' worth: it has not started
over lately), the next commit is followed by a checkpoint of its own, which the loop writer lets finish before it
begins again. That checkpoint copies one batch's pages (the one before copied the rest), so the pause is short,
and the commit after it writes from the WAL's start.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

log = logging.getLogger("loyalty.storage")

PAGES = 1000  # SQLite's own wal_autocheckpoint default


class Checkpoints:
    """Used by one writer's commit thread only."""

    def __init__(self, db_path: Path, pages: int = PAGES):
        self.db_path = db_path
        self.pages = pages
        self.restart_pages = 4 * pages
        self.done = 0
        self._every = 1  # commits between checkpoints, re-estimated by each checkpoint
        self._since = 0
        self._restart_next = False  # the next commit's checkpoint is the one the writer waits for
        self._conn: sqlite3.Connection | None = None

    def before_commit(self, pooled: Any) -> None:
        """`pooled`: the writer's pooled connection; its own checkpoints are turned off once, for its lifetime."""
        if not pooled.info.get("checkpoints_off"):
            pooled.dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")
            pooled.info["checkpoints_off"] = True

    def due_after_commit(self) -> bool:
        self._since += 1
        return self._restart_next or self._since >= self._every

    def wants_restart(self) -> bool:
        """The checkpoint now due is the one after which the WAL can start over: the writer should let it
        finish before it begins again."""
        return self._restart_next

    def run(self) -> None:
        """A PASSIVE checkpoint; errors are logged (the next one tries again, the WAL only grows meanwhile)."""
        since, self._since = self._since, 0
        restarting, self._restart_next = self._restart_next, False
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
            _busy, wal_pages, _copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            log.warning("WAL checkpoint failed", exc_info=True)
            return
        self.done += 1
        if restarting:  # it came early, after one commit: it says nothing of how often checkpoints are due
            return
        per_commit = max(1, wal_pages // max(1, since))
        self._every = max(1, self.pages // per_commit)
        self._restart_next = wal_pages >= self.restart_pages

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
