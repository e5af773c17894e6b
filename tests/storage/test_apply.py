"""`loyalty apply`'s engine (services/programfile.py) on both stores: it creates what is missing, updates what
changed, says what it did, archives instead of deleting, keeps given ids, and an invalid file changes nothing."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from loyalty.services import programfile
from loyalty.services.demo import example_path
from loyalty.services.programfile_schema import validate_document
from loyalty.services.runtime import Runtime
from loyalty.storage import catalog_repo
from loyalty.storage.tables import (
    currencies,
    databases,
    db_fields,
    programs,
    promotion_rules,
    promotions,
    tier_groups,
    tiers,
    transactions,
)

CATALOGUE = [databases, db_fields, programs, currencies, promotions, promotion_rules, tier_groups, tiers]


def example() -> dict[str, Any]:
    return yaml.safe_load(example_path().read_text(encoding="utf-8"))


def apply_doc(rt: Runtime, doc: dict[str, Any], dry_run: bool = False) -> list[str]:
    spec, problems = validate_document(doc)
    assert problems == [], problems
    assert spec is not None
    return programfile.apply_spec(rt, spec, dry_run=dry_run)


def write(tmp_path: Path, doc: Any, name: str = "program.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False) if not isinstance(doc, str) else doc, encoding="utf-8")
    return path


def snapshot(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    def read(conn):  # type: ignore[no-untyped-def]
        return {t.name: sorted((tuple(r) for r in conn.execute(select(t))), key=repr) for t in CATALOGUE}

    return rt.store.read(read)


def rows(rt: Runtime, table: Any, **where: Any) -> list[dict[str, Any]]:
    def read(conn):  # type: ignore[no-untyped-def]
        q = select(table).where(*[table.c[k] == v for k, v in where.items()])
        return [dict(r) for r in conn.execute(q).mappings()]

    return rt.store.read(read)


def has_change(changes: list[str], *words: str) -> bool:
    return any(all(w in c for w in words) for c in changes)


# --- creating ------------------------------------------------------------------------------------------------

def test_applying_the_example_creates_everything_and_says_so(rt):
    changes = programfile.apply_file(rt, example_path())

    db = rt.store.read(lambda c: catalog_repo.get_database(c, 1))
    assert db is not None and db.name == "Customers"
    assert {n: (f.type, f.unique) for n, f in db.fields.items()} == {
        "user_id": ("string", True), "card_no": ("int", False), "city": ("string", False)}

    prog = rt.store.read(lambda c: catalog_repo.get_program(c, 123))
    assert prog is not None
    assert (prog.name, prog.external_id, prog.db_id, prog.status, prog.description) == (
        "Stars", "stars_program", 1, "active", "Points for purchases and reviews")
    assert prog.earn_rate == Decimal("0.05")
    assert (str(prog.point_value), str(prog.max_redeem_share), prog.return_window_days) == ("1.00", "0.50", 14)

    curs = rt.store.read(lambda c: catalog_repo.program_currencies(c, 123))
    assert [(c.iid, c.eid, c.name, c.kind, c.precision, c.initial_balance, c.lifetime_kind, c.lifetime_n,
             c.is_default) for c in curs] == [
        (1, "stars", "Stars", "standard", 2, 5000, "days", 365, True),
        (2, "status_points", "Status points", "qualification", 0, 0, "never", None, False)]

    assert rt.store.read(lambda c: catalog_repo.promotion_ids(c, 123)) == {5: True, 6: True}
    [welcome] = rows(rt, promotions, id=5)
    assert (welcome["external_id"], welcome["name"], welcome["description"], welcome["per_member"],
            welcome["per_day"], welcome["end_date"]) == ("welcome_bonus", "Welcome bonus", "A one-time gift", 1,
                                                          None, None)
    assert welcome["start_date"] == datetime(2024, 1, 1, tzinfo=UTC)
    rules = sorted((r["promotion_id"], r["side"], r["currency_iid"], r["static_amount"], r["min_amount"],
                    r["max_amount"]) for r in rows(rt, promotion_rules))
    assert rules == [(5, "accrual", 1, 10000, None, None), (6, "accrual", 1, None, 1000, 5000),
                     (6, "redeem", 1, None, 100, 100000)]

    assert rt.store.read(lambda c: catalog_repo.tier_group_ids(c, 123)) == {10: "active"}
    [group] = rows(rt, tier_groups, id=10)
    assert (group["external_id"], group["type"], group["currency_iid"], group["window_days"]) == (
        "status", "cumulative", 2, None)
    assert rt.store.read(lambda c: catalog_repo.tier_ids(c, 10)) == {12: "active", 13: "active", 14: "active"}
    assert sorted((t["id"], t["eid"], t["threshold"], t["tier_order"]) for t in rows(rt, tiers)) == [
        (12, "bronze", 0, 0), (13, "silver", 1000, 1), (14, "gold", 5000, 2)]

    for words in [("created", "database 1"), ("created", "program 123"), ("created", "currency stars"),
                  ("created", "currency status_points"), ("created", "promotion 5"), ("created", "promotion 6"),
                  ("created", "tier group 10"), ("created", "tier 12"), ("created", "tier 13"),
                  ("created", "tier 14"), ("created", "user_id")]:
        assert has_change(changes, *words), (words, changes)


def test_applying_twice_changes_nothing(rt):
    programfile.apply_file(rt, example_path())
    before = snapshot(rt)
    assert programfile.apply_file(rt, example_path()) == []
    assert snapshot(rt) == before


# --- updating --------------------------------------------------------------------------------------------------

def test_changing_a_name_and_a_lifetime_updates_and_reports(rt):
    apply_doc(rt, example())
    doc = example()
    doc["programs"][0]["name"] = "Super Stars"
    doc["programs"][0]["currencies"][0]["lifetime"] = {"end_of_month": 3}
    doc["programs"][0]["promotions"][1]["name"] = "Review reward 2"
    doc["programs"][0]["promotions"][1]["accrual_rules"][0]["max_amount"] = "60"
    doc["programs"][0]["tier_groups"][0]["tiers"][2]["threshold"] = "6000"
    changes = apply_doc(rt, doc)

    assert has_change(changes, "updated", "program 123", "Super Stars")
    assert has_change(changes, "updated", "currency stars")
    assert has_change(changes, "updated", "promotion 6")
    assert has_change(changes, "updated", "tier 14")
    assert not has_change(changes, "currency status_points")
    assert not has_change(changes, "promotion 5")
    assert not has_change(changes, "tier 12")
    assert not has_change(changes, "database 1")
    assert len(changes) == 4, changes

    assert rt.store.read(lambda c: catalog_repo.get_program(c, 123)).name == "Super Stars"
    stars = rt.store.read(lambda c: catalog_repo.program_currencies(c, 123))[0]
    assert (stars.lifetime_kind, stars.lifetime_n) == ("end_of_month", 3)
    assert rows(rt, promotions, id=6)[0]["name"] == "Review reward 2"
    assert rows(rt, promotion_rules, promotion_id=6, side="accrual")[0]["max_amount"] == 6000
    assert rows(rt, tiers, id=14)[0]["threshold"] == 6000
    assert apply_doc(rt, doc) == []  # and it is idempotent again


def test_lifetime_back_to_never(rt):
    apply_doc(rt, example())
    doc = example()
    doc["programs"][0]["currencies"][0]["lifetime"] = "never"
    assert has_change(apply_doc(rt, doc), "updated", "currency stars")
    stars = rt.store.read(lambda c: catalog_repo.program_currencies(c, 123))[0]
    assert (stars.lifetime_kind, stars.lifetime_n) == ("never", None)


# --- removing ----------------------------------------------------------------------------------------------------

def test_removing_currency_promotion_tier_archives_them_and_never_deletes(rt):
    doc = example()
    doc["programs"][0]["currencies"].append({"iid": 3, "eid": "gems", "name": "Gems"})
    apply_doc(rt, doc)
    counts = {t.name: len(v) for t, v in zip(CATALOGUE, snapshot(rt).values(), strict=True)}

    smaller = example()
    smaller["programs"][0]["promotions"] = smaller["programs"][0]["promotions"][:1]   # promotion 6 leaves
    smaller["programs"][0]["tier_groups"][0]["tiers"].pop()                           # tier 14 leaves
    changes = apply_doc(rt, smaller)                                                   # currency 3 leaves

    assert has_change(changes, "archived", "currency", "3")
    assert has_change(changes, "deactivated", "promotion 6")
    assert has_change(changes, "archived", "tier 14")
    assert len(changes) == 3, changes

    # still there, only archived or deactivated
    assert {t.name: len(v) for t, v in zip(CATALOGUE, snapshot(rt).values(), strict=True)} == counts
    assert rt.store.read(lambda c: catalog_repo.currency_keys(c, 123)) == {1: "active", 2: "active", 3: "archived"}
    assert [c.iid for c in rt.store.read(lambda c: catalog_repo.program_currencies(c, 123))] == [1, 2]
    assert rt.store.read(lambda c: catalog_repo.promotion_ids(c, 123)) == {5: True, 6: False}
    assert rows(rt, promotion_rules, promotion_id=6)  # rules kept with the promotion
    assert rt.store.read(lambda c: catalog_repo.tier_ids(c, 10)) == {12: "active", 13: "active", 14: "archived"}

    assert apply_doc(rt, smaller) == []  # archiving is done once

    # putting them back in the file brings them back under their ids
    changes = apply_doc(rt, doc)
    assert rt.store.read(lambda c: catalog_repo.currency_keys(c, 123)) == {1: "active", 2: "active", 3: "active"}
    assert rt.store.read(lambda c: catalog_repo.promotion_ids(c, 123)) == {5: True, 6: True}
    assert rt.store.read(lambda c: catalog_repo.tier_ids(c, 10)) == {12: "active", 13: "active", 14: "active"}
    assert len(changes) == 3, changes


def test_removing_a_tier_group_archives_it(rt):
    apply_doc(rt, example())
    doc = example()
    doc["programs"][0]["tier_groups"] = []
    changes = apply_doc(rt, doc)
    assert has_change(changes, "archived", "tier group 10")
    assert rt.store.read(lambda c: catalog_repo.tier_group_ids(c, 123)) == {10: "archived"}
    assert len(rows(rt, tiers, group_id=10)) == 3


def test_a_currency_with_transactions_is_archived_and_its_history_kept(api, rt):
    """The `api` fixture has applied the example; a member earns status points, then the currency leaves."""
    api.member("ann@example.com")
    r = api.call("loyalty/accrue_points", loyalty_program_id=123, matching="email", email="ann@example.com",
                 amount="700", points_currency_eid="status_points")
    assert r.status == 200 and r.error == 0, r.body
    txns = rows(rt, transactions, program_id=123, currency_iid=2)
    assert txns

    doc = example()
    doc["programs"][0]["currencies"].pop()  # status_points
    doc["programs"][0]["tier_groups"] = []  # which read it
    changes = apply_doc(rt, doc)
    assert has_change(changes, "archived", "currency", "2")
    assert has_change(changes, "archived", "tier group 10")
    assert rt.store.read(lambda c: catalog_repo.currency_keys(c, 123))[2] == "archived"
    assert rows(rt, transactions, program_id=123, currency_iid=2) == txns
    assert api.balance("ann@example.com")["active_balance"] == "50.00"  # the default currency still works


# --- ids ---------------------------------------------------------------------------------------------------------

def test_ids_given_are_kept_and_ids_left_out_are_assigned(rt):
    doc = example()
    p = doc["programs"][0]
    p["promotions"].append({"external_id": "birthday", "name": "Birthday",
                            "accrual_rules": [{"currency": "stars", "static_amount": "20"}]})
    p["tier_groups"].append({"external_id": "yearly", "name": "Yearly", "type": "period", "window_days": 365,
                             "currency": "status_points",
                             "tiers": [{"eid": "y0", "name": "Y0", "threshold": "0"},
                                       {"eid": "y1", "name": "Y1", "threshold": "10"},
                                       {"eid": "y2", "name": "Y2", "threshold": "20"}]})
    p["tier_groups"][0]["tiers"].append({"id": 40, "eid": "platinum", "name": "Platinum", "threshold": "9000"})
    changes = apply_doc(rt, doc)

    promos = rt.store.read(lambda c: catalog_repo.promotion_ids(c, 123))
    assert {5, 6} <= set(promos) and len(promos) == 3
    [new_promo] = set(promos) - {5, 6}
    assert rows(rt, promotions, id=new_promo)[0]["external_id"] == "birthday"
    groups = rt.store.read(lambda c: catalog_repo.tier_group_ids(c, 123))
    [new_group] = set(groups) - {10}
    assert {t["eid"]: t["id"] for t in rows(rt, tiers, group_id=10)}["platinum"] == 40
    assigned = {t["id"] for t in rows(rt, tiers, group_id=new_group)}
    assert len(assigned) == 3 and not assigned & {12, 13, 14, 40}
    assert has_change(changes, "created", "tier 40")
    assert has_change(changes, "created", f"promotion {new_promo}")
    assert has_change(changes, "created", f"tier group {new_group}")

    # the assigned ids are found again: the file is still idempotent, and an update keeps them
    assert apply_doc(rt, doc) == []
    doc["programs"][0]["promotions"][2]["name"] = "Happy birthday"
    assert apply_doc(rt, doc) == [f"updated promotion {new_promo} (Happy birthday)"]
    assert rt.store.read(lambda c: catalog_repo.promotion_ids(c, 123)) == promos


def test_a_program_without_an_id_is_assigned_one(rt):
    doc = example()
    del doc["programs"][0]["id"]
    changes = apply_doc(rt, doc)
    [prog] = rt.store.read(catalog_repo.list_programs)
    assert prog.external_id == "stars_program"
    assert has_change(changes, "created", f"program {prog.id}")


def test_a_program_without_an_id_is_found_again_by_external_id(rt):
    doc = example()
    del doc["programs"][0]["id"]
    apply_doc(rt, doc)
    assert apply_doc(rt, doc) == []


def test_a_tier_id_in_a_group_found_by_external_id_can_be_applied_again(rt):
    doc = example()
    doc["programs"][0]["tier_groups"][0].pop("id")  # found again by external_id "status"
    apply_doc(rt, doc)
    assert apply_doc(rt, doc) == []


def test_assigned_ids_never_collide_with_ids_given_in_the_same_file(rt):
    doc = example()
    doc["programs"][0]["promotions"] = [
        {"external_id": "first", "name": "First"},          # assigned: max(stored)+1 = 1 on an empty store
        {"id": 1, "external_id": "second", "name": "Second"},
    ]
    apply_doc(rt, doc)
    stored = {r["external_id"]: r["id"] for r in rows(rt, promotions)}
    assert stored.keys() == {"first", "second"} and stored["second"] == 1


def test_promotions_and_groups_without_any_id_are_idempotent(rt):
    doc = example()
    doc["programs"][0]["promotions"].append({"name": "Anonymous"})
    doc["programs"][0]["tier_groups"].append({"name": "Anon", "type": "cumulative", "currency": "status_points",
                                              "tiers": [{"eid": "a0", "name": "A0", "threshold": "0"}]})
    apply_doc(rt, doc)
    assert apply_doc(rt, doc) == []


# --- refusing --------------------------------------------------------------------------------------------------

def test_an_invalid_file_changes_nothing_and_lists_every_problem(rt, tmp_path):
    apply_doc(rt, example())
    before = snapshot(rt)
    doc = example()
    doc["programs"][0]["name"] = "Renamed"                                            # a valid change...
    doc["programs"][0]["currencies"][0]["initial_balance"] = "1.234"                  # ...and three problems
    doc["programs"][0]["promotions"][0]["accrual_rules"][0]["currency"] = "moons"
    doc["programs"][0]["tier_groups"][0]["tiers"][1]["threshold"] = "0"
    with pytest.raises(programfile.ProgramFileInvalid) as info:
        programfile.apply_file(rt, write(tmp_path, doc))
    problems = info.value.problems
    assert any(p.startswith("programs[0].currencies[0].initial_balance:") for p in problems), problems
    assert any(p.startswith("programs[0].promotions[0].accrual_rules[0].currency:") for p in problems), problems
    assert any(p.startswith("programs[0].tier_groups[0].tiers[1].threshold:") for p in problems), problems
    assert len(problems) == 3, problems
    assert snapshot(rt) == before


def test_an_invalid_file_on_an_empty_store_creates_nothing(rt, tmp_path):
    before = snapshot(rt)
    doc = example()
    doc["programs"][0]["database"] = 2  # neither in the file nor in the store
    with pytest.raises(programfile.ProgramFileInvalid) as info:
        programfile.apply_file(rt, write(tmp_path, doc))
    assert [p for p in info.value.problems if p.startswith("programs[0].database:")], info.value.problems
    assert snapshot(rt) == before


def test_unreadable_files_are_refused(rt, tmp_path):
    before = snapshot(rt)
    for text in ["programs: [", "- just\n- a list\n", "", "programs: [{id: 1, name: \xff}]"]:
        with pytest.raises(programfile.ProgramFileInvalid) as info:
            programfile.apply_file(rt, write(tmp_path, text))
        assert info.value.problems, text
    (tmp_path / "latin1.yaml").write_bytes(b"databases: [{id: 1, name: Caf\xe9}]")
    with pytest.raises(programfile.ProgramFileInvalid):
        programfile.apply_file(rt, tmp_path / "latin1.yaml")
    assert snapshot(rt) == before


def test_a_program_may_not_move_to_another_database(rt):
    apply_doc(rt, example())
    before = snapshot(rt)
    doc = example()
    doc["databases"].append({"id": 2, "name": "Other customers"})
    doc["programs"][0]["database"] = 2
    spec, problems = validate_document(doc)
    assert problems == [] and spec is not None
    with pytest.raises(programfile.ProgramFileInvalid) as info:
        programfile.apply_spec(rt, spec)
    assert any(p.startswith("programs[0].database:") and "123" in p for p in info.value.problems), \
        info.value.problems
    assert snapshot(rt) == before  # database 2 was not created either


def test_precision_of_an_existing_currency_cannot_change(rt):
    apply_doc(rt, example())
    before = snapshot(rt)
    doc = example()
    doc["programs"][0]["currencies"][0]["precision"] = 3
    doc["programs"][0]["currencies"][1]["precision"] = 1
    spec, problems = validate_document(doc)
    assert problems == [] and spec is not None
    with pytest.raises(programfile.ProgramFileInvalid) as info:
        programfile.apply_spec(rt, spec)
    problems = info.value.problems
    assert any(p.startswith("programs[0].currencies[0].precision:") for p in problems), problems
    assert any(p.startswith("programs[0].currencies[1].precision:") for p in problems), problems
    assert snapshot(rt) == before


def test_a_second_active_program_on_a_database_is_refused(rt):
    apply_doc(rt, example())
    before = snapshot(rt)
    doc = {"programs": [{"id": 200, "name": "Rival", "database": 1,
                         "currencies": [{"iid": 1, "eid": "coins", "name": "Coins"}]}]}
    spec, problems = validate_document(doc)
    assert problems == [] and spec is not None
    with pytest.raises(programfile.ProgramFileInvalid) as info:
        programfile.apply_spec(rt, spec)
    assert any(p.startswith("programs[0]") and "123" in p for p in info.value.problems), info.value.problems
    assert snapshot(rt) == before


def test_an_external_id_taken_by_another_program_is_a_listed_problem(rt):
    apply_doc(rt, example())
    before = snapshot(rt)
    doc = {"databases": [{"id": 2, "name": "Other"}],
           "programs": [{"id": 200, "name": "Copycat", "external_id": "stars_program", "database": 2,
                         "currencies": [{"iid": 1, "eid": "coins", "name": "Coins"}]}]}
    spec, problems = validate_document(doc)
    assert problems == [] and spec is not None
    try:
        with pytest.raises(programfile.ProgramFileInvalid) as info:
            programfile.apply_spec(rt, spec)
        assert any("external_id" in p for p in info.value.problems)
    finally:
        assert snapshot(rt) == before


# --- dry run -----------------------------------------------------------------------------------------------------

def test_dry_run_changes_nothing_but_lists_the_changes(rt):
    empty = snapshot(rt)
    dry = programfile.apply_file(rt, example_path(), dry_run=True)
    assert snapshot(rt) == empty
    real = programfile.apply_file(rt, example_path())
    assert dry == [f"(dry run) {c}" for c in real]

    applied = snapshot(rt)
    doc = example()
    doc["programs"][0]["name"] = "Renamed"
    doc["programs"][0]["promotions"].pop()
    dry = apply_doc(rt, doc, dry_run=True)
    assert has_change(dry, "(dry run)", "updated", "program 123")
    assert has_change(dry, "(dry run)", "deactivated", "promotion 6")
    assert snapshot(rt) == applied
    assert programfile.apply_file(rt, example_path(), dry_run=True) == []


def test_an_archived_program_frees_its_database(rt):
    apply_doc(rt, example())
    doc = example()
    old = doc["programs"][0]
    old["status"] = "archived"
    new = copy.deepcopy(old)
    new.update({"id": 124, "external_id": "stars_2025", "status": "active", "promotions": [], "tier_groups": []})
    doc["programs"].append(new)
    changes = apply_doc(rt, doc)
    assert has_change(changes, "updated", "program 123")
    assert has_change(changes, "created", "program 124")
    assert rt.store.read(lambda c: catalog_repo.get_program(c, 123)).status == "archived"
    assert rt.store.read(lambda c: catalog_repo.get_program(c, 124)).status == "active"
    assert rt.store.read(lambda c: c.execute(select(func.count()).select_from(programs)).scalar()) == 2
