"""Run a request's synchronous use case on the event loop thread, suspending it while it waits for a commit.

Handing every request to a worker thread and back costs two GIL hand-offs, which on the hot endpoints cost
as much CPU as the use case itself. With an embedded store (SQLite) the reads of a use case are short local
calls, so the event loop runs the use case directly, inside a greenlet; when the use case waits for the group
commit (`Store.write`), `wait` switches back to the loop, which awaits the commit's future and resumes the
use case with its result. Many requests are thus in flight at once without a thread each, and they still share
one commit. Outside such a greenlet (CLI, jobs, worker threads) `wait` simply blocks.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import greenlet

T = TypeVar("T")


class _UseCase(greenlet.greenlet):  # type: ignore[misc]
    """A greenlet that may suspend on a store future (see `wait`)."""


async def run_inline(fn: Callable[..., T], *args: Any) -> T:
    runner = _UseCase(fn)
    runner.gr_context = contextvars.copy_context()
    value = runner.switch(*args)
    while not runner.dead:
        try:
            result = await asyncio.wrap_future(value)
        except BaseException as exc:  # the commit's failure belongs to the use case: raise it there
            value = runner.throw(exc)
        else:
            value = runner.switch(result)
    return value  # type: ignore[no-any-return]


def wait(future: Future[T]) -> T:
    """The store's way to wait for a future: suspend the use case when it runs inline, else block."""
    current = greenlet.getcurrent()
    if isinstance(current, _UseCase):
        return current.parent.switch(future)  # type: ignore[no-any-return]
    return future.result()
