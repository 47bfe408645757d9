"""score_policies: a moderation job names its policy's questions by hash, not a copy

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 02:30:00.000000

"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.core.db import UTCDateTime

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'score_policies',
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('questions', sa.JSON(), nullable=False),
        sa.Column('used_at', UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('sha256'),
    )
    with op.batch_alter_table('score_policies') as batch:
        batch.create_index(batch.f('ix_score_policies_used_at'), ['used_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('score_policies') as batch:
        batch.drop_index(batch.f('ix_score_policies_used_at'))
    op.drop_table('score_policies')
