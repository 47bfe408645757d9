"""fair sharing: job bands, costs and queue deadlines; tenant weights

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 22:30:00.000000

"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.core.db import UTCDateTime

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('band', sa.SmallInteger(), server_default='1', nullable=False))
        batch.add_column(
            sa.Column('cost_tokens', sa.Integer(), server_default='0', nullable=False)
        )
        batch.add_column(sa.Column('queue_deadline_at', UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table('tenants') as batch:
        batch.add_column(sa.Column('weight', sa.Float(), server_default='1', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('tenants') as batch:
        batch.drop_column('weight')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('queue_deadline_at')
        batch.drop_column('cost_tokens')
        batch.drop_column('band')
