"""presets: tenants' named system prompts

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 13:30:00.000000

"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.core.db import UTCDateTime

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'presets',
        sa.Column('tenant_id', sa.String(length=40), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('system_prompt', sa.Text(), nullable=False),
        sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('tenant_id', 'name'),
    )


def downgrade() -> None:
    op.drop_table('presets')
