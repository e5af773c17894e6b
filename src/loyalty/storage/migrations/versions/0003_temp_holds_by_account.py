"""open holds indexed by account: an account's earliest hold deadline is one probe

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 13:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

TEMP = sa.text("status = 'temp'")


def upgrade() -> None:
    op.drop_index('ix_transactions_temp_deadline', table_name='transactions')
    op.create_index('ix_transactions_temp_account', 'transactions',
                    ['program_id', 'profile_id', 'currency_iid', 'deadline_at'],
                    sqlite_where=TEMP, postgresql_where=TEMP)


def downgrade() -> None:
    op.drop_index('ix_transactions_temp_account', table_name='transactions')
    op.create_index('ix_transactions_temp_deadline', 'transactions', ['deadline_at'],
                    sqlite_where=TEMP, postgresql_where=TEMP)
