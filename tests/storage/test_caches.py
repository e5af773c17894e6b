"""The per-process caches on both stores: the catalogue snapshot (storage/catalog_repo.py) and the principals of
the Authenticator (api/auth.py) are trusted only while their change counter is unchanged, so what one process
changes (`loyalty apply`, a token revoked or created) is seen by another process on its very next request.

Two Runtimes on the same store URL stand for two server processes: each has its own engines, hence its own caches.
"""

from __future__ import annotations

import contextvars
import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from loyalty.api.auth import Authenticator
from loyalty.domain.clock import FrozenClock
from loyalty.domain.errors import CurrencyNotFound, ProgramInactive, TokenInvalid
from loyalty.services import ledger, members, profiles, programfile, tokens
from loyalty.services.commands import AccrueCmd, BalanceCmd, RegisterCmd
from loyalty.services.demo import example_path
from loyalty.services.programfile_schema import validate_document
from loyalty.services.runtime import Runtime
from loyalty.storage import catalog_repo, counters_repo
from tests.conftest import make_runtime
from tests.helpers import assert_failure, ok

ADMIN = tokens.Principal(1, "t", frozenset(tokens.ROLES), None, None)
ANN = "ann@example.com"
WHO = {"loyalty_program_id": 123, "matching": "email", "email": ANN}


@pytest.fixture
def other(store_url: str, clock: FrozenClock) -> Iterator[Runtime]:
    """A second process on the same store."""
    runtime = make_runtime(store_url, clock)
    yield runtime
    runtime.close()


def example() -> dict[str, Any]:
    return yaml.safe_load(example_path().read_text(encoding="utf-8"))


def with_gems() -> dict[str, Any]:
    doc = example()
    doc["programs"][0]["currencies"].append({"iid": 3, "eid": "gems", "name": "Gems", "precision": 0})
    return doc


def archived() -> dict[str, Any]:
    doc = example()
    doc["programs"][0]["status"] = "archived"
    return doc


def without_status_points() -> dict[str, Any]:
    doc = example()
    doc["programs"][0]["currencies"].pop()  # status_points
    doc["programs"][0]["tier_groups"] = []  # which read it
    return doc


def apply_doc(rt: Runtime, doc: dict[str, Any], dry_run: bool = False) -> list[str]:
    spec, problems = validate_document(doc)
    assert problems == [] and spec is not None, problems
    return programfile.apply_spec(rt, spec, dry_run=dry_run)


def enrol(rt: Runtime) -> None:
    profiles.add(rt, ADMIN, 1, {"email": ANN})
    members.register(rt, ADMIN, RegisterCmd(**WHO))


def balance(rt: Runtime, **currency: Any) -> str:
    return ledger.balance(rt, ADMIN, BalanceCmd(**WHO, **currency)).active


def accrue(rt: Runtime, amount: str, **currency: Any) -> str:
    return ledger.accrue(rt, ADMIN, AccrueCmd(**WHO, amount=amount, **currency)).balance


def current_snapshot(rt: Runtime) -> catalog_repo.Snapshot:
    return rt.store.read(catalog_repo.snapshot)


# --- the catalogue ---------------------------------------------------------------------------------------------

def test_the_catalogue_snapshot_is_reused_until_another_process_changes_the_catalogue(rt, program, other):
    first = current_snapshot(rt)
    assert current_snapshot(rt) is first  # cached: not reloaded while the counter stands still

    assert apply_doc(other, example()) == []  # nothing to change: the counter is not bumped
    assert apply_doc(other, with_gems(), dry_run=True)  # a dry run changes nothing either
    assert current_snapshot(rt) is first

    apply_doc(other, with_gems())
    fresh = current_snapshot(rt)
    assert fresh is not first and fresh.version > first.version
    assert [c.eid for c in fresh.currencies[123]] == ["stars", "status_points", "gems"]
    assert current_snapshot(rt) is fresh


def test_a_currency_added_by_another_process_is_usable_at_once(rt, program, other):
    enrol(rt)
    assert balance(rt) == "50.00"
    with pytest.raises(CurrencyNotFound):  # the snapshot cached now has no gems
        balance(rt, points_currency_eid="gems")

    assert apply_doc(other, with_gems()) == ["created currency gems (iid 3) of program 123"]

    assert balance(rt, points_currency_eid="gems") == "0"
    assert accrue(rt, "7", points_currency_eid="gems") == "7"
    assert balance(rt, points_currency_eid="gems") == "7"
    assert balance(other, points_currency_eid="gems") == "7"


def test_a_currency_archived_by_another_process_is_refused_at_once(rt, program, other):
    enrol(rt)
    assert accrue(rt, "30", points_currency_eid="status_points") == "30"

    apply_doc(other, without_status_points())

    with pytest.raises(CurrencyNotFound):
        balance(rt, points_currency_eid="status_points")
    with pytest.raises(CurrencyNotFound):
        accrue(rt, "1", points_currency_eid="status_points")
    assert balance(rt) == "50.00"  # the default currency still works


