"""storage quotas: jobs.image_bytes, the image bytes a job's request brought

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 03:00:00.000000

"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(
            sa.Column('image_bytes', sa.BigInteger(), server_default='0', nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('image_bytes')
