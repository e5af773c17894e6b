"""fewer index entries per transaction; change counters notify listeners (PostgreSQL)

Every transaction paid for two index entries most never use: `ix_transactions_eid` (a lookup by eid across
programs goes through the (program_id, eid) unique index, one probe per program) and `ix_transactions_promo`
(most transactions have no promotion). On PostgreSQL the indexes are built and dropped CONCURRENTLY, outside the
migration's transaction, so writes to `transactions` go on during the upgrade of a large store; the new index is
built under a name of its own and takes the old one's name once that is gone. Each step may be repeated: an
upgrade interrupted half-way is run again as is.

PostgreSQL: a trigger on `change_counters` notifies `loyalty_changes` whenever a counter is bumped, by whatever
code or version bumps it (storage/change_watch.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 18:50:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

WITH_PROMO = sa.text("promo_iid IS NOT NULL")


NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION loyalty_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('loyalty_changes', NEW.name);
    RETURN NULL;
END
$$
"""
NOTIFY_TRIGGER = """
CREATE TRIGGER change_counters_notify AFTER INSERT OR UPDATE ON change_counters
FOR EACH ROW EXECUTE FUNCTION loyalty_notify_change()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        _swap_indexes_concurrently()
        op.execute(NOTIFY_FUNCTION)
        op.execute(NOTIFY_TRIGGER)
        return
    op.drop_index('ix_transactions_eid', table_name='transactions')
    op.drop_index('ix_transactions_promo', table_name='transactions')
    op.create_index('ix_transactions_promo', 'transactions', ['promo_iid', 'recorded_at'],
                    sqlite_where=WITH_PROMO)


def _swap_indexes_concurrently() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_transactions_eid")
        # A build interrupted earlier leaves an invalid index behind: start that one again.
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_transactions_promo_partial")
        op.execute("CREATE INDEX CONCURRENTLY ix_transactions_promo_partial ON transactions (promo_iid, recorded_at) "
                   f"WHERE {WITH_PROMO.text}")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_transactions_promo")
        op.execute("ALTER INDEX ix_transactions_promo_partial RENAME TO ix_transactions_promo")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER IF EXISTS change_counters_notify ON change_counters")
        op.execute("DROP FUNCTION IF EXISTS loyalty_notify_change()")
    op.drop_index('ix_transactions_promo', table_name='transactions')
    op.create_index('ix_transactions_promo', 'transactions', ['promo_iid', 'recorded_at'])
    op.create_index('ix_transactions_eid', 'transactions', ['eid'])
