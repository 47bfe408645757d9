"""jobs: the batch's lines indexed in id order, (batch_id, id) in place of (batch_id)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 23:10:00
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_batch_id_id", "jobs", ["batch_id", "id"])
    op.drop_index("ix_jobs_batch_id", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_batch_id", "jobs", ["batch_id"])
    op.drop_index("ix_jobs_batch_id_id", table_name="jobs")
