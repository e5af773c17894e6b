"""`loyalty/transactions_export` (altcraft-api.md §5.11) with its status and download extension, on both stores.

The test app runs without background jobs, so the queue is processed by calling exports.process_queue; the CSV is
compared row by row with what the store holds (read back through loyalty/account/transactions of every member).
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from loyalty.domain.dates import parse_datetime
from loyalty.domain.model import Txn
from loyalty.services import exports, ledger, programfile, tokens
from loyalty.services.commands import AccrueCmd, RedeemCmd
from loyalty.services.ids import new_txn_id
from loyalty.services.json_values import dumps_canonical, loads_exact
from loyalty.services.programfile_schema import validate_document
from loyalty.storage import jobs_repo
from loyalty.storage.tables import transactions
from tests.helpers import ApiClient, ok
from tests.helpers import assert_failure as fail

COLUMNS = [
    "transaction_id", "transaction_eid", "created_at", "transaction_type", "status", "amount", "balance_before",
    "balance_after", "promo_iid", "promo_eid", "description", "activation_date", "expiration_date", "source_type",
    "source_iid", "source_eid", "external_data", "profile_id", "points_currency_eid",
]
OWNER = "test-owner"
WIDE = {"date_from": "2000-01-01T00:00:00Z", "date_to": "2100-01-01T00:00:00Z"}


@pytest.fixture(autouse=True)
def export_dir(rt, tmp_path: Path) -> Path:
    """Keep export files in the test's directory, not in ./exports of the working directory."""
    path = tmp_path / "exports"
    rt.settings.export_dir = path
    return path




def start(api: ApiClient, fmt: str = "json", **params: Any) -> str:
    params = {"loyalty_program_id": 123, "points_currency_iid": 1, **WIDE, **params}
    params = {k: v for k, v in params.items() if v is not None}
    r = ok(api.call("loyalty/transactions_export", fmt=fmt, **params))
    task_id = r.data["task_id"]
    assert re.fullmatch(r"task_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", task_id), task_id
    uuid.UUID(task_id[len("task_"):])
    return task_id


def status(api: ApiClient, task_id: str, fmt: str = "json") -> dict[str, Any]:
    return ok(api.call("loyalty/transactions_export/status", fmt=fmt, task_id=task_id)).data


def download(api: ApiClient, url: str, how: str = "header") -> list[list[str]]:
    if how == "header":
        resp = api.client.get(url, headers={"Authorization": f"Bearer {api.token}"})
    else:
        resp = api.client.get(url, params={"token": api.token})
    assert resp.status_code == 200, resp.content
    assert resp.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(resp.content.decode("utf-8"), newline="")))


def run_export(api: ApiClient, rt, **params: Any) -> list[list[str]]:
    task_id = start(api, **params)
    assert exports.process_queue(rt, OWNER) == 1
    view = status(api, task_id)
    assert view["status"] == "done", view
    rows = download(api, view["download_url"])
    assert rows[0] == COLUMNS
    assert int(view["rows"]) == len(rows) - 1
    return rows[1:]


