"""Scheduling webhook events: a `webhook_deliveries` row per event (its id is the
`webhook-id` of every attempt), and the first attempt sent to the webhook queue.

The maintenance pass re-sends deliveries whose message was lost (`resend_lost_deliveries`).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
import structlog

from services.core.db import rows_changed, session_scope, utcnow
from services.core.heartbeats import live_background_workers
from services.core.ids import new_id
from services.core.responses.batches import BatchResponse
from services.core.responses.jobs import JobResponse
from services.core.runtime import Runtime
from services.core.tables import Batch, DeliveryStatus, Job, WebhookDelivery
from services.core.webhooks.subscriptions import EVENTS

log = structlog.get_logger(__name__)
# At most this many lost deliveries are re-sent per maintenance pass.
RESEND_BATCH = 500


def event_delivery_id(job_id: str, event: str) -> str:
    """The delivery id of a job's event: derived from both, so an event reported twice
    makes one delivery."""
    return "msg_" + hashlib.sha256(f"{job_id}:{event}".encode()).hexdigest()[:24]


def schedule_job_event(runtime: Runtime, job_id: str, event: str) -> None:
    """Schedule the job's webhook for `event` ("start" or "completed"), if it asked for one."""
    with runtime.sessions() as session:
        job = session.get(Job, job_id)
        if job is None or not job.webhook or event not in (job.webhook_events or EVENTS):
            return
        view = JobResponse.as_started(job) if event == "start" else JobResponse.of(job)
        payload = view.dump()
        tenant_id, url, request_id = job.tenant_id, job.webhook, job.request_id
    schedule_delivery(
        runtime,
        tenant_id=tenant_id,
        url=url,
        event=event,
        payload=payload,
        job_id=job_id,
        delivery_id=event_delivery_id(job_id, event),
        request_id=request_id,
    )


def schedule_delivery(
    runtime: Runtime,
    *,
    tenant_id: str,
    url: str,
    event: str,
    payload: dict[str, Any],
    job_id: str | None = None,
    batch_id: str | None = None,
    delivery_id: str | None = None,
    request_id: str | None = None,
    endpoint_id: str | None = None,
) -> str:
    """Store a delivery and send its first attempt to the webhook queue; returns its id
    (`endpoint_id`: the webhook endpoint it is for, whose secret signs it).

    A delivery id that exists already is left alone (the event was scheduled before).
    If Redis is down, the delivery stays pending and the maintenance pass sends it later.
    """
    delivery_id = delivery_id or new_id("msg")
    try:
        with session_scope(runtime.sessions) as session:
            session.add(
                WebhookDelivery(
                    id=delivery_id,
                    tenant_id=tenant_id,
                    job_id=job_id,
                    batch_id=batch_id,
                    event=event,
                    url=url,
                    payload=payload,
                    request_id=request_id,
                    endpoint_id=endpoint_id,
                    status=DeliveryStatus.PENDING,
                    attempts=0,
                    next_attempt_at=utcnow(),
                )
            )
    except sa.exc.IntegrityError:
        log.info("webhook_already_scheduled", delivery_id=delivery_id)
        return delivery_id
    try:
        runtime.broker.enqueue_webhook(delivery_id, 1)
    except Exception:
        log.exception("webhook_enqueue_failed", delivery_id=delivery_id)
    log.info("webhook_scheduled", delivery_id=delivery_id, webhook_event=event)
    return delivery_id


def schedule_batch_event(runtime: Runtime, batch_id: str) -> None:
    """Schedule the batch's `completed` webhook with the finished batch object, if it has one."""
    with runtime.sessions() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or not batch.webhook:
            return
        payload, tenant_id, url = BatchResponse.of(batch).dump(), batch.tenant_id, batch.webhook
        request_id = batch.request_id
    schedule_delivery(
        runtime,
        tenant_id=tenant_id,
        url=url,
        event="completed",
        payload=payload,
        batch_id=batch_id,
        delivery_id=event_delivery_id(batch_id, "completed"),
        request_id=request_id,
    )


def resend_lost_deliveries(runtime: Runtime) -> int:
    """Re-send pending deliveries overdue by `webhook_redeliver_after_s` (their message was
    lost, or their worker died mid-attempt); returns how many were sent."""
    if not live_background_workers(runtime.redis):
        # Nobody would take the messages yet: sending more would only pile them up in Redis.
        return 0
    now = utcnow()
    overdue = sa.and_(
        WebhookDelivery.status == DeliveryStatus.PENDING,
        WebhookDelivery.next_attempt_at
        < now - timedelta(seconds=runtime.settings.webhook_redeliver_after_s),
    )
    resend: list[tuple[str, int]] = []
    with session_scope(runtime.sessions) as session:
        rows = session.execute(
            sa.select(WebhookDelivery.id, WebhookDelivery.attempts)
            .where(overdue)
            .limit(RESEND_BATCH)
        ).all()
        for delivery_id, attempts in rows:
            # Pushing next_attempt_at to now takes the delivery for this pass: another
            # maintenance pass (of another model) does not send it too.
            if rows_changed(
                session,
                sa.update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id, WebhookDelivery.attempts == attempts, overdue
                )
                .values(next_attempt_at=now),
            ):
                resend.append((delivery_id, attempts))
    for delivery_id, attempts in resend:
        runtime.broker.enqueue_webhook(delivery_id, attempts + 1)
        log.info("webhook_resent", delivery_id=delivery_id, attempt=attempts + 1)
    return len(resend)
