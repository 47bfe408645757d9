"""What happened to the webhook events of a job or a batch: each delivery's status, how
many attempts it took, and what the last attempt got back (or why it was refused)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core.responses.webhooks import WebhookDeliveryListResponse, WebhookDeliveryResponse
from services.core.tables import WebhookAttempt, WebhookDelivery


def deliveries_of(
    session: Session, tenant_id: str, *, job_id: str | None = None, batch_id: str | None = None
) -> WebhookDeliveryListResponse:
    """The webhook deliveries of the tenant's job or batch, oldest first, each with its last
    attempt (two reads, whatever the number of deliveries)."""
    query = sa.select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant_id)
    if job_id is not None:
        query = query.where(WebhookDelivery.job_id == job_id)
    if batch_id is not None:
        query = query.where(WebhookDelivery.batch_id == batch_id, WebhookDelivery.job_id.is_(None))
    deliveries = session.scalars(query.order_by(WebhookDelivery.created_at)).all()
    last: dict[str, WebhookAttempt] = {}
    if deliveries:
        attempts = session.scalars(
            sa.select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_([d.id for d in deliveries]))
            .order_by(WebhookAttempt.attempt)
        )
        last = {attempt.delivery_id: attempt for attempt in attempts}
    data = [WebhookDeliveryResponse.of(d, last.get(d.id)) for d in deliveries]
    return WebhookDeliveryListResponse(object="list", data=data)
