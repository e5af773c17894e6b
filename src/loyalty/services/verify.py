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


def check_account(a: Account, lot_sums: tuple, journal: tuple, open_temps: tuple) -> list[str]:
    """Every invariant of one account, from its cached row and the sums of its lots, journal and open temps."""
    where = f"account {a.program_id}/{a.profile_id}/{a.currency_iid}"
    problems = []
    active_lots, pending_lots, held_lots, bad_lots = lot_sums
    open_holds, open_accruals = open_temps
    if active_lots - a.debt != a.active:
        problems.append(f"{where}: active {a.active} != active lots {active_lots} - debt {a.debt}")
    if pending_lots != a.pending:
        problems.append(f"{where}: pending {a.pending} != pending lots {pending_lots}")
    if held_lots != a.held:
        problems.append(f"{where}: held {a.held} != held in lots {held_lots}")
    if open_holds != a.held:
        problems.append(f"{where}: held {a.held} != open holds {open_holds}")
    if open_accruals != a.temp_accrued:
        problems.append(f"{where}: temp_accrued {a.temp_accrued} != open temp accruals {open_accruals}")
    if bad_lots:
        problems.append(f"{where}: {bad_lots} lots with remaining outside 0..original")
    if a.active < 0 and a.debt == 0:
        problems.append(f"{where}: negative active balance {a.active} without debt")
    if a.debt > 0 and active_lots > 0:
        problems.append(f"{where}: debt {a.debt} left unpaid beside {active_lots} active points")
    cached = (a.active, a.pending, a.held, a.temp_accrued, a.debt)
    for name, value, replayed in zip(("active", "pending", "held", "temp_accrued", "debt"), cached, journal,
                                     strict=True):
        if replayed != value:
            problems.append(f"{where}: cached {name} {value} != journal replay {replayed}")
    return problems


def verify_all(rt: Runtime, program_id: int | None = None) -> Report:
    """All accounts in one read snapshot, with four grouped queries whatever the number of accounts."""

    def work(conn: Connection) -> Report:
        lot_sums = ledger_repo.all_lot_sums(conn, program_id)
        journal = ledger_repo.all_journal_sums(conn, program_id)
        temps = ledger_repo.all_open_temp_sums(conn, program_id)
        report = Report()
        for account in ledger_repo.all_accounts(conn, program_id):
            key = (account.program_id, account.profile_id, account.currency_iid)
            report.accounts += 1
            report.problems.extend(check_account(account, lot_sums.get(key, (0, 0, 0, 0)),
                                                 journal.get(key, (0, 0, 0, 0, 0)), temps.get(key, (0, 0))))
        return report

    return rt.store.read(work, snapshot=True)
