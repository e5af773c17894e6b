"""PostgreSQL server processes hold the change counters in memory (storage/change_watch.py): read once, dropped on
the notification every bump sends at commit. A change made by another process still takes effect on the next
request, one made in this process at once, and while the listening session is down the counters are read per
request as before."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from loyalty.domain.clock import FrozenClock
from loyalty.services import tokens
from loyalty.services.runtime import Runtime
from loyalty.storage import change_watch, counters_repo
from tests.conftest import make_runtime
from tests.helpers import assert_failure, ok

ANN = "ann@example.com"
WHO = {"loyalty_program_id": 123, "matching": "email", "email": ANN}


@pytest.fixture
def pg_api(store_url: str, request: pytest.FixtureRequest) -> Any:
    if not store_url.startswith("postgresql"):
        pytest.skip("the change watch is PostgreSQL's (SQLite reads its counters without a round trip)")
    return request.getfixturevalue("api")


@pytest.fixture
def other_rt(store_url: str, clock: FrozenClock) -> Iterator[Runtime]:
    """A second store on the same database in this process (its own engines and pool)."""
    runtime = make_runtime(store_url, clock)
    yield runtime
    runtime.close()


def until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def holding(api: Any, rt: Runtime) -> change_watch.ChangeWatch:
    """The server's watch once it listens and holds the counters (a member enrolled, one request answered)."""
    api.member(ANN)
    watch = rt.store.change_watch
    assert watch is not None and until(lambda: watch.listening)
    ok(api.call("loyalty/account/balance", **WHO))
    assert watch.held() is not None
    return watch


def plain_url(store_url: str) -> str:
    return store_url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def counter_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How often the counters are read from the store."""
    reads: list[int] = []
    real = counters_repo._READ_ALL.all

    def counted(conn: Any, params: Any) -> Any:
        reads.append(1)
        return real(conn, params)

    monkeypatch.setattr(counters_repo._READ_ALL, "all", counted)
    yield reads


def test_a_server_reads_the_counters_once_then_holds_them(pg_api, rt, counter_reads):
    pg_api.member(ANN)
    assert until(lambda: rt.store.change_watch is not None and rt.store.change_watch.listening)
    ok(pg_api.call("loyalty/account/balance", **WHO))
    before = len(counter_reads)
    for _ in range(5):
        ok(pg_api.call("loyalty/account/balance", **WHO))
    assert len(counter_reads) == before


def test_a_token_revoked_by_another_process_is_refused_on_the_next_request(pg_api, rt, store_url):
    pg_api.member(ANN)
    raw, info = tokens.create(rt, "client", ["loyalty:read"])
    assert until(lambda: rt.store.change_watch is not None and rt.store.change_watch.listening)
    ok(pg_api.call("loyalty/account/balance", token=raw, **WHO))
    ok(pg_api.call("loyalty/account/balance", token=raw, **WHO))  # held now

    env = {**os.environ, "LOYALTY_DATABASE_URL": store_url}
    subprocess.run([sys.executable, "-m", "loyalty.cli", "token", "revoke", str(info.id)], env=env, check=True,
                   capture_output=True, timeout=120)

    assert_failure(pg_api.call("loyalty/account/balance", token=raw, **WHO), 403, "token_invalid")


def test_a_change_committed_by_another_session_drops_the_held_counters(pg_api, rt, store_url):
    """The notification alone (no bump in this process) makes the server read the counters again."""
    watch = holding(pg_api, rt)
    with psycopg.connect(plain_url(store_url), autocommit=True) as conn:
        with conn.transaction():
            conn.execute("UPDATE change_counters SET value = value + 1 WHERE name = 'tokens'")
            assert watch.held() is not None  # nothing is delivered before the commit
    assert until(lambda: watch.held() is None, 5)


def test_a_bump_in_this_process_takes_effect_at_once_on_every_store_of_the_database(pg_api, rt, other_rt):
    pg_api.member(ANN)
    raw, info = tokens.create(rt, "client", ["loyalty:read"])
    assert until(lambda: rt.store.change_watch is not None and rt.store.change_watch.listening)
    ok(pg_api.call("loyalty/account/balance", token=raw, **WHO))
    tokens.revoke(other_rt, str(info.id))  # another store (its own pool) in this process: no waiting
    assert_failure(pg_api.call("loyalty/account/balance", token=raw, **WHO), 403, "token_invalid")


def test_while_the_listening_session_is_down_counters_are_read_per_request_until_it_listens_again(
        pg_api, rt, store_url, counter_reads):
    pg_api.member(ANN)
    watch = rt.store.change_watch
    assert watch is not None and until(lambda: watch.listening)
    with psycopg.connect(plain_url(store_url), autocommit=True) as conn:
        killed = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s "
                              "AND datname = current_database()", (change_watch.APPLICATION_NAME,)).fetchall()
    assert killed == [(True,)]
    assert until(lambda: not watch.listening, 5)
    before = len(counter_reads)
    ok(pg_api.call("loyalty/account/balance", **WHO))
    ok(pg_api.call("loyalty/account/balance", **WHO))
    assert len(counter_reads) - before == 2  # one read per request while nobody listens
    assert until(lambda: watch.listening, 10)  # it listens again after a short pause
    ok(pg_api.call("loyalty/account/balance", **WHO))
    before = len(counter_reads)
    ok(pg_api.call("loyalty/account/balance", **WHO))
    assert len(counter_reads) == before


def test_after_a_bump_of_this_process_a_notification_from_elsewhere_does_not_bring_the_held_values_back(
        pg_api, rt, store_url):
    """A notification cannot tell whose commit it announces: this process's bump keeps the held values unused
    for its whole wait, so a request never sees values read before that bump's commit."""
    watch = holding(pg_api, rt)
    change_watch.bumped(rt.store.engines.writer.url)  # as a bump inside a transaction not yet committed does
    generation = watch.generation()
    with psycopg.connect(plain_url(store_url), autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, 'catalog')", (change_watch.CHANNEL,))
    assert until(lambda: watch.generation() != generation, 5)  # the other session's notification came
    ok(pg_api.call("loyalty/account/balance", **WHO))  # reads the counters, and may keep them
    assert watch.held() is None


def test_any_bump_of_a_change_counter_notifies_even_one_made_by_hand(pg_api, rt, store_url):
    """The notification comes from a trigger on the counters, so processes of an older version, or an operator's
    SQL, are heard too."""
    watch = holding(pg_api, rt)
    with psycopg.connect(plain_url(store_url), autocommit=True) as conn:
        conn.execute("UPDATE change_counters SET value = value + 1 WHERE name = 'tokens'")
    assert until(lambda: watch.held() is None, 5)
