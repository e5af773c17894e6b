"""`loyalty apply FILE`: make the store match a program file, idempotently, and say what changed.

Everything is validated first (the whole file, then against the store) and applied in one store transaction, so
an invalid file changes nothing. Currencies, promotions and tiers that leave the file are archived or
deactivated, never deleted, because transactions may point at them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Connection

from loyalty.domain.points import parse_amount
from loyalty.services.programfile_schema import (
    CurrencySpec,
    ProgramFile,
    ProgramSpec,
    PromotionSpec,
    TierGroupSpec,
    validate_document,
)
from loyalty.services.runtime import Runtime
from loyalty.storage import catalog_repo
from loyalty.storage.tables import currencies, databases, db_fields, programs, promotions, tier_groups, tiers


class ProgramFileInvalid(Exception):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class _DryRun(Exception):
    def __init__(self, changes: list[str]):
        self.changes = changes


def load(path: Path) -> ProgramFile:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ProgramFileInvalid([f"not valid YAML: {exc}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProgramFileInvalid([f"cannot read: {exc}"]) from None
    spec, problems = validate_document(doc)
    if problems or spec is None:
        raise ProgramFileInvalid(problems)
    return spec


def apply_file(rt: Runtime, path: Path, dry_run: bool = False) -> list[str]:
    return apply_spec(rt, load(path), dry_run)


def apply_spec(rt: Runtime, spec: ProgramFile, dry_run: bool = False) -> list[str]:
    now = rt.clock.now()

    def work(conn: Connection) -> list[str]:
        changes: list[str] = []
        problems = _store_checks(conn, spec)
        if problems:
            raise ProgramFileInvalid(problems)
        for d in spec.databases:
            _apply_database(conn, d, changes, now)
        ids = _Ids(conn, spec)
        for p in spec.programs:
            _apply_program(conn, p, ids, changes, now)
        if dry_run:
            raise _DryRun(changes)  # roll the transaction back, keep the list
        if changes:
            catalog_repo.catalog_changed(conn)
        return changes

    try:
        return rt.store.write(work)
    except _DryRun as dry:
        return [f"(dry run) {c}" for c in dry.changes]


# Items the file gives without an id are found again by external_id, else by name, so applying is idempotent.

def _program_id(conn: Connection, p: ProgramSpec) -> int | None:
    """The stored program a spec describes; None when it is new."""
    if p.id is not None:
        return p.id
    stored = catalog_repo.list_programs(conn)
    if p.external_id:
        return next((q.id for q in stored if q.external_id == p.external_id), None)
    return next((q.id for q in stored if q.name == p.name and q.db_id == p.database), None)


def _group_id(conn: Connection, program_id: int | None, g: TierGroupSpec) -> int | None:
    if g.id is not None or program_id is None:
        return g.id
    if g.external_id:
        return catalog_repo.find_id(conn, tier_groups, program_id=program_id, external_id=g.external_id)
    return catalog_repo.find_id(conn, tier_groups, program_id=program_id, name=g.name, external_id=None)


def _promotion_id(conn: Connection, program_id: int, pr: PromotionSpec) -> int | None:
    if pr.id is not None:
        return pr.id
    if pr.external_id:
        return catalog_repo.find_id(conn, promotions, program_id=program_id, external_id=pr.external_id)
    return catalog_repo.find_id(conn, promotions, program_id=program_id, name=pr.name, external_id=None)


def _store_checks(conn: Connection, spec: ProgramFile) -> list[str]:
    problems = []
    file_dbs = {d.id for d in spec.databases}
    archived_here = {pid for pid in (_program_id(conn, q) for q in spec.programs if q.status == "archived") if pid}
    for i, p in enumerate(spec.programs):
        at = f"programs[{i}]"
        program_id = _program_id(conn, p)
        if p.database not in file_dbs and catalog_repo.get_database(conn, p.database) is None:
            problems.append(f"{at}.database: database {p.database} is neither in the file nor in the store")
        existing = catalog_repo.get_program(conn, program_id) if program_id is not None else None
        if existing is not None:
            if existing.db_id != p.database:
                problems.append(f"{at}.database: program {program_id} is bound to database {existing.db_id} for life")
            stored = {c.iid: c for c in catalog_repo.program_currencies(conn, existing.id)}
            for j, c in enumerate(p.currencies):
                if c.iid in stored and stored[c.iid].precision != c.precision:
                    problems.append(f"{at}.currencies[{j}].precision: cannot change the precision of an existing "
                                    "currency (stored amounts are scaled by it)")
        if p.external_id:
            owner = next((q.id for q in catalog_repo.list_programs(conn) if q.external_id == p.external_id), None)
            if owner is not None and owner != program_id:
                problems.append(f"{at}.external_id: {p.external_id!r} is already used by program {owner}")
        if p.status == "active":
            other = catalog_repo.other_active_program(conn, p.database, program_id if program_id is not None else -1)
            if other is not None and other not in archived_here:
                problems.append(f"{at}: database {p.database} already has active program {other}")
        for j, pr in enumerate(p.promotions):
            owner = catalog_repo.promotion_owner(conn, pr.id) if pr.id is not None else None
            if owner is not None and owner != program_id:
                problems.append(f"{at}.promotions[{j}].id: promotion {pr.id} belongs to program {owner}")
        for j, g in enumerate(p.tier_groups):
            group_id = _group_id(conn, program_id, g)
            owner = catalog_repo.tier_group_owner(conn, group_id) if group_id is not None else None
            if owner is not None and owner != program_id:
                problems.append(f"{at}.tier_groups[{j}].id: tier group {group_id} belongs to program {owner}")
            for k, t in enumerate(g.tiers):
                group = catalog_repo.tier_owner(conn, t.id) if t.id is not None else None
                if group is not None and group != group_id:
                    problems.append(f"{at}.tier_groups[{j}].tiers[{k}].id: tier {t.id} belongs to tier group {group}")
    return problems


class _Ids:
    """Assigns ids to items the file leaves without one: above every stored id and every id the file gives."""

    def __init__(self, conn: Connection, spec: ProgramFile):
        self.next = {
            "program": max([catalog_repo.max_id(conn, programs)] + [p.id or 0 for p in spec.programs]) + 1,
            "promotion": max([catalog_repo.max_id(conn, promotions)]
                             + [pr.id or 0 for p in spec.programs for pr in p.promotions]) + 1,
            "group": max([catalog_repo.max_id(conn, tier_groups)]
                         + [g.id or 0 for p in spec.programs for g in p.tier_groups]) + 1,
            "tier": max([catalog_repo.max_id(conn, tiers)]
                        + [t.id or 0 for p in spec.programs for g in p.tier_groups for t in g.tiers]) + 1,
        }

    def take(self, kind: str) -> int:
        value = self.next[kind]
        self.next[kind] += 1
        return value


def _note(changes: list[str], outcome: str, what: str) -> None:
    if outcome != "unchanged":
        changes.append(f"{outcome} {what}")


def _apply_database(conn: Connection, d: Any, changes: list[str], now: Any) -> None:
    exists = catalog_repo.get_database(conn, d.id) is not None
    values = {"name": d.name} if exists else {"name": d.name, "created_at": now}
    outcome = catalog_repo.upsert_row(conn, databases, {"id": d.id}, values)
    _note(changes, outcome, f"database {d.id} ({d.name})")
    for f in d.fields:
        outcome = catalog_repo.upsert_row(conn, db_fields, {"db_id": d.id, "name": f.name},
                                          {"type": f.type, "is_unique": f.unique})
        _note(changes, outcome, f"field {f.name} of database {d.id}")


def _apply_program(conn: Connection, p: ProgramSpec, ids: _Ids, changes: list[str], now: Any) -> None:
    program_id = _program_id(conn, p)
    if program_id is None:
        program_id = ids.take("program")
    values = {
        "external_id": p.external_id, "name": p.name, "description": p.description, "db_id": p.database,
        "status": p.status, "earn_rate": p.orders.earn_rate, "point_value": p.orders.point_value,
        "max_redeem_share": p.orders.max_redeem_share, "return_window_days": p.orders.return_window_days,
    }
    exists = catalog_repo.get_program(conn, program_id) is not None
    outcome = catalog_repo.upsert_row(conn, programs, {"id": program_id},
                                      values if exists else {**values, "created_at": now, "updated_at": now})
    if outcome == "updated":
        catalog_repo.set_status(conn, programs, {"id": program_id}, updated_at=now)
    _note(changes, outcome, f"program {program_id} ({p.name})")
    _apply_currencies(conn, program_id, p.currencies, changes)
    by_ref = {c.eid: c for c in p.currencies} | {str(c.iid): c for c in p.currencies}
    _apply_promotions(conn, program_id, p.promotions, by_ref, ids, changes)
    _apply_tier_groups(conn, program_id, p.tier_groups, by_ref, ids, changes)


def _apply_currencies(conn: Connection, program_id: int, specs: list[CurrencySpec], changes: list[str]) -> None:
    has_default = any(c.default for c in specs)
    for i, c in enumerate(specs):
        kind, n = c.lifetime_parts()
        values = {
            "eid": c.eid, "name": c.name, "kind": c.kind, "precision": c.precision,
            "initial_balance": parse_amount(c.initial_balance, c.precision, "initial_balance", allow_zero=True),
            "lifetime_kind": kind, "lifetime_n": n, "is_default": c.default or (not has_default and i == 0),
            "status": "active",
        }
        outcome = catalog_repo.upsert_row(conn, currencies, {"program_id": program_id, "iid": c.iid}, values)
        _note(changes, outcome, f"currency {c.eid} (iid {c.iid}) of program {program_id}")
    wanted = {c.iid for c in specs}
    for iid, status in catalog_repo.currency_keys(conn, program_id).items():
        if iid not in wanted and status == "active":
            catalog_repo.set_status(conn, currencies, {"program_id": program_id, "iid": iid}, status="archived",
                                    is_default=False)
            changes.append(f"archived currency iid {iid} of program {program_id} (not in the file; kept for history)")


def _rule_rows(spec: PromotionSpec, by_ref: dict[str, CurrencySpec]) -> list[dict[str, Any]]:
    rows = []
    for side, rules in (("accrual", spec.accrual_rules), ("redeem", spec.redeem_rules)):
        for r in rules:
            cur = by_ref[r.currency]

            def units(v: str | None) -> int | None:
                return None if v is None else parse_amount(v, cur.precision)  # noqa: B023

            rows.append({"side": side, "currency_iid": cur.iid, "static_amount": units(r.static_amount),
                         "min_amount": units(r.min_amount), "max_amount": units(r.max_amount)})
    return rows


def _apply_promotions(conn: Connection, program_id: int, specs: list[PromotionSpec],
                      by_ref: dict[str, CurrencySpec], ids: _Ids, changes: list[str]) -> None:
    existing = catalog_repo.promotion_ids(conn, program_id)
    kept = set()
    for pr in specs:
        promo_id = _promotion_id(conn, program_id, pr)
        if promo_id is None:
            promo_id = ids.take("promotion")
        kept.add(promo_id)
        values = {
            "program_id": program_id, "external_id": pr.external_id, "name": pr.name,
            "description": pr.description, "start_date": pr.start_date, "end_date": pr.end_date,
            "is_active": pr.is_active, "per_member": pr.limits.per_member, "per_day": pr.limits.per_day,
        }
        outcome = catalog_repo.upsert_row(conn, promotions, {"id": promo_id}, values)
        rules_changed = catalog_repo.replace_promotion_rules(conn, promo_id, _rule_rows(pr, by_ref))
        if outcome == "unchanged" and rules_changed:
            outcome = "updated"
        _note(changes, outcome, f"promotion {promo_id} ({pr.name})")
    for promo_id, active in existing.items():
        if promo_id not in kept and active:
            catalog_repo.set_status(conn, promotions, {"id": promo_id}, is_active=False)
            changes.append(f"deactivated promotion {promo_id} (not in the file; kept for history)")


def _apply_tier_groups(conn: Connection, program_id: int, specs: list[TierGroupSpec],
                       by_ref: dict[str, CurrencySpec], ids: _Ids, changes: list[str]) -> None:
    existing = catalog_repo.tier_group_ids(conn, program_id)
    kept = set()
    for g in specs:
        group_id = _group_id(conn, program_id, g)
        if group_id is None:
            group_id = ids.take("group")
        kept.add(group_id)
        cur = by_ref[g.currency]
        values = {"program_id": program_id, "external_id": g.external_id, "name": g.name, "type": g.type,
                  "window_days": g.window_days, "currency_iid": cur.iid, "status": "active"}
        _note(changes, catalog_repo.upsert_row(conn, tier_groups, {"id": group_id}, values),
              f"tier group {group_id} ({g.name})")
        stored_tiers = catalog_repo.tier_ids(conn, group_id)
        kept_tiers = set()
        for order, t in enumerate(g.tiers):
            tier_id = t.id
            if tier_id is None:
                tier_id = catalog_repo.find_id(conn, tiers, group_id=group_id, eid=t.eid)
            if tier_id is None:
                tier_id = ids.take("tier")
            kept_tiers.add(tier_id)
            tv = {"group_id": group_id, "eid": t.eid, "name": t.name, "tier_order": order, "status": "active",
                  "threshold": parse_amount(t.threshold, cur.precision, "threshold", allow_zero=True)}
            _note(changes, catalog_repo.upsert_row(conn, tiers, {"id": tier_id}, tv), f"tier {tier_id} ({t.name})")
        for tier_id, status in stored_tiers.items():
            if tier_id not in kept_tiers and status == "active":
                catalog_repo.set_status(conn, tiers, {"id": tier_id}, status="archived")
                changes.append(f"archived tier {tier_id} (not in the file; kept for history)")
    for group_id, status in existing.items():
        if group_id not in kept and status == "active":
            catalog_repo.set_status(conn, tier_groups, {"id": group_id}, status="archived")
            changes.append(f"archived tier group {group_id} (not in the file; kept for history)")
