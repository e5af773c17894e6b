"""The program file's validation (shared/spec/program-file.md): the reference example is accepted as written, and
a broken document is refused with every problem listed at once, each with its path in the document."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from loyalty.services.demo import example_path
from loyalty.services.programfile_schema import validate_document

# The reference example exactly as printed in shared/spec/program-file.md (not the packaged copy, which could drift).
SPEC_EXAMPLE = """
databases:
  - id: 1
    name: Customers
    fields:                       # custom profile fields, besides email, phones and the _system fields
      - {name: user_id, type: string, unique: true}
      - {name: card_no, type: int}
      - {name: city, type: string}

programs:
  - id: 123
    name: Stars
    external_id: stars_program
    description: Points for purchases and reviews
    database: 1
    orders:                       # used by market/orders/preorder and preorder_commit
      earn_rate: "0.05"           # points (default currency) per unit of money paid, after discounts
      point_value: "1.00"         # money per point when spending
      max_redeem_share: "0.50"    # at most this share of an order can be paid with points
      return_window_days: 14      # order accruals activate after this many days
    currencies:
      - {iid: 1, eid: stars, name: Stars, kind: standard, precision: 2,
         initial_balance: "50", lifetime: {days: 365}, default: true}
      - {iid: 2, eid: status_points, name: Status points, kind: qualification, precision: 0,
         lifetime: never}
    promotions:
      - id: 5
        external_id: welcome_bonus
        name: Welcome bonus
        description: A one-time gift
        start_date: "2024-01-01T00:00:00Z"
        end_date: null
        is_active: true
        limits: {per_member: 1}
        accrual_rules:
          - {currency: stars, static_amount: "100"}
      - id: 6
        external_id: review_reward
        name: Review reward
        start_date: "2024-01-01T00:00:00Z"
        end_date: "2030-12-31T23:59:59Z"
        is_active: true
        accrual_rules:
          - {currency: stars, min_amount: "10", max_amount: "50"}
        redeem_rules:
          - {currency: stars, min_amount: "1", max_amount: "1000"}
    tier_groups:
      - id: 10
        external_id: status
        name: Status
        type: cumulative          # or: period, with window_days: 365
        currency: status_points
        tiers:
          - {id: 12, eid: bronze, name: Bronze, threshold: "0"}
          - {id: 13, eid: silver, name: Silver, threshold: "1000"}
          - {id: 14, eid: gold, name: Gold, threshold: "5000"}
