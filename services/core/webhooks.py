"""Webhooks: Standard Webhooks signing, scheduling of job and batch events, delivery.

Scheduling stores a `webhook_deliveries` row (its id is the `webhook-id` of every attempt)
and sends `vlmq.deliver_webhook` to the webhook queue; `vlmq background-worker` makes the HTTP
calls, so neither the API nor the inference worker ever waits on a receiver. Delivery is
at-least-once: each attempt is claimed with one conditional UPDATE on the attempt counter,
so a duplicated or re-sent message is a no-op, and the reconciler re-sends deliveries whose
message was lost.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from services.core import outbound
from services.core.config import Settings
from services.core.db import session_scope, utcnow
from services.core.errors import InvalidRequestError, NotFoundError, VlmqError
from services.core.ids import new_id
from services.core.jobs import rows_changed
from services.core.models import Job, Tenant, WebhookAttempt, WebhookDelivery
from services.core.queue import enqueue_webhook
from services.core.runtime import Runtime
from services.core.serialize import job_response

log = logging.getLogger(__name__)

EVENTS = ("start", "completed")
MAX_URL_CHARS = 2000
# Only a receiver's status matters; read little of its body.
MAX_RESPONSE_BYTES = 64 * 1024
# An attempt in progress holds its delivery this much past its deadline, so the reconciler
# does not re-send a delivery that is being attempted right now.
ATTEMPT_LEASE_GRACE_S = 30.0
HEARTBEAT_PREFIX = "vlmq:background-worker:"
RESEND_BATCH = 500


class DeliveryStatus:
    """The states of a delivery: `pending → delivered | failed | gone`."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    GONE = "gone"


# --- subscriptions (submit time) ---------------------------------------------------------


@dataclass(frozen=True)
class WebhookSubscription:
    """Where to POST a job's events, and which events."""

    url: str
    events: list[str]


def parse_subscription(
    url: object, events_filter: object, settings: Settings
) -> WebhookSubscription | None:
    """The `webhook` and `webhook_events_filter` of a request, checked; None without a webhook.

    Refused before anything is stored: a URL that is not http(s), and one whose host is a
    literal IP in a blocked range (the resolved addresses are checked again at delivery).
    """
    if url is None or url == "":
        if events_filter is not None:
            raise InvalidRequestError(
                "webhook_events_filter needs a webhook", param="webhook_events_filter"
            )
        return None
    if not isinstance(url, str):
        raise InvalidRequestError("webhook must be a URL string", param="webhook")
    return WebhookSubscription(
        url=check_webhook_url(url, settings.outbound_allowed),
        events=parse_events(events_filter),
    )


def parse_events(events_filter: object) -> list[str]:
    """The events a webhook asks for (default: all), without duplicates, in EVENTS order."""
    if events_filter is None:
        return list(EVENTS)
    if not isinstance(events_filter, list) or not all(isinstance(e, str) for e in events_filter):
        raise InvalidRequestError(
            "webhook_events_filter must be a list of event names", param="webhook_events_filter"
        )
    unknown = sorted(set(events_filter) - set(EVENTS))
    if unknown or not events_filter:
        raise InvalidRequestError(
            f"webhook_events_filter takes one or more of {', '.join(EVENTS)}",
            param="webhook_events_filter",
        )
    return [event for event in EVENTS if event in events_filter]


def check_webhook_url(url: str, allowlist: list[str]) -> str:
    """The URL, if it is http(s) and not a literal blocked address; otherwise a 400."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidRequestError(f"webhook is over {MAX_URL_CHARS} characters", param="webhook")
    try:
        _, host, _ = outbound.parse_http_url(url)
    except (InvalidRequestError, ValueError) as exc:  # ValueError: a malformed port
        raise InvalidRequestError("webhook must be an http(s) URL", param="webhook") from exc
    address = literal_address(host)
    if (
        address is not None
        and outbound.is_blocked_address(address)
        and not outbound.is_allowed(host, address, allowlist)
    ):
        raise outbound.OutboundRefusedError(
            f"webhook host {host} is a private or reserved address", param="webhook"
        )
    return url


def literal_address(host: str) -> outbound.IPAddress | None:
    """The address a host names without DNS: `10.0.0.1`, `::1`, and also `2130706433`,
    `0x7f.1` or `127.1`, which resolvers read as IPv4 too. None for a host name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


# --- the tenant's secret and signing -----------------------------------------------------


