"""Leased jobs: a recurring job runs in at most one process at a time, at most once per period.

`run_leased` takes the job's lease with one conditional UPDATE (portable SQL, so it works the same on SQLite and
on PostgreSQL shared by many servers), runs the work, and releases the lease with the outcome. A process that
dies holding a lease blocks nobody for longer than the lease.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import timedelta

from loyalty.services.runtime import Runtime
from loyalty.storage import jobs_repo


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def run_leased(rt: Runtime, name: str, owner: str, every: timedelta, work: Callable[[], object],
               lease: timedelta | None = None) -> bool:
    """Run `work` if this process wins the job's lease; return whether it ran."""
    lease = lease or timedelta(seconds=rt.settings.job_lease_sec)
    rt.store.write(lambda conn: jobs_repo.ensure_job(conn, name))
    if not rt.store.write(lambda conn: jobs_repo.claim_job(conn, name, owner, rt.clock.now(), lease, every)):
        return False
    error: str | None = None
    try:
        work()
    except Exception as exc:
        error = f"{exc.__class__.__name__}: {exc}"
        raise
    finally:
        rt.store.write(lambda conn: jobs_repo.release_job(conn, name, owner, rt.clock.now(), error))
    return True


def job_status(rt: Runtime) -> list[dict[str, object]]:
    return rt.store.read(jobs_repo.job_rows)
