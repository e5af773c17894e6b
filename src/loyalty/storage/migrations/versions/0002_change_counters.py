"""change counters for per-process caches of the catalogue and the tokens

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 14:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table('change_counters',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('value', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_change_counters'))
    )
    op.bulk_insert(table, [{'name': 'catalog', 'value': 0}, {'name': 'tokens', 'value': 0}])


def downgrade() -> None:
    op.drop_table('change_counters')
