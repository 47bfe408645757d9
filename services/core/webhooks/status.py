"""What happened to the webhook events of a job or a batch: each delivery's status, how
many attempts it took, and what the last attempt got back (or why it was refused)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core.models import WebhookAttempt, WebhookDelivery
from services.core.serialize import iso
from services.core.shapes import WebhookDelivery as WebhookDeliveryShape
from services.core.shapes import shaped


def deliveries_of(
    session: Session, tenant_id: str, *, job_id: str | None = None, batch_id: str | None = None
) -> list[dict[str, Any]]:
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
    return [delivery_response(d, last.get(d.id)) for d in deliveries]


def delivery_response(delivery: WebhookDelivery, last: WebhookAttempt | None) -> dict[str, Any]:
    """One delivery as the API shows it (never its payload's secrets: it has none, and the
    URL is the tenant's own)."""
    return shaped(
        WebhookDeliveryShape,
        id=delivery.id,
        object="webhook.delivery",
        event=delivery.event,
        url=delivery.url,
        status=delivery.status,
        attempts=delivery.attempts,
        created_at=iso(delivery.created_at),
        completed_at=iso(delivery.completed_at),
        next_attempt_at=iso(delivery.next_attempt_at),
        last_attempt=None
        if last is None
        else {
            "attempt": last.attempt,
            "status_code": last.status_code,
            "error": last.error,
            "latency_ms": round(last.latency_ms, 1),
            "at": iso(last.created_at),
        },
    )
