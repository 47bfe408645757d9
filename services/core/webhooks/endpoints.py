"""Webhook endpoints: a tenant's URLs subscribed to OpenAI's thin events.

An endpoint (Stripe's and OpenAI's `webhook_endpoint`) names the event types it wants
(`response.completed`, `batch.completed`, …) and has a signing secret of its own, shown
once when it is made and stored sealed. Its events are `{id: "evt_…", object: "event",
type, created_at, data: {id}}`, delivered by the same outbox and delivery machinery as a
job's webhook (retries, a `webhook-id` stable across them, delivery status), so the
official client's `webhooks.unwrap` verifies them with the endpoint's secret.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core.db import session_scope, utcnow
from services.core.errors import InvalidRequestError, TooManyRequestsError
from services.core.ids import new_id
from services.core.responses.responses_api import response_id, status_of
from services.core.runtime import Runtime
from services.core.secret_box import secret_box
from services.core.tables import Batch, BatchStatus, Job, Tenant, WebhookEndpoint
from services.core.tenancy import get_owned
from services.core.webhooks.scheduling import schedule_delivery
from services.core.webhooks.signing import new_secret
from services.core.webhooks.subscriptions import check_webhook_url

ENDPOINT_EVENTS = (
    "response.completed",
    "response.failed",
    "response.cancelled",
    "response.incomplete",
    "batch.completed",
    "batch.failed",
    "batch.cancelled",
    "batch.expired",
)
# The event of a batch in each terminal state.
BATCH_EVENTS = {
    BatchStatus.COMPLETED.value: "batch.completed",
    BatchStatus.FAILED.value: "batch.failed",
    BatchStatus.CANCELLED.value: "batch.cancelled",
    BatchStatus.EXPIRED.value: "batch.expired",
}
# Endpoints one tenant may have: every event is delivered to each subscribed one.
MAX_ENDPOINTS_PER_TENANT = 16


def check_events(events: object) -> list[str]:
    """The event types an endpoint asks for, checked (no duplicates, in a fixed order)."""
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise InvalidRequestError(
            "enabled_events must be a non-empty list of event types", param="enabled_events"
        )
    unknown = sorted(set(events) - set(ENDPOINT_EVENTS))
    if unknown:
        raise InvalidRequestError(
            f"unknown event types {unknown}: choose from {', '.join(ENDPOINT_EVENTS)}",
            param="enabled_events",
        )
    return [event for event in ENDPOINT_EVENTS if event in events]


def create_endpoint(
    runtime: Runtime, tenant_id: str, url: str, events: object, name: str = ""
) -> tuple[WebhookEndpoint, str]:
    """Store a new endpoint; returns it and its signing secret (the only time it is shown).
    A tenant at `MAX_ENDPOINTS_PER_TENANT` endpoints is refused with a 429."""
    url = check_webhook_url(url, runtime.settings.outbound_allowed)
    enabled = check_events(events)
    secret = new_secret()
    with session_scope(runtime.sessions) as session:
        # Two creations at once must not both count 15 and make 17: the tenant's row is
        # locked first (PostgreSQL; SQLite lets one writer through at a time anyway).
        session.execute(sa.select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
        count = session.scalar(
            sa.select(sa.func.count())
            .select_from(WebhookEndpoint)
            .where(WebhookEndpoint.tenant_id == tenant_id)
        )
        if (count or 0) >= MAX_ENDPOINTS_PER_TENANT:
            raise TooManyRequestsError(
                f"a tenant has at most {MAX_ENDPOINTS_PER_TENANT} webhook endpoints: "
                "delete one first",
                code="webhook_endpoint_limit",
            )
        endpoint = WebhookEndpoint(
            id=new_id("we"),
            tenant_id=tenant_id,
            url=url,
            name=name,
            enabled_events=enabled,
            secret=secret_box(runtime.settings).seal(secret),
            created_at=utcnow(),
        )
        session.add(endpoint)
    return endpoint, secret


def list_endpoints(session: Session, tenant_id: str) -> list[WebhookEndpoint]:
    """The tenant's endpoints, newest first."""
    return list(
        session.scalars(
            sa.select(WebhookEndpoint)
            .where(WebhookEndpoint.tenant_id == tenant_id)
            .order_by(WebhookEndpoint.created_at.desc(), WebhookEndpoint.id.desc())
        )
    )


def get_endpoint(session: Session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    """The tenant's endpoint, or a 404."""
    return get_owned(
        session, WebhookEndpoint, tenant_id, endpoint_id, noun="webhook endpoint", param="id"
    )


def delete_endpoint(session: Session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    """Delete the tenant's endpoint (events not yet delivered to it are not sent)."""
    endpoint = get_endpoint(session, tenant_id, endpoint_id)
    session.delete(endpoint)
    return endpoint


def event_id(object_id: str, event_type: str) -> str:
    """The id of the event `event_type` about an object: the same however often it is
    scheduled, and for every endpoint it goes to."""
    return "evt_" + hashlib.sha256(f"{object_id}:{event_type}".encode()).hexdigest()[:24]


def schedule_endpoint_events(
    runtime: Runtime,
    tenant_id: str,
    event_type: str,
    object_id: str,
    *,
    job_id: str | None = None,
    batch_id: str | None = None,
    request_id: str | None = None,
) -> None:
    """Schedule the event for each of the tenant's endpoints that asked for its type."""
    with runtime.sessions() as session:
        endpoints = [
            (endpoint.id, endpoint.url)
            for endpoint in list_endpoints(session, tenant_id)
            if event_type in endpoint.enabled_events
        ]
    payload = {
        "id": event_id(object_id, event_type),
        "object": "event",
        "type": event_type,
        "created_at": int(utcnow().timestamp()),
        "data": {"id": object_id},
    }
    for ident, url in endpoints:
        digest = hashlib.sha256(f"{payload['id']}:{ident}".encode()).hexdigest()[:24]
        schedule_delivery(
            runtime,
            tenant_id=tenant_id,
            url=url,
            event=event_type,
            payload=payload,
            job_id=job_id,
            batch_id=batch_id,
            delivery_id="msg_" + digest,
            request_id=request_id,
            endpoint_id=ident,
        )


def schedule_response_event(runtime: Runtime, job_id: str) -> None:
    """Schedule the endpoint event of a finished background response (not a batch line's:
    its batch has events of its own)."""
    with runtime.sessions() as session:
        job = session.get(Job, job_id)
        if job is None or job.kind != "response" or job.batch_id is not None:
            return
        if not (job.response or {}).get("background"):
            return
        if not job.job_status.is_terminal():
            return
        status = status_of(job)
        ident, tenant_id, request_id = response_id(job), job.tenant_id, job.request_id
    event_type = "response.cancelled" if status == "cancelled" else f"response.{status}"
    schedule_endpoint_events(
        runtime, tenant_id, event_type, ident, job_id=job_id, request_id=request_id
    )


def schedule_batch_endpoint_event(runtime: Runtime, batch_id: str) -> None:
    """Schedule the endpoint event of a batch that reached a terminal state."""
    with runtime.sessions() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or batch.status not in BATCH_EVENTS:
            return
        event_type, tenant_id = BATCH_EVENTS[batch.status], batch.tenant_id
        request_id = batch.request_id
    schedule_endpoint_events(
        runtime, tenant_id, event_type, batch_id, batch_id=batch_id, request_id=request_id
    )
