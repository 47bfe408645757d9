"""api_keys.last_used_at: when a key last authenticated a request (to the minute)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 04:45:00.000000

"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import services.core.db

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_used_at', services.core.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('last_used_at')
