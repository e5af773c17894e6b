"""The benchmark's batch measurements at toy size: bulk-seeded expired lots keep the books consistent and the
sweeper expires every one; an export of the bench currency comes back whole from a running server;
`serve --workers 2` answers writes from several processes without breaking an invariant; and the floor and
balance-only scenarios run without errors and move nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from loyalty.benchmark import batch, load, run, wrk
from loyalty.benchmark.server import serving, worker_pids
from loyalty.services.sweeper import sweep_all
from loyalty.services.verify import verify_all
from loyalty.storage.tables import accounts, lots, profiles, transactions
from tests.conftest import make_runtime


def _bench_balances(rt):
    """email -> (active, next_event_at) of the benchmark members' star accounts."""
    query = (select(profiles.c.email, accounts.c.active, accounts.c.next_event_at)
             .join(accounts, accounts.c.profile_id == profiles.c.id)
             .where(accounts.c.currency_iid == batch.CURRENCY, profiles.c.email.like("m%@bench.example")))
    return rt.store.read(lambda conn: {email: (active, at) for email, active, at in conn.execute(query)})


def _count(rt, table, *where):
    return rt.store.read(lambda conn: conn.execute(select(func.count()).select_from(table).where(*where))
                         .scalar_one())


def test_bulk_seeded_expired_lots_are_spread_over_the_members_and_keep_every_invariant(rt, clock):
    run.seed(rt, members=30, history=20)
    seeded = batch.seed_expired_lots(rt, 301)  # 10 each, and one more for one member
    assert (seeded["lots"], seeded["members"]) == (301, 30)
    assert not verify_all(rt).problems
    balances = _bench_balances(rt)
    units = sorted(active - run.INITIAL_UNITS for active, _ in balances.values())
    assert units == [1000] * 29 + [1100]
    assert {next_event for _, next_event in balances.values()} == {clock.now() - timedelta(days=1)}
    assert _count(rt, transactions, transactions.c.type == "accrual", transactions.c.status == "committed") == 301


def test_the_sweeper_expires_every_bulk_seeded_lot_once(rt, clock):
    run.seed(rt, members=30, history=20)
    result = batch.measure_expiry(rt, 300)
    assert (result["lots"], result["due_before"], result["due_after"]) == (300, 300, 0)
    assert result["accounts_swept"] == 30
    # from the unrounded time: within the rounding of "seconds" (0.005 s) scaled to a million lots
    assert result["seconds_per_million_lots"] == pytest.approx(result["seconds"] / 300 * 1e6, abs=0.005 / 300 * 1e6)
    assert result["verify"] == "OK"
    assert _count(rt, transactions, transactions.c.type == "expiration") == 30  # one per member
    assert _count(rt, lots, lots.c.expired == batch.LOT_UNITS) == 300
    assert {active for active, _ in _bench_balances(rt).values()} == {run.INITIAL_UNITS}
    assert sweep_all(rt) == 0


def test_an_export_of_the_bench_currency_is_downloaded_whole_from_a_running_server(sqlite_url, clock, tmp_path):
    rt = make_runtime(sqlite_url, clock)
    try:
        token = run.seed(rt, members=20, history=500)
    finally:
        rt.close()
    with serving(sqlite_url, tmp_path / "exports") as server:
        result = batch.measure_export(server, token)
    # an initial credit for each of the 20 members and the two history members, and both histories
    assert result["rows"] == result["downloaded_rows"] == 22 + 500 + 10
    assert result["seconds_per_million_rows"] == pytest.approx(result["seconds"] / 532 * 1e6, abs=0.005 / 532 * 1e6)
    assert result["rss_before_mb"] > 0 and result["rss_peak_mb"] >= result["rss_before_mb"]
    assert len(list((tmp_path / "exports").glob("*.csv"))) == 1


def test_several_server_processes_share_the_port_and_the_books_stay_consistent(sqlite_url, clock, tmp_path):
    rt = make_runtime(sqlite_url, clock)
    try:
        token = run.seed(rt, members=20, history=10)
        with serving(sqlite_url, tmp_path / "exports", workers=2, jobs=False) as server:
            assert len(worker_pids(server.pid)) == 2
            summary = load.run(server.base, token, 20, "accrue", 4, 1.0)
        assert summary["requests"] > 0 and summary["errors"] == {}
        assert _count(rt, transactions, transactions.c.type == "accrual",
                      transactions.c.status == "committed") == summary["requests"]
        assert not verify_all(rt).problems
    finally:
        rt.close()


@pytest.mark.skipif(not wrk.available(), reason="wrk is not installed (Debian package `wrk`); the benchmark "
                                                "falls back to the Python generator without it")
def test_wrk_drives_the_checkout_mix_paced_without_errors_and_never_ahead_of_its_schedule(sqlite_url, clock,
                                                                                          tmp_path):
    rt = make_runtime(sqlite_url, clock)
    try:
        token = run.seed(rt, members=20, history=10)
        with serving(sqlite_url, tmp_path / "exports", jobs=False) as server:
            # Enough requests that holds get committed and accruals cancelled by eid (after 64 of each).
            closed = wrk.run(server.base, token, 20, "checkout_mix", 8, 2)
            paced = wrk.run(server.base, token, 20, "checkout_mix", 8, 2, rate=50)
        assert closed["errors"] == {} and closed["requests"] > 200, closed
        assert paced["errors"] == {} and paced["requests"] > 0, paced
        assert paced["requests"] <= 50 * 2 * 1.1 + 8  # one slot per request, slots every 20 ms
        assert "schedule_lag_ms" in paced
        # Holds were committed and accruals cancelled by the eids the script generated.
        assert _count(rt, transactions, transactions.c.eid.like("h-%"), transactions.c.status == "committed") > 0
        assert _count(rt, transactions, transactions.c.eid.like("a-%"), transactions.c.status == "cancelled") > 0
        assert not verify_all(rt).problems
    finally:
        rt.close()


def test_the_floor_scenario_is_refused_by_validation_on_both_generators_and_moves_nothing(sqlite_url, clock,
                                                                                          tmp_path):
    rt = make_runtime(sqlite_url, clock)
    try:
        token = run.seed(rt, members=20, history=10)
        before = _count(rt, transactions)
        with serving(sqlite_url, tmp_path / "exports", jobs=False) as server:
            python = load.run(server.base, token, 20, "floor", 4, 1.0)
            balance = load.run(server.base, token, 20, "balance", 4, 1.0)
            runs = [python, balance]
            if wrk.available():
                runs.append(wrk.run(server.base, token, 20, "floor", 4, 1))
        for summary in runs:  # the expected 400 is no error; anything else would be
            assert summary["requests"] > 0 and summary["errors"] == {}, summary
        assert _count(rt, transactions) == before
    finally:
        rt.close()
