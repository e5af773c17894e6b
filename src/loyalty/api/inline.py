"""Use cases answered on the event loop thread (see storage/cooperative.py for how they suspend).

The event loop runs the hot endpoints' synchronous use cases directly, inside a greenlet, instead of handing
each request to a worker thread and back (two GIL hand-offs per request, which cost as much CPU as the use case
itself). A use case waiting for its group commit, or for PostgreSQL's answer to a read, suspends and lets the
loop serve other requests, so many requests are in flight at once without a thread each, and they still share
one commit.
"""

from loyalty.storage.cooperative import run_suspendable as run_inline
from loyalty.storage.cooperative import wait

__all__ = ["run_inline", "wait"]
