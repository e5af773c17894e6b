"""Transaction exports (altcraft-api.md §5.11): an asynchronous task that writes one currency's transactions
in an inclusive period to a CSV file.

A task is queued by the API (or the CLI), claimed by whichever process's job runner gets its lease first, and
written from one streaming statement (one snapshot, constant memory) into a temporary file that is renamed
when complete. The worker renews its lease as it goes; if it dies, the lease runs out and another process
starts the task again from the beginning. Finished files are deleted after the retention period.
"""

from __future__ import annotations

import csv
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from loyalty.domain.dates import parse_datetime
from loyalty.domain.errors import Forbidden, InvalidParameter, TaskNotFound, Unavailable
from loyalty.domain.model import Currency
from loyalty.domain.points import format_amount
from loyalty.services.commands import ExportCmd
from loyalty.services.lookup import currency_for, program_for
from loyalty.services.runtime import Runtime
from loyalty.services.tokens import Principal
from loyalty.storage import catalog_repo, jobs_repo, ledger_repo

COLUMNS = [
    "transaction_id", "transaction_eid", "created_at", "transaction_type", "status", "amount", "balance_before",
    "balance_after", "promo_iid", "promo_eid", "description", "activation_date", "expiration_date", "source_type",
    "source_iid", "source_eid", "external_data", "profile_id", "points_currency_eid",
]
HEARTBEAT_ROWS = 20_000


@dataclass(frozen=True)
class TaskView:
    task_id: str
    status: str
    rows: int
    error: str | None
    ready: bool


def create(rt: Runtime, principal: Principal, cmd: ExportCmd) -> str:
    principal.require("loyalty:read")
    date_from = parse_datetime(cmd.date_from, "date_from")
    date_to = parse_datetime(cmd.date_to, "date_to")
    if date_from > date_to:
        raise InvalidParameter("date_from", "is after date_to")
    task_id = f"task_{uuid.uuid4()}"

    def work(conn: Connection) -> None:
        program = program_for(conn, principal, cmd.loyalty_program_id, for_write=False)
        currency = currency_for(conn, program, cmd.points_currency_iid, cmd.points_currency_eid, required=True)
        jobs_repo.insert_task(conn, id=task_id, program_id=program.id, currency_iid=currency.iid,
                              date_from=date_from, date_to=date_to, from_id=cmd.from_id,
                              token_id=principal.token_id, status="queued", created_at=rt.clock.now())

    rt.store.write(work)
    return task_id


def status(rt: Runtime, principal: Principal, task_id: str) -> TaskView:
    principal.require("loyalty:read")
    task = rt.store.read(lambda conn: jobs_repo.get_task(conn, task_id))
    if task is None:
        raise TaskNotFound(f"Export task {task_id} not found")
    if not principal.may_program(task["program_id"]):
        raise Forbidden(f"This token may not use program {task['program_id']}")
    shown = "done" if task["status"] == "expired" else task["status"]
    return TaskView(task_id, shown, int(task["rows"]), task["error"],
                    task["status"] == "done" and bool(task["file"]) and Path(task["file"]).exists())


def file_for_download(rt: Runtime, principal: Principal, task_id: str) -> Path:
    view = status(rt, principal, task_id)
    if not view.ready:
        raise TaskNotFound(f"Export task {task_id} has no file to download (status {view.status})")
    task = rt.store.read(lambda conn: jobs_repo.get_task(conn, task_id))
    assert task is not None
    return Path(task["file"])