def new_secret() -> str:
    """A new Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def tenant_secret(runtime: Runtime, tenant_id: str) -> str:
    """The tenant's signing secret, created on first use."""
    with runtime.sessions() as session:
        secret = session.scalar(sa.select(Tenant.webhook_secret).where(Tenant.id == tenant_id))
    if secret:
        return secret
    with session_scope(runtime.sessions) as session:
        # Conditional, so two first uses at once agree on one secret.
        session.execute(
            sa.update(Tenant)
            .where(Tenant.id == tenant_id, Tenant.webhook_secret.is_(None))
            .values(webhook_secret=new_secret())
        )
        secret = session.scalar(sa.select(Tenant.webhook_secret).where(Tenant.id == tenant_id))
    if not secret:
        raise NotFoundError(f"no tenant {tenant_id!r}")
    return secret


def signed_headers(secret: str, msg_id: str, body: str, timestamp: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (the timestamp is the attempt's)."""
    return {
        "content-type": "application/json",
        "user-agent": "vlmq-webhooks",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, timestamp, body),
    }


def payload_body(payload: dict[str, Any]) -> str:
    """The JSON body that is signed and sent."""
    return json.dumps(payload, separators=(",", ":"))


# --- scheduling ------------------------------------------------------------------------


def event_delivery_id(job_id: str, event: str) -> str:
    """The delivery id of a job's event: derived from both, so an event reported twice
    makes one delivery."""
    return "msg_" + hashlib.sha256(f"{job_id}:{event}".encode()).hexdigest()[:24]


def on_job_event(runtime: Runtime, job_id: str, event: str) -> None:
    """Schedule the job's webhook for `event` ("start" or "completed"), if it asked for one."""
    with runtime.sessions() as session:
        job = session.get(Job, job_id)
        if job is None or not job.webhook or event not in (job.webhook_events or EVENTS):
            return
        payload = job_response(job)
        tenant_id, url = job.tenant_id, job.webhook
    schedule_delivery(
        runtime,
        tenant_id=tenant_id,
        url=url,
        event=event,
        payload=payload,
        job_id=job_id,
        delivery_id=event_delivery_id(job_id, event),
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
) -> str:
    """Store a delivery and send its first attempt to the webhook queue; returns its id.

    A delivery id that exists already is left alone (the event was scheduled before).
    If Redis is down, the delivery stays pending and the reconciler sends it later.
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
                    status=DeliveryStatus.PENDING,
                    attempts=0,
                    next_attempt_at=utcnow(),
                )
            )
    except sa.exc.IntegrityError:
        log.info("event=webhook_already_scheduled delivery_id=%s", delivery_id)
        return delivery_id
    try:
        enqueue_webhook(runtime.celery, delivery_id, 1)
    except Exception:
        log.exception(
            "event=webhook_enqueue_failed delivery_id=%s (the reconciler will retry)", delivery_id
        )
    log.info("event=webhook_scheduled delivery_id=%s webhook_event=%s", delivery_id, event)
    return delivery_id


# --- delivery (in `vlmq background-worker`) -------------------------------------------------


@dataclass(frozen=True)
class AttemptResult:
    """What one POST got: a status code or an error, and whether retrying can help."""

    status_code: int | None
    error: str | None
    latency_ms: float
    permanent: bool = False

    @property
    def succeeded(self) -> bool:
        """A 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class ClaimedAttempt:
    """An attempt this process has the right to make."""

    delivery_id: str
    attempt: int
    url: str
    body: str
    secret: str


def max_attempts(settings: Settings) -> int:
    """The first attempt and one per retry delay."""
    return 1 + len(settings.webhook_retry_delays_s)


def claim_attempt(runtime: Runtime, delivery_id: str, attempt: int) -> ClaimedAttempt | None:
    """Take attempt number `attempt` of a pending delivery; None if it is done or taken."""
    settings = runtime.settings
    lease = utcnow() + timedelta(seconds=settings.webhook_timeout_s + ATTEMPT_LEASE_GRACE_S)
    with session_scope(runtime.sessions) as session:
        claimed = rows_changed(
            session,
            sa.update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.attempts == attempt - 1,
            )
            .values(attempts=attempt, next_attempt_at=lease),
        )
        delivery = session.get(WebhookDelivery, delivery_id) if claimed else None
    if delivery is None:
        return None
    return ClaimedAttempt(
        delivery_id=delivery_id,
        attempt=attempt,
        url=delivery.url,
        body=payload_body(delivery.payload),
        secret=tenant_secret(runtime, delivery.tenant_id),
    )