def member_history(api: ApiClient, email: str, currency: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        extra = {} if cursor is None else {"from_id": cursor}
        r = ok(api.call("loyalty/account/transactions", loyalty_program_id=123, matching="email", email=email,
                        limit=100, **currency, **extra))
        page = r.data if isinstance(r.data, list) else []
        items.extend(page)
        cursor = r.body["next_from_id"]
        if cursor is None:
            return items


def expected_rows(api: ApiClient, members: dict[str, str], eid: str = "stars", date_from: str = WIDE["date_from"],
                  date_to: str = WIDE["date_to"], from_id: str | None = None) -> list[dict[str, Any]]:
    """What the store holds for a currency, as export rows: every member's history, period inclusive, ids strictly
    after from_id, ordered by created_at then id."""
    lo, hi = parse_datetime(date_from, "date_from"), parse_datetime(date_to, "date_to")
    rows = []
    for email, profile_id in members.items():
        for item in member_history(api, email, {"points_currency_eid": eid}):
            created = parse_datetime(item["created_at"], "created_at")
            if lo <= created <= hi and (from_id is None or item["transaction_id"] > from_id):
                rows.append({**item, "profile_id": profile_id, "points_currency_eid": eid})
    rows.sort(key=lambda r: (parse_datetime(r["created_at"], "created_at"), r["transaction_id"]))
    return rows


def assert_rows_match(csv_rows: list[list[str]], expected: list[dict[str, Any]]) -> None:
    assert len(csv_rows) == len(expected)
    for n, (got, want) in enumerate(zip(csv_rows, expected, strict=True)):
        row = dict(zip(COLUMNS, got, strict=True))
        ext = row.pop("external_data")
        want = dict(want)
        want_ext = want.pop("external_data")
        assert (loads_exact(ext) if ext else None) == want_ext, (n, row, want)
        assert row == {c: "" if want[c] is None else str(want[c]) for c in COLUMNS if c != "external_data"}, n


# --- history generation ------------------------------------------------------------------------------------------


def bulk(rt, token: str, email: str, n: int, batch: int = 250) -> None:
    """n plain movements for one member (accruals, and a redemption after every third), in store transactions
    of `batch` prepared service operations."""
    principal = tokens.authenticate(rt, token)
    member = {"loyalty_program_id": 123, "matching": "email", "email": email}
    cmds: list[tuple[Any, str]] = []
    for i in range(n):
        if i % 4 == 3:
            cmds.append((RedeemCmd(**member, amount=f"{i % 7 + 1}.{i % 100:02d}"), "redemption"))
        else:
            cmds.append((AccrueCmd(**member, amount=f"{i % 97 + 10}.{i % 100:02d}",
                                   transaction_eid=f"{email}-{i}" if i % 5 == 0 else None,
                                   external_data={"i": i, "tag": "bulk"} if i % 3 == 0 else None), "accrual"))
    prepare = getattr(ledger, "_prepare_move", None)
    for begin in range(0, n, batch):
        chunk = cmds[begin:begin + batch]
        if prepare is None:  # pragma: no cover - the service layer changed shape
            for cmd, kind in chunk:
                (ledger.accrue if kind == "accrual" else ledger.redeem)(rt, principal, cmd)
            continue
        works = [prepare(rt, principal, cmd, kind)[0] for cmd, kind in chunk]
        rt.store.write(lambda conn, works=works: [w(conn) for w in works])


def special_rows(api: ApiClient, email: str) -> None:
    """Rows that exercise every column: quoting, promotions, temp/cancelled, orders, other currency."""
    m = {"loyalty_program_id": 123, "matching": "email", "email": email}
    ok(api.call("loyalty/accrue_points", **m, amount="12.30", description='He said "hi", then\nleft; ok',
                external_data={"nested": {"a": [1, 2.50, "x,y"]}, "q": 'quo"te'}, transaction_eid=f"sp-{email}"))
    ok(api.call("loyalty/accrue_points", **m, promotion_id="review_reward", amount="20"))
    ok(api.call("loyalty/accrue_points", **m, amount="5", activation_date="2025-03-01T00:00:00Z",
                expiration_date="2026-03-01T00:00:00+03:00"))
    temp = ok(api.call("loyalty/redeeme_points", **m, amount="1.00", is_temp=True)).data["transaction_id"]
    ok(api.call("loyalty/rollback_transaction", transaction_id=temp))
    done = ok(api.call("loyalty/redeeme_points", **m, amount="2.00")).data["transaction_id"]
    ok(api.call("loyalty/cancel_transaction", transaction_id=done))
    ok(api.call("market/orders/preorder_commit", external_id=f"order-{email}", **m, data={
        "currency": "USD", "total_price": "30.00", "redeem_points": "3.00",
        "lines": [{"external_id": "l1", "base_price_per_item": "30.00"}]}))
    ok(api.call("loyalty/accrue_points", **m, points_currency_eid="status_points", amount="300"))
    ok(api.call("loyalty/accrue_points", **m, amount="7.00", created_at="2025-01-10T00:00:00Z"))


def imported_history(rt, people: dict[str, str], per_member: int) -> None:
    """Historical transactions (as an import of past data would leave them), written straight to the store in
    one statement per member: many rows quickly, backdated through 2024, several sharing one created_at so that
    the export's tie order (created_at, then id) matters, ids deliberately not in created_at order."""
    base = datetime(2024, 1, 1, tzinfo=UTC)
    now = rt.clock.now()
    for profile_id in people.values():
        balance = 0
        txns = []
        for i in range(per_member):
            amount = (i * 37) % 5000 + 1
            kind = "redemption" if i % 5 == 4 and balance >= amount else "accrual"
            after = balance + amount if kind == "accrual" else balance - amount
            txns.append(Txn(
                id=new_txn_id(), program_id=123, profile_id=profile_id, currency_iid=1 if i % 10 else 2,
                eid=f"hist-{profile_id}-{i}" if i % 7 == 0 else None, type=kind, status="committed",
                amount=amount, balance_before=balance, balance_after=after,
                created_at=base + timedelta(hours=(per_member - i) // 3, microseconds=(i % 2) * 250),
                recorded_at=now, description=f"import, row {i}" if i % 4 == 0 else None,
                external_data=dumps_canonical({"row": i, "src": "import"}) if i % 6 == 0 else None))
            balance = after
        rows = [asdict(t) for t in txns]
        rt.store.write(lambda conn, rows=rows: conn.execute(insert(transactions), rows))


def population(api: ApiClient, rt, clock, admin_token: str, members: int, per_member: int,
               rounds: int = 3) -> dict[str, str]:
    """Several members, `rounds` minutes apart, each with special rows and plain bulk movements."""
    people: dict[str, str] = {}
    for i in range(members):
        email = f"m{i}@example.com"
        people[email] = api.member(email)
    for _ in range(rounds):
        clock.advance(timedelta(minutes=1))
        for email in people:
            special_rows(api, email)
            bulk(rt, admin_token, email, per_member // rounds)
    return people


# --- the whole flow ----------------------------------------------------------------------------------------------


def test_export_of_a_large_history_matches_the_store_row_by_row(api, rt, clock, admin_token, store_url,
                                                                  export_dir):
    people = population(api, rt, clock, admin_token, members=4, per_member=45)
    imported_history(rt, people, per_member=600)

    task_id = start(api)
    queued = status(api, task_id)
    assert queued == {"task_id": task_id, "status": "queued", "rows": 0, "error": None, "download_url": None}
    # no file yet: the download answers 404
    resp = api.client.get(f"/api/v1.1/loyalty/transactions_export/download/{task_id}",
                          headers={"Authorization": f"Bearer {api.token}"})
    assert resp.status_code == 404 and resp.json()["error_code"] == "task_not_found"

    assert exports.process_queue(rt, OWNER) == 1
    assert exports.process_queue(rt, OWNER) == 0  # nothing left
    view = status(api, task_id)
    expected = expected_rows(api, people)
    assert len(expected) > 2000
    assert view["status"] == "done" and view["error"] is None
    assert int(view["rows"]) == len(expected)
    assert view["download_url"].endswith(f"/api/v1.1/loyalty/transactions_export/download/{task_id}")

    by_header = download(api, view["download_url"], "header")
    by_query = download(api, view["download_url"], "query")
    assert by_header == by_query
    assert by_header[0] == COLUMNS
    assert_rows_match(by_header[1:], expected)
    assert {r[COLUMNS.index("points_currency_eid")] for r in by_header[1:]} == {"stars"}
    assert {r[COLUMNS.index("profile_id")] for r in by_header[1:]} == set(people.values())
    types = {r[COLUMNS.index("transaction_type")] for r in by_header[1:]}
    assert types == {"initial", "accrual", "redemption", "order_accrual", "order_redemption"}

    # the task row: done, by the owner that ran it, the lease released, the file in the export directory
    task = rt.store.read(lambda conn: jobs_repo.get_task(conn, task_id))
    assert task["status"] == "done" and task["lease_owner"] is None and task["lease_until"] is None
    assert int(task["rows"]) == len(expected)
    assert Path(task["file"]).parent == export_dir.resolve()
    assert not list(export_dir.glob("*.part"))


def test_period_bounds_are_inclusive_and_from_id_is_strictly_after(api, rt, clock, admin_token):
    people = population(api, rt, clock, admin_token, members=2, per_member=30, rounds=3)
    # rounds were written at START+1min, +2min, +3min; the backdated accruals at 2025-01-10T00:00:00Z
    t1, t2 = "2025-01-15T12:01:00Z", "2025-01-15T12:02:00Z"
    got = run_export(api, rt, date_from=t1, date_to=t2)
    expected = expected_rows(api, people, date_from=t1, date_to=t2)
    assert_rows_match(got, expected)
    created = {r[COLUMNS.index("created_at")] for r in got}
    assert created == {t1, t2}  # both bounds included, nothing else
    # the backdated rows, and only them, at their own instant
    got = run_export(api, rt, date_from="2025-01-10T00:00:00Z", date_to="2025-01-10T00:00:00Z")
    assert len(got) == 2 * 3 and {r[COLUMNS.index("amount")] for r in got} == {"7.00"}
    # offsets are honoured: 15:02+03:00 is 12:02Z
    got = run_export(api, rt, date_from="2025-01-15T15:02:00+03:00", date_to="2025-01-15T15:02:00+03:00")
    assert_rows_match(got, expected_rows(api, people, date_from=t2, date_to=t2))
    # from_id: ids strictly after the cursor
    everything = expected_rows(api, people)
    cursor = everything[len(everything) // 2]["transaction_id"]
    got = run_export(api, rt, from_id=cursor)
    want = expected_rows(api, people, from_id=cursor)
    assert 0 < len(want) < len(everything)
    assert cursor not in {r[0] for r in got}
    assert_rows_match(got, want)


def test_other_currency_rows_are_excluded(api, rt, clock, admin_token):
    people = population(api, rt, clock, admin_token, members=2, per_member=12, rounds=1)
    got = run_export(api, rt, points_currency_iid=None, points_currency_eid="status_points")
    assert_rows_match(got, expected_rows(api, people, eid="status_points"))
    assert len(got) == 2 and {r[COLUMNS.index("points_currency_eid")] for r in got} == {"status_points"}
    assert {r[COLUMNS.index("amount")] for r in got} == {"300"}  # precision 0
    stars = run_export(api, rt)
    assert {r[COLUMNS.index("points_currency_eid")] for r in stars} == {"stars"}
    assert not {r[0] for r in got} & {r[0] for r in stars}


def test_xml_requests_and_several_tasks_in_one_queue_run(api, rt, clock, admin_token):
    api.member("x@example.com")
    r = ok(api.call("loyalty/transactions_export", fmt="xml", loyalty_program_id=123, points_currency_eid="stars",
                    **WIDE))
    first = r.data["task_id"]
    second = start(api)
    empty = start(api, date_from="2030-01-01T00:00:00Z", date_to="2030-01-02T00:00:00Z")
    assert status(api, first, fmt="xml")["status"] == "queued"
    assert exports.process_queue(rt, OWNER) == 3
    for task_id, rows in ((first, 1), (second, 1), (empty, 0)):
        view = status(api, task_id, fmt="xml")
        assert view["status"] == "done" and int(view["rows"]) == rows, view
        data = download(api, view["download_url"])
        assert data[0] == COLUMNS and len(data) == rows + 1


# --- errors ------------------------------------------------------------------------------------------------------


def test_parameter_errors(api):
    base = {"loyalty_program_id": 123, "points_currency_iid": 1}
    fail(api.call("loyalty/transactions_export", **base, date_from="2025-02-01T00:00:00Z",
                  date_to="2025-01-31T23:59:59Z"), 400, "invalid_parameter")
    fail(api.call("loyalty/transactions_export", loyalty_program_id=123, **WIDE), 400, "missing_parameter")
    fail(api.call("loyalty/transactions_export", **base, date_to=WIDE["date_to"]), 400, "missing_parameter")
    fail(api.call("loyalty/transactions_export", **base, date_from=WIDE["date_from"]), 400, "missing_parameter")
    fail(api.call("loyalty/transactions_export", **base, date_from="2025-01-01T00:00:00",
                  date_to=WIDE["date_to"]), 400, "invalid_parameter")
    fail(api.call("loyalty/transactions_export", loyalty_program_id=123, points_currency_iid=9, **WIDE),
         404, "currency_not_found")
    fail(api.call("loyalty/transactions_export", loyalty_program_id=999, points_currency_iid=1, **WIDE),
         404, "program_not_found")
    fail(api.call("loyalty/transactions_export/status", task_id=f"task_{uuid.uuid4()}"), 404, "task_not_found")
    fail(api.call("loyalty/transactions_export/status", task_id="nonsense"), 404, "task_not_found")
    fail(api.call("loyalty/transactions_export/status"), 400, "missing_parameter")
    resp = api.client.get(f"/api/v1.1/loyalty/transactions_export/download/task_{uuid.uuid4()}",
                          headers={"Authorization": f"Bearer {api.token}"})
    assert resp.status_code == 404 and resp.json()["error_code"] == "task_not_found"


def test_download_needs_a_valid_token_and_a_permitted_program(api, rt):
    api.member("y@example.com")
    url = status_after_run(api, rt)
    resp = api.client.get(url)
    assert resp.status_code == 401 and resp.json()["error_code"] == "token_missing"
    resp = api.client.get(url, params={"token": "not-a-token"})
    assert resp.status_code == 403 and resp.json()["error_code"] == "token_invalid"
    resp = api.client.get(url, headers={"Authorization": "Bearer not-a-token"})
    assert resp.status_code == 403
    spec, problems = validate_document({
        "databases": [{"id": 2, "name": "Shop"}],
        "programs": [{"id": 200, "name": "Coins", "database": 2,
                      "currencies": [{"iid": 1, "eid": "coins", "name": "Coins", "default": True}]}],
    })
    assert spec is not None, problems
    programfile.apply_spec(rt, spec)
    other, _ = tokens.create(rt, "other-program", ["admin"], programs=[200])
    resp = api.client.get(url, params={"token": other})
    assert resp.status_code == 403 and resp.json()["error_code"] == "forbidden"
    task_id = url.rsplit("/", 1)[1]
    fail(api.call("loyalty/transactions_export/status", token=other, task_id=task_id), 403, "forbidden")
    fail(api.call("loyalty/transactions_export", token=other, loyalty_program_id=123, points_currency_iid=1,
                  **WIDE), 403, "forbidden")
    assert download(api, url, "query")[0] == COLUMNS


def status_after_run(api: ApiClient, rt) -> str:
    task_id = start(api)
    assert exports.process_queue(rt, OWNER) == 1
    return status(api, task_id)["download_url"]


def test_cleanup_after_the_retention_removes_the_file(api, rt, clock, export_dir):
    api.member("z@example.com")
    url = status_after_run(api, rt)
    task_id = url.rsplit("/", 1)[1]
    task = rt.store.read(lambda conn: jobs_repo.get_task(conn, task_id))
    path = Path(task["file"])
    assert path.exists()
    clock.advance(timedelta(hours=rt.settings.export_retention_hours) - timedelta(minutes=1))
    assert exports.cleanup(rt) == 0
    assert path.exists() and download(api, url)[0] == COLUMNS
    clock.advance(timedelta(minutes=2))
    assert exports.cleanup(rt) == 1
    assert not path.exists()
    resp = api.client.get(url, headers={"Authorization": f"Bearer {api.token}"})
    assert resp.status_code == 404 and resp.json()["error_code"] == "task_not_found"
    view = status(api, task_id)
    assert view["download_url"] is None
    assert exports.cleanup(rt) == 0  # once


def test_a_failed_task_reports_its_error(api, rt, export_dir, monkeypatch):
    api.member("f@example.com")
    task_id = start(api)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(exports.ledger_repo, "export_rows", boom)
    assert exports.process_queue(rt, OWNER) == 0
    view = status(api, task_id)
    assert view["status"] == "failed" and "disk on fire" in view["error"] and view["download_url"] is None
    assert not list(export_dir.glob("*"))  # no partial file left behind
    monkeypatch.undo()
    assert exports.process_queue(rt, OWNER) == 0  # failed tasks are not retried silently


def test_a_worker_that_lost_its_lease_does_not_overwrite_the_new_owners_result(api, rt, clock):
    # run_task's docstring: "Raises if the lease was lost to another process." Worker A claims, stalls past its
    # lease; worker B takes the task over and finishes it; more transactions arrive; then A wakes up and
    # completes its (different) snapshot. A must not replace B's file nor count the task as its own.
    api.member("slow@example.com")
    task_id = start(api)
    lease = timedelta(seconds=rt.settings.job_lease_sec)
    task_a = rt.store.write(lambda conn: jobs_repo.claim_task(conn, "worker-a", clock.now(), lease))
    assert task_a["id"] == task_id
    clock.advance(lease + timedelta(seconds=1))
    task_b = rt.store.write(lambda conn: jobs_repo.claim_task(conn, "worker-b", clock.now(), lease))
    assert task_b is not None and task_b["id"] == task_id
    assert exports.run_task(rt, task_b, "worker-b") == 1
    view = status(api, task_id)
    assert view["rows"] == 1
    ok(api.call("loyalty/accrue_points", loyalty_program_id=123, matching="email", email="slow@example.com",
                amount="1.00"))

    raised = False
    try:
        exports.run_task(rt, task_a, "worker-a")
    except exports.LeaseLost:
        raised = True
    # what B reported is what the file holds
    view = status(api, task_id)
    assert (int(view["rows"]), len(download(api, view["download_url"])) - 1) == (1, 1)
    assert raised
