"""Recompute accounts from their lots, open holds and journal, and report every disagreement.

These are the invariants of engine.md §3 that can be read off the store; the test suite runs them after every
step of its randomized runs, and `loyalty verify` runs them on a live store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection

from loyalty.domain.model import Account
from loyalty.services.runtime import Runtime
from loyalty.storage import ledger_repo


@dataclass
class Report:
    accounts: int = 0
    problems: list[str] = field(default_factory=list)


def check_account(conn: Connection, a: Account) -> list[str]:
    where = f"account {a.program_id}/{a.profile_id}/{a.currency_iid}"
    problems = []
    sums = ledger_repo.lot_sums(conn, a)
    if sums["active"] - a.debt != a.active:
        problems.append(f"{where}: active {a.active} != active lots {sums['active']} - debt {a.debt}")
    if sums["pending"] != a.pending:
        problems.append(f"{where}: pending {a.pending} != pending lots {sums['pending']}")
    if sums["held"] != a.held:
        problems.append(f"{where}: held {a.held} != held in lots {sums['held']}")
    open_holds = ledger_repo.held_by_open_holds(conn, a)
    if open_holds != a.held:
        problems.append(f"{where}: held {a.held} != open holds {open_holds}")
    temp = ledger_repo.temp_accrued_open(conn, a)
    if temp != a.temp_accrued:
        problems.append(f"{where}: temp_accrued {a.temp_accrued} != open temp accruals {temp}")
    if sums["bad_lots"]:
        problems.append(f"{where}: {sums['bad_lots']} lots with remaining outside 0..original")
    if a.active < 0 and a.debt == 0:
        problems.append(f"{where}: negative active balance {a.active} without debt")
    if a.debt > 0 and sums["active"] > 0:
        problems.append(f"{where}: debt {a.debt} left unpaid beside {sums['active']} active points")
    journal = ledger_repo.journal_sums(conn, a)
    cached = {"active": a.active, "pending": a.pending, "held": a.held, "temp_accrued": a.temp_accrued,
              "debt": a.debt}
    for key, value in cached.items():
        if journal[key] != value:
            problems.append(f"{where}: cached {key} {value} != journal replay {journal[key]}")
    return problems


def verify_all(rt: Runtime, program_id: int | None = None) -> Report:
    def work(conn: Connection) -> Report:
        report = Report()
        for account in ledger_repo.all_accounts(conn, program_id):
            report.accounts += 1
            report.problems.extend(check_account(conn, account))
        return report

    return rt.store.read(work)