def post(claim: ClaimedAttempt, settings: Settings) -> AttemptResult:
    """POST the signed payload under the outbound address rules; never raises."""
    headers = signed_headers(claim.secret, claim.delivery_id, claim.body, utcnow())
    start = time.monotonic()

    def elapsed_ms() -> float:
        return round((time.monotonic() - start) * 1000, 3)

    try:
        response = outbound.fetch(
            claim.url,
            allowlist=settings.outbound_allowed,
            timeout_s=settings.webhook_timeout_s,
            max_bytes=MAX_RESPONSE_BYTES,
            method="POST",
            body=claim.body.encode(),
            headers=headers,
        )
    except outbound.OutboundRefusedError as exc:
        # The address rules will refuse it every time: retrying cannot help.
        return AttemptResult(None, f"refused: {exc.message}", elapsed_ms(), permanent=True)
    except InvalidRequestError as exc:
        return AttemptResult(None, f"invalid URL: {exc.message}", elapsed_ms(), permanent=True)
    except VlmqError as exc:  # unreachable, timed out, too many redirects, huge answer
        return AttemptResult(None, exc.message, elapsed_ms())
    except Exception as exc:  # a receiver must never crash the worker
        return AttemptResult(None, f"{exc.__class__.__name__}: {exc}", elapsed_ms())
    if 200 <= response.status < 300:
        return AttemptResult(response.status, None, elapsed_ms())
    return AttemptResult(response.status, f"HTTP {response.status}", elapsed_ms())


def outcome(result: AttemptResult, attempt: int, settings: Settings) -> tuple[str, float | None]:
    """The delivery's next status, and the delay before the next attempt if there is one."""
    if result.succeeded:
        return DeliveryStatus.DELIVERED, None
    if result.status_code == 410:
        return DeliveryStatus.GONE, None
    delays = settings.webhook_retry_delays_s
    if result.permanent or attempt > len(delays):
        return DeliveryStatus.FAILED, None
    return DeliveryStatus.PENDING, delays[attempt - 1]


def record_attempt(
    session: Session,
    claim: ClaimedAttempt,
    result: AttemptResult,
    status: str,
    delay_s: float | None,
) -> None:
    """Store the attempt and move the delivery on (only while the attempt is still current)."""
    now = utcnow()
    session.add(
        WebhookAttempt(
            delivery_id=claim.delivery_id,
            attempt=claim.attempt,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=result.error,
            created_at=now,
        )
    )
    session.execute(
        sa.update(WebhookDelivery)
        .where(
            WebhookDelivery.id == claim.delivery_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.attempts == claim.attempt,
        )
        .values(
            status=status,
            next_attempt_at=now + timedelta(seconds=delay_s) if delay_s is not None else None,
            completed_at=None if status == DeliveryStatus.PENDING else now,
        )
    )


def deliver(runtime: Runtime, delivery_id: str, attempt: int) -> str | None:
    """Make attempt `attempt` of a delivery; returns the delivery's new status, or None when
    there was nothing to do (already delivered, gone or failed, or the attempt was taken)."""
    settings = runtime.settings
    if attempt > max_attempts(settings):
        # Re-sent by the reconciler after the last attempt's worker died: nothing is left.
        return give_up(runtime, delivery_id, attempt)
    claim = claim_attempt(runtime, delivery_id, attempt)
    if claim is None:
        return None
    result = post(claim, settings)
    status, delay_s = outcome(result, attempt, settings)
    with session_scope(runtime.sessions) as session:
        record_attempt(session, claim, result, status, delay_s)
    log.info(
        "event=webhook_attempt delivery_id=%s attempt=%d status_code=%s latency_ms=%.1f "
        "error=%r delivery_status=%s",
        delivery_id,
        attempt,
        result.status_code,
        result.latency_ms,
        result.error,
        status,
    )
    if delay_s is not None:
        try:
            enqueue_webhook(runtime.celery, delivery_id, attempt + 1, countdown_s=delay_s)
        except Exception:
            log.exception("event=webhook_enqueue_failed delivery_id=%s", delivery_id)
    return status


def give_up(runtime: Runtime, delivery_id: str, attempt: int) -> str | None:
    """Fail a pending delivery whose attempts are used up; None if it was not ours to fail."""
    with session_scope(runtime.sessions) as session:
        failed = rows_changed(
            session,
            sa.update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.attempts == attempt - 1,
            )
            .values(status=DeliveryStatus.FAILED, next_attempt_at=None, completed_at=utcnow()),
        )
    return DeliveryStatus.FAILED if failed else None


def resend_lost_deliveries(runtime: Runtime) -> int:
    """Re-send pending deliveries overdue by `webhook_redeliver_after_s` (their message was
    lost, or their worker died mid-attempt); returns how many were sent."""
    if not live_background_workers(runtime):
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
            # reconciler (of another model) does not send it too.
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
        enqueue_webhook(runtime.celery, delivery_id, attempts + 1)
        log.info("event=webhook_resent delivery_id=%s attempt=%d", delivery_id, attempts + 1)
    return len(resend)


def live_background_workers(runtime: Runtime) -> list[str]:
    """Names of the webhook workers whose heartbeat is fresh."""
    return sorted(
        (key.decode() if isinstance(key, bytes) else str(key)).removeprefix(HEARTBEAT_PREFIX)
        for key in runtime.redis.scan_iter(match=HEARTBEAT_PREFIX + "*")
    )
