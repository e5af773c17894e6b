"""fewer index entries per transaction; change counters notify listeners (PostgreSQL)

Every transaction paid for two index entries most never use: `ix_transactions_eid` (a lookup by eid across
programs goes through the (program_id, eid) unique index, one probe per program) and `ix_transactions_promo`
(most transactions have no promotion). On a large PostgreSQL store the new partial index is built while writes
to `transactions` wait: upgrade in a quiet hour.

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
    op.drop_index('ix_transactions_eid', table_name='transactions')
    op.drop_index('ix_transactions_promo', table_name='transactions')
    op.create_index('ix_transactions_promo', 'transactions', ['promo_iid', 'recorded_at'],
                    sqlite_where=WITH_PROMO, postgresql_where=WITH_PROMO)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(NOTIFY_FUNCTION)
        op.execute(NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER IF EXISTS change_counters_notify ON change_counters")
        op.execute("DROP FUNCTION IF EXISTS loyalty_notify_change()")
    op.drop_index('ix_transactions_promo', table_name='transactions')
    op.create_index('ix_transactions_promo', 'transactions', ['promo_iid', 'recorded_at'])
    op.create_index('ix_transactions_eid', 'transactions', ['eid'])
