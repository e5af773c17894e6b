"""fewer index entries per transaction: no eid-only index, promotion uses indexed only where there is a promotion

Every transaction paid for two index entries most never use: `ix_transactions_eid` (a lookup by eid across
programs goes through the (program_id, eid) unique index, one probe per program) and `ix_transactions_promo`
(most transactions have no promotion).

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


def upgrade() -> None:
    op.drop_index('ix_transactions_eid', table_name='transactions')
    op.drop_index('ix_transactions_promo', table_name='transactions')
    op.create_index('ix_transactions_promo', 'transactions', ['promo_iid', 'recorded_at'],
                    sqlite_where=WITH_PROMO, postgresql_where=WITH_PROMO)


def downgrade() -> None:
    op.drop_index('ix_transactions_promo', table_name='transactions')
    op.create_index('ix_transactions_promo', 'transactions', ['promo_iid', 'recorded_at'])
    op.create_index('ix_transactions_eid', 'transactions', ['eid'])
