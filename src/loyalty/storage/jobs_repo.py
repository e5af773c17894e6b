"""SQL for job leases and export tasks. Claims are single conditional UPDATEs, portable to both stores: the
row count says whether this process won the lease."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, update

from loyalty.storage.tables import export_tasks, jobs


def ensure_job(conn: Connection, name: str) -> None:
    if conn.execute(select(jobs.c.name).where(jobs.c.name == name)).first() is None:
        conn.execute(insert(jobs).values(name=name))


def claim_job(conn: Connection, name: str, owner: str, now: datetime, lease: timedelta,
              every: timedelta) -> bool:
    """Take the job's lease if nobody holds it and its last run finished at least `every` ago."""
    result = conn.execute(
        update(jobs)
        .where(
            jobs.c.name == name,
            or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now),
            or_(jobs.c.last_finished_at.is_(None), jobs.c.last_finished_at <= now - every),
        )
        .values(lease_owner=owner, lease_until=now + lease, last_started_at=now, runs=jobs.c.runs + 1)
    )
    return result.rowcount == 1


def release_job(conn: Connection, name: str, owner: str, now: datetime, error: str | None) -> None:
    conn.execute(
        update(jobs).where(jobs.c.name == name, jobs.c.lease_owner == owner)
        .values(lease_owner=None, lease_until=None, last_finished_at=now, last_error=error)
    )


def job_rows(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(select(jobs).order_by(jobs.c.name)).mappings()]


# --- export tasks -------------------------------------------------------------------------------------------

def insert_task(conn: Connection, **values: Any) -> None:
    conn.execute(insert(export_tasks).values(**values))


def get_task(conn: Connection, task_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(export_tasks).where(export_tasks.c.id == task_id)).mappings().first()
    return dict(row) if row else None


def claim_task(conn: Connection, owner: str, now: datetime, lease: timedelta) -> dict[str, Any] | None:
    """Take the oldest queued task, or a running one whose worker's lease ran out."""
    claimable = or_(export_tasks.c.status == "queued",
                    and_(export_tasks.c.status == "running", export_tasks.c.lease_until < now))
    candidates = conn.execute(select(export_tasks.c.id).where(claimable)
                              .order_by(export_tasks.c.created_at).limit(5)).scalars().all()
    for task_id in candidates:
        won = conn.execute(
            update(export_tasks).where(export_tasks.c.id == task_id, claimable)
            .values(status="running", lease_owner=owner, lease_until=now + lease, started_at=now)
        ).rowcount
        if won == 1:
            return get_task(conn, task_id)
    return None


def claim_task_by_id(conn: Connection, task_id: str, owner: str, now: datetime,
                     lease: timedelta) -> dict[str, Any] | None:
    won = conn.execute(
        update(export_tasks).where(export_tasks.c.id == task_id, export_tasks.c.status == "queued")
        .values(status="running", lease_owner=owner, lease_until=now + lease, started_at=now)
    ).rowcount
    return get_task(conn, task_id) if won == 1 else None


def renew_task(conn: Connection, task_id: str, owner: str, until: datetime, rows: int) -> bool:
    return conn.execute(
        update(export_tasks).where(export_tasks.c.id == task_id, export_tasks.c.lease_owner == owner)
        .values(lease_until=until, rows=rows)
    ).rowcount == 1


def finish_task(conn: Connection, task_id: str, owner: str, **values: Any) -> bool:
    return conn.execute(
        update(export_tasks).where(export_tasks.c.id == task_id, export_tasks.c.lease_owner == owner)
        .values(lease_owner=None, lease_until=None, **values)
    ).rowcount == 1


def old_done_tasks(conn: Connection, before: datetime) -> list[dict[str, Any]]:
    rows = conn.execute(select(export_tasks).where(export_tasks.c.status == "done",
                                                   export_tasks.c.finished_at < before).limit(500)).mappings()
    return [dict(r) for r in rows]


def mark_expired(conn: Connection, task_id: str) -> None:
    conn.execute(update(export_tasks).where(export_tasks.c.id == task_id).values(status="expired", file=None))