def run_task(rt: Runtime, task: dict[str, Any], owner: str, dest: Path | None = None,
             progress: Callable[[int, int], None] | None = None) -> int:
    """Write the task's CSV; return the row count. Raises if the lease was lost to another process."""
    export_dir = Path(rt.settings.export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    final = dest or export_dir / f"{task['id']}.csv"
    tmp = final.with_name(final.name + f".{os.getpid()}.part")
    lease = timedelta(seconds=rt.settings.job_lease_sec)

    def write(conn: Connection) -> int:
        currency = next(c for c in catalog_repo.all_currencies(conn, task["program_id"])
                        if c.iid == task["currency_iid"])
        total = ledger_repo.export_count(conn, task["program_id"], currency.iid, task["date_from"],
                                         task["date_to"], task["from_id"])
        rows = 0
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(COLUMNS)
            for batch in ledger_repo.export_rows(conn, task["program_id"], currency.iid, task["date_from"],
                                                 task["date_to"], task["from_id"]):
                out.writerows(csv_rows(batch, currency))
                before, rows = rows, rows + len(batch)
                if rows // HEARTBEAT_ROWS != before // HEARTBEAT_ROWS:
                    if progress:
                        progress(rows, total)
                    _heartbeat(rt, task["id"], owner, lease, rows)
        if progress:
            progress(rows, total)
        return rows

    try:
        rows = rt.store.read(write, snapshot=True)
        # Only the lease holder may publish: a worker that stalled past its lease must not replace the file
        # another worker already finished.
        _heartbeat(rt, task["id"], owner, lease, rows)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    finished = rt.store.write(lambda conn: jobs_repo.finish_task(
        conn, task["id"], owner, status="done", rows=rows, file=str(final.resolve()), finished_at=rt.clock.now()))
    if not finished:
        raise LeaseLost(f"export {task['id']} was taken over by another worker")
    return rows


class LeaseLost(Exception):
    pass


def csv_rows(batch: list[tuple[Any, ...]], currency: Currency) -> Iterator[tuple[Any, ...]]:
    """CSV rows (COLUMNS) of transactions read in ledger_repo.EXPORT_COLUMNS order: the same text the history
    endpoint gives (history.render_txn), with external_data as stored, formatted straight from the store's
    values, as this runs a million times per export."""
    precision, eid = currency.precision, currency.eid
    instant = instant_text()
    for (txn_id, txn_eid, created, kind, status, amount, before, after, promo_iid, promo_eid, description,
         activation, expiration, source_type, source_iid, source_eid, external, profile_id) in batch:
        yield (txn_id, _blank(txn_eid), instant(created), kind, status, format_amount(amount, precision),
               format_amount(before, precision), format_amount(after, precision), _blank(promo_iid),
               _blank(promo_eid), _blank(description), instant(activation) if activation is not None else "",
               instant(expiration) if expiration is not None else "", source_type, _blank(source_iid),
               _blank(source_eid), _blank(external), profile_id, eid)


def _blank(value: Any) -> Any:
    return "" if value is None else value


def instant_text() -> Callable[[int], str]:
    """Integer microseconds (UTC) as dates.format_datetime writes them, remembering the last second's text
    (an export runs in created_at order, so neighbouring rows often share it)."""
    last_second, last_text = -1, ""

    def text(micros: int) -> str:
        nonlocal last_second, last_text
        second, fraction = divmod(micros, 1_000_000)
        if second != last_second:
            last_second, last_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{last_text}.{fraction:06d}Z" if fraction else f"{last_text}Z"

    return text


def _heartbeat(rt: Runtime, task_id: str, owner: str, lease: timedelta, rows: int) -> None:
    until = rt.clock.now() + lease
    if not rt.store.write(lambda conn: jobs_repo.renew_task(conn, task_id, owner, until, rows)):
        raise LeaseLost(f"export {task_id} was taken over by another worker")


def process_queue(rt: Runtime, owner: str, limit: int = 10) -> int:
    """Claim and run queued exports (and ones whose worker died); return how many finished."""
    done = 0
    lease = timedelta(seconds=rt.settings.job_lease_sec)
    for _ in range(limit):
        task = rt.store.write(lambda conn: jobs_repo.claim_task(conn, owner, rt.clock.now(), lease))
        if task is None:
            break
        try:
            run_task(rt, task, owner)
            done += 1
        except LeaseLost:
            continue
        except Unavailable:  # the store is away or the server stopping: the lease runs out, another run resumes
            break
        except Exception as exc:  # the task fails visibly; the worker goes on with the next one
            rt.store.write(partial(jobs_repo.finish_task, task_id=task["id"], owner=owner, status="failed",
                                   error=f"{exc.__class__.__name__}: {exc}", finished_at=rt.clock.now()))
    return done


def cleanup(rt: Runtime) -> int:
    """Delete export files older than the retention period (their tasks become `expired`), and partial files
    left by workers that died mid-export."""
    before = rt.clock.now() - timedelta(hours=rt.settings.export_retention_hours)
    removed = 0
    export_dir = Path(rt.settings.export_dir)
    if export_dir.is_dir():
        for part in export_dir.glob("*.part"):
            if part.stat().st_mtime < before.timestamp():
                part.unlink(missing_ok=True)
    for task in rt.store.read(lambda conn: jobs_repo.old_done_tasks(conn, before)):
        if task["file"]:
            Path(task["file"]).unlink(missing_ok=True)
        rt.store.write(lambda conn: jobs_repo.mark_expired(conn, task["id"]))  # noqa: B023
        removed += 1
    return removed
