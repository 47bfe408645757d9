"""sealed webhook secrets: tenants' signing secrets encrypted at rest, and a previous
secret that keeps signing during a rotation's overlap

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 06:00:00.000000

"""
from __future__ import annotations

import sqlalchemy as sa

import services.core.db
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


TENANTS = sa.table('tenants', sa.column('id', sa.String), sa.column('webhook_secret', sa.String))


def upgrade() -> None:
    with op.batch_alter_table('tenants') as batch:
        batch.alter_column(
            'webhook_secret', type_=sa.String(400), existing_type=sa.String(80)
        )
        batch.add_column(sa.Column('previous_webhook_secret', sa.String(400), nullable=True))
        batch.add_column(
            sa.Column('previous_webhook_secret_until', services.core.db.UTCDateTime(timezone=True), nullable=True)
        )
    # Seal the secrets stored in the clear (the key is made only if there are some).
    reseal(sealed=False)


def reseal(*, sealed: bool) -> None:
    """Seal the stored secrets that are in the clear (`sealed=False`), or open the sealed
    ones (`sealed=True`, going down); the key is looked up only if there are some."""
    connection = op.get_bind()
    is_sealed = TENANTS.c.webhook_secret.startswith('enc:')
    rows = connection.execute(
        sa.select(TENANTS.c.id, TENANTS.c.webhook_secret).where(
            TENANTS.c.webhook_secret.is_not(None), is_sealed if sealed else sa.not_(is_sealed)
        )
    ).all()
    if not rows:
        return
    from services.core.config import Settings
    from services.core.secret_box import secret_box

    box = secret_box(Settings())
    for tenant_id, stored in rows:
        value = box.open(stored) if sealed else box.seal(stored)
        connection.execute(
            TENANTS.update().where(TENANTS.c.id == tenant_id).values(webhook_secret=value)
        )


def downgrade() -> None:
    reseal(sealed=True)
    with op.batch_alter_table('tenants') as batch:
        batch.drop_column('previous_webhook_secret_until')
        batch.drop_column('previous_webhook_secret')
