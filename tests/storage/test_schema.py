"""The migrations build exactly the schema tables.py declares, on both stores, and the statements that must stay
index probes as the ledger grows use the indexes meant for them."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from loyalty.storage.tables import metadata


def test_the_migrated_store_matches_the_declared_schema(store_url):
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()


def test_an_accounts_earliest_hold_deadline_is_an_index_probe_not_a_scan_of_every_open_hold(sqlite_url):
    engine = create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            plan = " ".join(str(row[-1]) for row in conn.execute(text(
                "EXPLAIN QUERY PLAN SELECT min(deadline_at) FROM transactions WHERE program_id = 1 "
                "AND profile_id = 'p' AND currency_iid = 1 AND status = 'temp'")))
    finally:
        engine.dispose()
    assert "USING INDEX ix_transactions_temp_account (program_id=? AND profile_id=? AND currency_iid=?)" in plan
