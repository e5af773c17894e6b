"""The migrations build exactly the schema tables.py declares, on both stores, and the statements that must stay
index probes as the ledger grows use the indexes meant for them."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from loyalty.storage import migrate
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


def index_definitions(conn) -> dict[str, str]:
    if conn.dialect.name == "sqlite":
        rows = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
    else:
        rows = conn.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"))
    return {name: sql for name, sql in rows}


def test_the_open_holds_index_covers_open_holds_only(store_url):
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            definition = index_definitions(conn)["ix_transactions_temp_account"]
    finally:
        engine.dispose()
    assert "WHERE" in definition and "temp" in definition  # partial: holds, not every transaction


def indexes_after_a_round_trip(store_url: str, revision: str) -> tuple[dict[str, str], dict[str, str]]:
    """The index definitions once downgraded to `revision`, then once upgraded to head again (which must match
    tables.py)."""
    engine = create_engine(store_url)
    try:
        migrate.downgrade(engine, revision)
        with engine.connect() as conn:
            downgraded = index_definitions(conn)
    finally:
        migrate.upgrade(engine)  # the session's store stays at head whatever happened
        engine.dispose()
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
            return downgraded, index_definitions(conn)
    finally:
        engine.dispose()


def test_migration_0003_downgrades_and_upgrades_again(store_url):
    downgraded, upgraded = indexes_after_a_round_trip(store_url, "0002")
    assert "ix_transactions_temp_deadline" in downgraded and "ix_transactions_temp_account" not in downgraded
    assert "ix_transactions_temp_account" in upgraded


def test_only_transactions_with_a_promotion_have_an_entry_in_the_promotion_uses_index(store_url):
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            definitions = index_definitions(conn)
    finally:
        engine.dispose()
    assert "WHERE" in definitions["ix_transactions_promo"] and "promo_iid IS NOT NULL" in definitions[
        "ix_transactions_promo"].replace("(", "").replace(")", "")
    assert "ix_transactions_eid" not in definitions  # eid lookups probe the (program_id, eid) key instead


def test_migration_0004_downgrades_and_upgrades_again(store_url):
    downgraded, upgraded = indexes_after_a_round_trip(store_url, "0003")
    assert "ix_transactions_eid" in downgraded and "WHERE" not in downgraded["ix_transactions_promo"]
    assert "ix_transactions_eid" not in upgraded


def test_on_postgresql_migration_0004_runs_again_after_being_interrupted_half_way(pg_url):
    """Its indexes are built CONCURRENTLY, one committed step at a time (writes go on meanwhile), so an upgrade
    stopped part-way leaves the new index under its building name, perhaps invalid: running it again finishes."""
    engine = create_engine(pg_url)
    try:
        migrate.downgrade(engine, "0003")
        with engine.begin() as conn:  # as a stopped build leaves it
            conn.execute(text("DROP INDEX ix_transactions_eid"))
            conn.execute(text("CREATE INDEX ix_transactions_promo_partial ON transactions (promo_iid)"))
        migrate.upgrade(engine)
        with engine.connect() as conn:
            definitions = index_definitions(conn)
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        migrate.upgrade(engine)
        engine.dispose()
    assert "ix_transactions_promo_partial" not in definitions
    assert "promo_iid IS NOT NULL" in definitions["ix_transactions_promo"].replace("(", "").replace(")", "")
