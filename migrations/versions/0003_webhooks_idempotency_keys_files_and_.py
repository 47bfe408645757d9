"""webhooks, idempotency keys, files and batches

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 01:49:29.914428
"""

from alembic import op
import sqlalchemy as sa
import services.core.db


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('batches',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('endpoint', sa.String(length=60), nullable=False),
    sa.Column('input_file_id', sa.String(length=40), nullable=False),
    sa.Column('completion_window', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('webhook', sa.Text(), nullable=True),
    sa.Column('output_file_id', sa.String(length=40), nullable=True),
    sa.Column('error_file_id', sa.String(length=40), nullable=True),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('completed', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('errors', sa.JSON(), nullable=True),
    sa.Column('created_at', services.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', services.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('in_progress_at', services.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finalizing_at', services.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('completed_at', services.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('failed_at', services.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('expired_at', services.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cancelling_at', services.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cancelled_at', services.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_batches_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batches'))
    )
    op.create_table('files',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('purpose', sa.String(length=40), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('created_at', services.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_files_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_files'))
    )
    op.create_table('idempotency_keys',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('object_id', sa.String(length=40), nullable=False),
    sa.Column('created_at', services.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', services.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_idempotency_keys_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotency_keys')),
    sa.UniqueConstraint('tenant_id', 'key', name=op.f('uq_idempotency_keys_tenant_id_key'))
    )
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=True),
    sa.Column('batch_id', sa.String(length=40), nullable=True),
    sa.Column('event', sa.String(length=20), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', services.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', services.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('completed_at', services.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_webhook_deliveries_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries'))
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_deliveries_job_id'), ['job_id'], unique=False)
        batch_op.create_index('ix_webhook_deliveries_status_next', ['status', 'next_attempt_at'], unique=False)

    op.create_table('file_chunks',
    sa.Column('file_id', sa.String(length=40), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['file_id'], ['files.id'], name=op.f('fk_file_chunks_file_id_files'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('file_id', 'seq', name=op.f('pk_file_chunks'))
    )
    op.create_table('webhook_attempts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('delivery_id', sa.String(length=40), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', services.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['webhook_deliveries.id'], name=op.f('fk_webhook_attempts_delivery_id_webhook_deliveries'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_attempts'))
    )
    with op.batch_alter_table('webhook_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_attempts_delivery_id'), ['delivery_id'], unique=False)

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('webhook', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('webhook_events', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('batch_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('custom_id', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('moderation', sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f('ix_jobs_batch_id'), ['batch_id'], unique=False)

    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('webhook_secret', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('moderation_policy', sa.JSON(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('moderation_policy')
        batch_op.drop_column('webhook_secret')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_batch_id'))
        batch_op.drop_column('moderation')
        batch_op.drop_column('custom_id')
        batch_op.drop_column('batch_id')
        batch_op.drop_column('webhook_events')
        batch_op.drop_column('webhook')

    with op.batch_alter_table('webhook_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_attempts_delivery_id'))

    op.drop_table('webhook_attempts')
    op.drop_table('file_chunks')
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_deliveries_status_next')
        batch_op.drop_index(batch_op.f('ix_webhook_deliveries_job_id'))

    op.drop_table('webhook_deliveries')
    op.drop_table('idempotency_keys')
    op.drop_table('files')
    op.drop_table('batches')