"""


def example() -> dict[str, Any]:
    return yaml.safe_load(SPEC_EXAMPLE)


def problems_of(doc: Any) -> list[str]:
    spec, problems = validate_document(doc)
    assert problems, "the document should have been refused"
    return problems


def has(problems: list[str], path: str, *words: str) -> bool:
    """A problem starts with this path (followed by ':') and mentions every word (case-insensitive)."""
    return any(p.startswith(path + ":") and all(w.lower() in p.lower() for w in words) for p in problems)


def assert_has(problems: list[str], path: str, *words: str) -> None:
    assert has(problems, path, *words), f"no problem at {path!r} mentioning {words}; got:\n" + "\n".join(problems)


# --- the reference example ------------------------------------------------------------------------------------

def test_reference_example_from_the_spec_is_accepted_as_written():
    spec, problems = validate_document(example())
    assert problems == []
    assert spec is not None
    [db] = spec.databases
    assert (db.id, db.name, [(f.name, f.type, f.unique) for f in db.fields]) == (
        1, "Customers", [("user_id", "string", True), ("card_no", "int", False), ("city", "string", False)])
    [p] = spec.programs
    assert (p.id, p.name, p.external_id, p.database) == (123, "Stars", "stars_program", 1)
    assert (p.orders.earn_rate, p.orders.return_window_days) == ("0.05", 14)
    stars, status = p.currencies
    assert (stars.iid, stars.eid, stars.kind, stars.precision, stars.default) == (1, "stars", "standard", 2, True)
    assert stars.lifetime_parts() == ("days", 365)
    assert (status.kind, status.precision, status.lifetime_parts()) == ("qualification", 0, ("never", None))
    welcome, review = p.promotions
    assert welcome.id == 5 and welcome.limits.per_member == 1 and welcome.end_date is None
    assert welcome.start_date == datetime(2024, 1, 1, tzinfo=UTC)
    assert review.end_date == datetime(2030, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert [r.currency for r in review.redeem_rules] == ["stars"]
    [group] = p.tier_groups
    assert (group.id, group.type, group.currency) == (10, "cumulative", "status_points")
    assert [(t.id, t.eid, t.threshold) for t in group.tiers] == [(12, "bronze", "0"), (13, "silver", "1000"),
                                                                 (14, "gold", "5000")]


def test_packaged_example_is_the_spec_example_and_is_accepted():
    packaged = yaml.safe_load(example_path().read_text(encoding="utf-8"))
    assert packaged == example()
    assert validate_document(packaged)[1] == []


def test_lifetime_forms_and_period_groups_are_accepted():
    doc = example()
    p = doc["programs"][0]
    p["currencies"][0]["lifetime"] = {"end_of_month": 3}
    p["currencies"].append({"iid": 3, "eid": "gems", "name": "Gems"})  # defaults: standard, precision 2, never
    p["tier_groups"].append({"name": "Yearly", "type": "period", "window_days": 365, "currency": "2",
                             "tiers": [{"eid": "y1", "name": "Y1", "threshold": 0}]})
    spec, problems = validate_document(doc)
    assert problems == []
    assert spec is not None
    assert spec.programs[0].currencies[0].lifetime_parts() == ("end_of_month", 3)
    assert spec.programs[0].currencies[2].lifetime_parts() == ("never", None)
    assert spec.programs[0].currencies[2].precision == 2


def test_only_databases_or_only_programs_is_fine():
    doc = example()
    assert validate_document({"databases": doc["databases"]})[1] == []
    assert validate_document({"programs": doc["programs"]})[1] == []  # the database may already be in the store


# --- the shape of the document ---------------------------------------------------------------------------------

@pytest.mark.parametrize("doc", [None, [], "programs", 42])
def test_a_document_that_is_not_a_mapping_is_refused(doc):
    spec, problems = validate_document(doc)
    assert spec is None and len(problems) == 1 and problems[0].startswith("(document)")


def test_bad_types_and_unknown_keys_are_all_listed_with_their_paths():
    doc = example()
    doc["colour"] = "red"                                             # unknown top-level key
    doc["databases"][0]["fields"][1]["type"] = "blob"                 # not a field type
    doc["databases"][0]["id"] = "one"                                 # not an int
    p = doc["programs"][0]
    p["currencies"][1]["precision"] = "two"                           # not an int
    p["currencies"][0]["colour"] = "gold"                             # unknown key
    p["currencies"][0]["kind"] = "premium"                            # not a kind
    p["orders"]["return_window_days"] = "soon"
    p["orders"]["max_redeem_share"] = "1.5"                           # a share is at most 1
    p["promotions"][1]["limits"] = {"per_member": 0}                  # at least 1
    p["tier_groups"][0]["type"] = "yearly"
    p["tier_groups"][0]["tiers"][2]["rank"] = 3                       # unknown key
    problems = problems_of(doc)
    assert_has(problems, "colour")
    assert_has(problems, "databases[0].fields[1].type")
    assert_has(problems, "databases[0].id")
    assert_has(problems, "programs[0].currencies[1].precision")
    assert_has(problems, "programs[0].currencies[0].colour")
    assert_has(problems, "programs[0].currencies[0].kind")
    assert_has(problems, "programs[0].orders.return_window_days")
    assert_has(problems, "programs[0].orders.max_redeem_share")
    assert_has(problems, "programs[0].promotions[1].limits.per_member")
    assert_has(problems, "programs[0].tier_groups[0].type")
    assert_has(problems, "programs[0].tier_groups[0].tiers[2].rank")
    assert len(problems) == 11, problems


def test_missing_required_keys_are_listed():
    doc = example()
    p = doc["programs"][0]
    del p["name"]
    del p["currencies"][0]["eid"]
    del p["tier_groups"][0]["tiers"][0]["threshold"]
    p["promotions"][0].pop("name")
    problems = problems_of(doc)
    assert_has(problems, "programs[0].name")
    assert_has(problems, "programs[0].currencies[0].eid")
    assert_has(problems, "programs[0].tier_groups[0].tiers[0].threshold")
    assert_has(problems, "programs[0].promotions[0].name")


def test_a_program_needs_a_currency_and_a_tier_group_a_tier():
    doc = example()
    doc["programs"][0]["currencies"] = []
    doc["programs"][0]["tier_groups"][0]["tiers"] = []
    problems = problems_of(doc)
    assert_has(problems, "programs[0].currencies")
    assert_has(problems, "programs[0].tier_groups[0].tiers")


@pytest.mark.parametrize("precision", [-1, 7])
def test_precision_is_between_0_and_6(precision):
    doc = example()
    doc["programs"][0]["currencies"][0]["precision"] = precision
    assert_has(problems_of(doc), "programs[0].currencies[0].precision")


@pytest.mark.parametrize("field", ["email", "phones", "_fname"])
def test_custom_fields_may_not_reuse_built_in_names(field):
    doc = example()
    doc["databases"][0]["fields"].append({"name": field, "type": "string"})
    problems = problems_of(doc)
    assert any(x.startswith("databases[0].fields") for x in problems), problems


# --- checks across the document --------------------------------------------------------------------------------

def test_cross_checks_are_all_listed_at_once_with_paths():
    doc = example()
    doc["databases"].append({"id": 1, "name": "Again"})                                   # duplicate database id
    doc["databases"][0]["fields"].append({"name": "city", "type": "string"})              # duplicate field
    p = doc["programs"][0]
    p["currencies"].append({"iid": 1, "eid": "stars", "name": "Copy", "default": True})   # dup iid, eid, defaults
    p["promotions"].append({"id": 5, "external_id": "welcome_bonus", "name": "Copy"})     # dup id, external_id
    p["promotions"][0]["accrual_rules"].append({"currency": "stars", "static_amount": "1"})  # two rules, one cur.
    p["promotions"][1]["accrual_rules"][0]["currency"] = "diamonds"                       # unknown currency
    p["promotions"][1]["redeem_rules"].append({"currency": "status_points", "min_amount": "1"})
    p["promotions"][1]["end_date"] = "2023-12-31T00:00:00Z"                               # before start_date
    group = p["tier_groups"][0]
    group["tiers"][2]["threshold"] = "1000"                                               # not increasing
    group["tiers"][1]["eid"] = "bronze"                                                   # duplicate tier eid
    p["tier_groups"].append({"id": 10, "name": "Window", "type": "period", "currency": "gems",
                             "tiers": [{"eid": "w", "name": "W", "threshold": "0"}]})
    problems = problems_of(doc)
    assert_has(problems, "databases", "id 1", "twice")
    assert_has(problems, "databases[0].fields", "city", "twice")
    assert_has(problems, "programs[0].currencies", "iid", "twice")
    assert_has(problems, "programs[0].currencies", "eid", "stars", "twice")
    assert_has(problems, "programs[0].currencies", "default")
    assert_has(problems, "programs[0].promotions", "id 5", "twice")
    assert_has(problems, "programs[0].promotions", "external_id", "welcome_bonus", "twice")
    assert_has(problems, "programs[0].promotions[0].accrual_rules", "stars", "two rules")
    assert_has(problems, "programs[0].promotions[1].accrual_rules[0].currency", "diamonds")
    assert_has(problems, "programs[0].promotions[1].redeem_rules[1].currency", "status_points", "qualification")
    assert_has(problems, "programs[0].promotions[1].end_date", "start_date")
    assert_has(problems, "programs[0].tier_groups[0].tiers[2].threshold", "increase")
    assert_has(problems, "programs[0].tier_groups[0].tiers", "eid", "bronze", "twice")
    assert_has(problems, "programs[0].tier_groups", "id 10", "twice")
    assert_has(problems, "programs[0].tier_groups[1].currency", "gems")
    assert_has(problems, "programs[0].tier_groups[1].window_days", "period")


def test_two_programs_checks():
    doc = example()
    second = copy.deepcopy(doc["programs"][0])
    doc["programs"].append(second)  # same id, same external_id, same database while both active
    problems = problems_of(doc)
    assert_has(problems, "programs", "id 123", "twice")
    assert_has(problems, "programs", "external_id", "stars_program", "twice")
    assert_has(problems, "programs", "database 1", "more than one active")
    second["id"], second["external_id"], second["status"] = 124, "old_stars", "archived"
    assert validate_document(doc)[1] == []  # an archived program may share the database


def test_static_amount_excludes_min_and_max():
    doc = example()
    rules = doc["programs"][0]["promotions"][0]["accrual_rules"]
    rules[0]["min_amount"] = "1"
    doc["programs"][0]["promotions"][1]["redeem_rules"][0]["static_amount"] = "5"
    problems = problems_of(doc)
    assert_has(problems, "programs[0].promotions[0].accrual_rules[0]", "static_amount")
    assert_has(problems, "programs[0].promotions[1].redeem_rules[0]", "static_amount")


def test_min_above_max_is_refused_but_equal_is_fine():
    doc = example()
    rule = doc["programs"][0]["promotions"][1]["accrual_rules"][0]
    rule["min_amount"], rule["max_amount"] = "50.01", "50"
    assert_has(problems_of(doc), "programs[0].promotions[1].accrual_rules[0]", "min_amount", "max_amount")
    rule["min_amount"] = "50.00"
    assert validate_document(doc)[1] == []


def test_redeem_rule_on_a_qualification_currency_is_refused_by_iid_too():
    doc = example()
    doc["programs"][0]["promotions"][1]["redeem_rules"] = [{"currency": 2, "max_amount": "5"}]
    assert_has(problems_of(doc), "programs[0].promotions[1].redeem_rules[0].currency", "qualification")


def test_accrual_rule_on_a_qualification_currency_is_fine():
    doc = example()
    doc["programs"][0]["promotions"][1]["accrual_rules"].append({"currency": "status_points",
                                                                 "static_amount": "10"})
    assert validate_document(doc)[1] == []


def test_thresholds_must_strictly_increase():
    doc = example()
    tiers = doc["programs"][0]["tier_groups"][0]["tiers"]
    tiers[1]["threshold"], tiers[2]["threshold"] = "6000", "5000"
    assert_has(problems_of(doc), "programs[0].tier_groups[0].tiers[2].threshold", "increase")


def test_period_group_needs_window_days():
    doc = example()
    doc["programs"][0]["tier_groups"][0]["type"] = "period"
    assert_has(problems_of(doc), "programs[0].tier_groups[0].window_days")
    doc["programs"][0]["tier_groups"][0]["window_days"] = 0
    assert_has(problems_of(doc), "programs[0].tier_groups[0].window_days")
    doc["programs"][0]["tier_groups"][0]["window_days"] = 365
    assert validate_document(doc)[1] == []


def test_tier_group_must_read_a_qualification_currency():
    doc = example()
    doc["programs"][0]["tier_groups"][0]["currency"] = "stars"
    assert_has(problems_of(doc), "programs[0].tier_groups[0].currency", "qualification")


def test_too_many_fraction_digits_for_the_currency_precision():
    doc = example()
    p = doc["programs"][0]
    p["currencies"][0]["initial_balance"] = "50.001"                                # stars: precision 2
    p["promotions"][0]["accrual_rules"][0]["static_amount"] = "0.125"
    p["promotions"][1]["accrual_rules"].append({"currency": "status_points", "static_amount": "1.5"})  # prec. 0
    p["tier_groups"][0]["tiers"][1]["threshold"] = "1000.5"                         # status_points: precision 0
    problems = problems_of(doc)
    assert_has(problems, "programs[0].currencies[0].initial_balance", "fractional digits")
    assert_has(problems, "programs[0].promotions[0].accrual_rules[0].static_amount", "fractional digits")
    assert_has(problems, "programs[0].promotions[1].accrual_rules[1].static_amount", "fractional digits")
    assert_has(problems, "programs[0].tier_groups[0].tiers[1].threshold", "fractional digits")
    # trailing zeros are not extra digits
    p["currencies"][0]["initial_balance"] = "50.000"
    p["promotions"][0]["accrual_rules"][0]["static_amount"] = "0.120"
    p["promotions"][1]["accrual_rules"][1]["static_amount"] = "1.0"
    p["tier_groups"][0]["tiers"][1]["threshold"] = "1000.00"
    assert validate_document(doc)[1] == []


@pytest.mark.parametrize("amount", ["abc", "-5", "0", "1e3", "NaN"])
def test_rule_amounts_must_be_positive_plain_decimals(amount):
    doc = example()
    doc["programs"][0]["promotions"][0]["accrual_rules"][0]["static_amount"] = amount
    assert_has(problems_of(doc), "programs[0].promotions[0].accrual_rules[0].static_amount")


@pytest.mark.parametrize("lifetime", [
    {"days": 0}, {"days": -3}, {"weeks": 3}, "forever", {"days": True}, {"days": "30"},
    {"days": 3, "end_of_month": 1}, {"end_of_month": 0}, 365, [],
])
def test_invalid_lifetime_is_refused(lifetime):
    doc = example()
    doc["programs"][0]["currencies"][1]["lifetime"] = lifetime
    assert_has(problems_of(doc), "programs[0].currencies[1].lifetime")


def test_end_date_before_start_date():
    doc = example()
    promo = doc["programs"][0]["promotions"][1]
    promo["start_date"], promo["end_date"] = "2025-06-01T00:00:00+03:00", "2025-05-31T22:59:59+02:00"
    assert_has(problems_of(doc), "programs[0].promotions[1].end_date", "start_date")
    promo["end_date"] = "2025-05-31T21:00:00Z"  # the same instant as the start: not before it
    assert validate_document(doc)[1] == []


@pytest.mark.parametrize("value", ["2024-13-01T00:00:00Z", "tomorrow", "2024-01-01T00:00:00", 20240101])
def test_bad_date_strings_are_refused(value):
    doc = example()
    doc["programs"][0]["promotions"][0]["start_date"] = value
    assert_has(problems_of(doc), "programs[0].promotions[0].start_date")


def test_yaml_dates():
    """YAML turns unquoted timestamps into datetimes and bare dates into dates; both must be handled cleanly."""
    text = SPEC_EXAMPLE.replace('start_date: "2024-01-01T00:00:00Z"', "start_date: 2024-01-01T00:00:00Z")
    text = text.replace('end_date: "2030-12-31T23:59:59Z"', "end_date: 2030-12-31 23:59:59+02:00")
    doc = yaml.safe_load(text)
    assert isinstance(doc["programs"][0]["promotions"][0]["start_date"], datetime)
    spec, problems = validate_document(doc)
    assert problems == []
    assert spec is not None
    assert spec.programs[0].promotions[0].start_date == datetime(2024, 1, 1, tzinfo=UTC)
    assert spec.programs[0].promotions[1].end_date == datetime(2030, 12, 31, 21, 59, 59, tzinfo=UTC)

    # A bare date and a timestamp without offset are ambiguous instants: refused, with the path.
    doc["programs"][0]["promotions"][0]["start_date"] = yaml.safe_load("2024-01-01")
    doc["programs"][0]["promotions"][1]["start_date"] = yaml.safe_load("2024-01-01 10:00:00")
    problems = problems_of(doc)
    assert_has(problems, "programs[0].promotions[0].start_date")
    assert_has(problems, "programs[0].promotions[1].start_date", "offset")
    assert len(problems) == 2


def test_shape_problems_and_cross_problems_are_listed_together():
    doc = example()
    doc["programs"][0]["currencies"][1]["precision"] = "two"                    # a shape problem
    doc["programs"][0]["promotions"][1]["end_date"] = "2023-01-01T00:00:00Z"     # a cross-check problem
    problems = problems_of(doc)
    assert_has(problems, "programs[0].currencies[1].precision")
    assert_has(problems, "programs[0].promotions[1].end_date", "start_date")
