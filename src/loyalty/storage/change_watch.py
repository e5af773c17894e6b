"""PostgreSQL: the change counters held in memory and refreshed on notification, instead of read per request.

Every request checks its token and the catalogue against their change counters (counters_repo.py), which cost a
round trip of their own: measured, about a tenth of a request's CPU on both sides. A server process instead
listens on a channel that a trigger on `change_counters` notifies at every bump, inside the bumping transaction
(PostgreSQL delivers it at commit, and never if it rolls back; migration 0004). The counters are read once and
held until the next notification.

What is promised stays "a change takes effect on the next request", with these bounds:
- A bump in this process (any store on the same database) stops the held values being used for
  `LOCAL_WAIT_SEC`, by when its own commit's notification has dropped whatever was read before that commit:
  this process's own requests never see an older value than their writes left.
- Another process's commit reaches this one as fast as PostgreSQL delivers the notification, well under a
  millisecond on one host. Held values are dropped after `MAX_AGE_SEC` whatever happens, and the listening
  session is checked every `PING_SEC`.
- While the listening session is down, and until it listens again, every request reads the counters as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from weakref import WeakKeyDictionary

log = logging.getLogger("loyalty.storage")

CHANNEL = "loyalty_changes"
APPLICATION_NAME = "loyalty-change-watch"
MAX_AGE_SEC = 30.0
PING_SEC = 5.0
LOCAL_WAIT_SEC = 5.0
RETRY_SEC = (0.5, 10.0)  # first and longest wait before listening again after the session failed

_watches: dict[Any, list[ChangeWatch]] = {}  # by database URL: every watch of this process on that database
# The watch of each engine, found once: hashing a URL costs about 3 µs, every request looks its watch up. Emptied
# whenever a watch starts or stops; an entry a racing reader leaves stale only sends reads to the store.
_by_engine: WeakKeyDictionary[Any, ChangeWatch | None] = WeakKeyDictionary()


class ChangeWatch:
    """Held counter values for one store, kept fresh by a listening session driven on `loop`."""

    def __init__(self, url: Any, connect_args: tuple[Any, dict[str, Any]]):
        self.url = url
        self._connect_args = connect_args
        self._values: dict[str, int] | None = None
        self._read_at = 0.0
        self._generation = 0  # moves at every change: values read before it moved are not kept
        self._listening = False
        self._local_until = 0.0  # a bump of this process is waiting for its notification until then
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_engine(cls, engine: Any) -> ChangeWatch:
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        cparams = {k: v for k, v in cparams.items() if k != "context"}  # SQLAlchemy's type adapters: not needed
        cparams.setdefault("connect_timeout", 10)
        cparams["application_name"] = APPLICATION_NAME  # how operators (and tests) find the session
        return cls(engine.url, (cargs, cparams))

    # --- for readers ------------------------------------------------------------------------------------------

    def held(self) -> dict[str, int] | None:
        """The counters, when the held values can be trusted; else None (read them, then `keep`)."""
        values = self._values
        if values is None or not self._listening:
            return None
        now = time.monotonic()
        if now - self._read_at > MAX_AGE_SEC or now < self._local_until:
            return None
        return values

    def generation(self) -> int:
        return self._generation

    @property
    def listening(self) -> bool:
        return self._listening

    def keep(self, values: dict[str, int], generation: int) -> None:
        """Hold values read from the store, unless a change came in since the read began (`generation`)."""
        if generation == self._generation and self._listening:
            self._values, self._read_at = values, time.monotonic()

    def changed(self, local: bool = False) -> None:
        self._generation += 1
        self._values = None
        if local:
            # Not shortened by a notification: one cannot tell whose commit it announces.
            self._local_until = time.monotonic() + LOCAL_WAIT_SEC

    # --- the listening session ----------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        _watches.setdefault(self.url, []).append(self)
        _by_engine.clear()
        self._task = loop.create_task(self._listen(), name="loyalty-change-watch")

    async def stop(self) -> None:
        watches = _watches.get(self.url, [])
        if self in watches:
            watches.remove(self)
        _by_engine.clear()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._listening = False

    async def _listen(self) -> None:
        import psycopg

        wait = RETRY_SEC[0]
        cargs, cparams = self._connect_args
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(*cargs, **cparams, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.changed()  # anything may have changed while nobody listened
                    self._listening = True
                    wait = RETRY_SEC[0]
                    while True:
                        async for _ in conn.notifies(timeout=PING_SEC):
                            self.changed()
                        await conn.execute("SELECT 1")  # a session that died quietly fails here
            except psycopg.Error as exc:
                log.warning("listening for store changes failed (%s); counters are read per request", exc)
            finally:
                self._listening = False
                self.changed()
            await asyncio.sleep(wait)
            wait = min(wait * 2, RETRY_SEC[1])


def watch_of(engine: Any) -> ChangeWatch | None:
    """A watch on the database `engine` connects to (any one: they all hear the same notifications)."""
    try:
        return _by_engine[engine]
    except KeyError:
        watches = _watches.get(engine.url)
        found = _by_engine[engine] = watches[0] if watches else None
        return found


def bumped(url: Any) -> None:
    """A counter is being bumped on `url` by this process: every watch on it stops trusting its values."""
    for watch in _watches.get(url, ()):
        watch.changed(local=True)
