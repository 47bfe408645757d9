"""jobs: a batch's lines indexed by status, for its counts

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-08 02:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_jobs_batch_status",
        "jobs",
        ["batch_id", "status"],
        sqlite_where=sa.text("batch_id IS NOT NULL"),
        postgresql_where=sa.text("batch_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_batch_status", table_name="jobs")