def test_a_program_archived_by_another_process_is_refused_for_writes_at_once(rt, program, other):
    enrol(rt)
    assert accrue(rt, "10") == "60.00"

    apply_doc(other, archived())

    with pytest.raises(ProgramInactive):
        accrue(rt, "10")
    assert balance(rt) == "60.00"  # reads of an archived program still answer

    apply_doc(other, example())  # and back again
    assert accrue(rt, "10") == "70.00"


def test_a_program_added_by_another_process_is_found_at_once(rt, program, other):
    assert 124 not in current_snapshot(rt).programs
    doc = example()
    doc["databases"].append({"id": 2, "name": "Others"})
    new = copy.deepcopy(doc["programs"][0])
    new.update({"id": 124, "external_id": "second", "database": 2, "promotions": [], "tier_groups": []})
    doc["programs"].append(new)
    apply_doc(other, doc)

    snap = current_snapshot(rt)
    assert snap.programs[124].db_id == 2 and 2 in snap.databases
    profiles.add(rt, ADMIN, 2, {"email": ANN})
    members.register(rt, ADMIN, RegisterCmd(**{**WHO, "loyalty_program_id": 124}))
    assert ledger.balance(rt, ADMIN, BalanceCmd(**{**WHO, "loyalty_program_id": 124})).active == "50.00"


# --- tokens ----------------------------------------------------------------------------------------------------

def test_a_token_revoked_by_another_process_is_refused_on_the_next_request(rt, program, other):
    raw, info = tokens.create(other, "client", ["loyalty:read"])
    keeper, _ = tokens.create(other, "keeper", ["loyalty:read"])
    auth = Authenticator(rt)
    assert auth.principal(raw).name == "client"
    assert auth.principal(raw).name == "client"  # now from the cache
    assert auth.principal(keeper).name == "keeper"

    tokens.revoke(other, str(info.id))

    with pytest.raises(TokenInvalid):
        auth.principal(raw)
    with pytest.raises(TokenInvalid):  # and it stays refused
        auth.principal(raw)
    assert auth.principal(keeper).name == "keeper"  # the others are still good


def test_a_token_created_by_another_process_is_accepted_on_the_next_request(rt, program, other):
    auth = Authenticator(rt)
    first, _ = tokens.create(rt, "first", ["admin"])
    assert auth.principal(first).name == "first"

    raw, _ = tokens.create(other, "newcomer", ["loyalty:write"])
    principal = auth.principal(raw)
    assert principal.name == "newcomer" and principal.has("loyalty:read") and not principal.has("admin")


def test_revoking_a_token_cached_in_two_processes_reaches_both(rt, program, other):
    raw, info = tokens.create(rt, "shared", ["admin"])
    here, there = Authenticator(rt), Authenticator(other)
    assert here.principal(raw).name == there.principal(raw).name == "shared"

    tokens.revoke(rt, "shared")

    for auth in (here, there):
        with pytest.raises(TokenInvalid):
            auth.principal(raw)


# --- over HTTP -------------------------------------------------------------------------------------------------

def test_over_http_a_token_revoked_by_another_process_is_refused_at_once(api, other):
    api.member(ANN)
    raw, info = tokens.create(other, "client", ["loyalty:read"])
    ok(api.call("loyalty/account/balance", token=raw, **WHO))

    tokens.revoke(other, str(info.id))

    assert_failure(api.call("loyalty/account/balance", token=raw, **WHO), 403, "token_invalid")
    assert ok(api.call("loyalty/account/balance", **WHO)).data["active_balance"] == "50.00"  # admin unaffected


def test_over_http_catalogue_changes_by_another_process_are_seen_at_once(api, other):
    api.member(ANN)
    assert_failure(api.call("loyalty/account/balance", points_currency_eid="gems", **WHO), 404, "currency_not_found")
    ok(api.call("loyalty/accrue_points", amount="10", **WHO))

    apply_doc(other, with_gems())
    assert ok(api.call("loyalty/accrue_points", amount="4", points_currency_eid="gems", **WHO)).data["balance"] == "4"

    doc = with_gems()
    doc["programs"][0]["status"] = "archived"
    apply_doc(other, doc)
    assert_failure(api.call("loyalty/accrue_points", amount="10", **WHO), 409, "program_inactive")
    assert api.balance(ANN)["active_balance"] == "60.00"


# --- one counter read per request -----------------------------------------------------------------------------

def counter(rt: Runtime, name: str) -> int:
    return rt.store.read(lambda conn: counters_repo.read(conn, name))


def bump(rt: Runtime, name: str) -> None:
    rt.store.write(lambda conn: counters_repo.bump(conn, name))


def test_in_a_request_scope_counters_are_read_once_and_a_new_request_reads_them_again(rt, other):
    def one_request() -> tuple[int, int, int]:
        counters_repo.request_scope()
        tokens_at_start = counter(rt, "tokens")
        bump(other, "tokens")  # another process changes the tokens while this request runs
        return tokens_at_start, counter(rt, "tokens"), counter(rt, "catalog")

    first = contextvars.copy_context().run(one_request)
    assert first[1] == first[0]  # the request keeps the counters it started with
    second = contextvars.copy_context().run(one_request)
    assert second[0] == first[0] + 1  # the next request sees the change
    assert counter(rt, "tokens") == first[0] + 2  # outside a scope every read goes to the store

