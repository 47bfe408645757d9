"""Delivering webhook events (in `vlmq background-worker`): claim an attempt, POST the
signed payload under the outbound address rules, record what came back, schedule a retry.

Delivery is at-least-once: each attempt is claimed with one conditional UPDATE on the
attempt counter, so a duplicated or re-sent message is a no-op.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from services.core import logs, metrics, outbound
from services.core.config import Settings
from services.core.db import rows_changed, session_scope, utcnow
from services.core.errors import (
    InvalidRequestError,
    ServiceUnavailableError,
    TooManyRequestsError,
    VlmqError,
)
from services.core.runtime import Runtime
from services.core.tables import DeliveryStatus, WebhookAttempt, WebhookDelivery
from services.core.webhooks.sharing import DeliverySharing, delivery_sharing
from services.core.webhooks.signing import (
    endpoint_secret,
    payload_body,
    signed_headers,
    signing_secrets,
)

log = structlog.get_logger(__name__)

# Only a receiver's status matters; read little of its body.
MAX_RESPONSE_BYTES = 64 * 1024
# An attempt that found no outbound capacity free is sent again this much later.
NO_CAPACITY_RETRY_S = 2.0
# An attempt in progress holds its delivery this much past its deadline, so the maintenance
# pass does not re-send a delivery that is being attempted right now.
ATTEMPT_LEASE_GRACE_S = 5.0


@dataclass(frozen=True)
class AttemptResult:
    """What one POST got: a status code or an error, and whether retrying can help."""

    status_code: int | None
    error: str | None
    latency_ms: float
    permanent: bool = False
    # Not made at all: this process had no outbound capacity free (not the receiver's
    # doing, so it is not counted as an attempt).
    no_capacity: bool = False

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
    # The secrets that sign it (the tenant's, and during a rotation the one before).
    signing: list[str]
    request_id: str | None = None
    # Whose delivery it is: its host name lookups count against this tenant's share.
    tenant_id: str | None = None


def pending_after(delivery_id: str, attempts: int) -> sa.ColumnElement[bool]:
    """The delivery is still pending with exactly `attempts` attempts made: the condition of
    every change to it, so a duplicated or stale attempt changes nothing."""
    return sa.and_(
        WebhookDelivery.id == delivery_id,
        WebhookDelivery.status == DeliveryStatus.PENDING,
        WebhookDelivery.attempts == attempts,
    )


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
            .where(pending_after(delivery_id, attempt - 1))
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
        signing=delivery_secrets(runtime, delivery),
        request_id=delivery.request_id,
        tenant_id=delivery.tenant_id,
    )


def delivery_secrets(runtime: Runtime, delivery: WebhookDelivery) -> list[str]:
    """The secrets that sign a delivery: its webhook endpoint's (none once the endpoint is
    deleted), or the tenant's for a job's or batch's own webhook."""
    if delivery.endpoint_id is None:
        return signing_secrets(runtime, delivery.tenant_id)
    secret = endpoint_secret(runtime, delivery.endpoint_id)
    return [secret] if secret else []


def post(claim: ClaimedAttempt, settings: Settings) -> AttemptResult:
    """POST the signed payload under the outbound address rules; never raises."""
    if not claim.signing:
        return AttemptResult(None, "the webhook endpoint was deleted", 0.0, permanent=True)
    headers = signed_headers(claim.signing, claim.delivery_id, claim.body, utcnow())
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
            # A signed request goes to the URL the tenant gave, nowhere a receiver points.
            follow_redirects=False,
        )
    except outbound.OutboundRefusedError as exc:
        # The address rules will refuse it every time: retrying cannot help.
        return AttemptResult(None, f"refused: {exc.message}", elapsed_ms(), permanent=True)
    except InvalidRequestError as exc:
        return AttemptResult(None, f"invalid URL: {exc.message}", elapsed_ms(), permanent=True)
    except (ServiceUnavailableError, TooManyRequestsError) as exc:
        return AttemptResult(None, exc.message, elapsed_ms(), no_capacity=True)
    except VlmqError as exc:  # unreachable, timed out, too many redirects, huge answer
        return AttemptResult(None, exc.message, elapsed_ms())
    except Exception as exc:  # a receiver must never crash the worker
        return AttemptResult(None, f"{exc.__class__.__name__}: {exc}", elapsed_ms())
    if 200 <= response.status < 300:
        return AttemptResult(response.status, None, elapsed_ms())
    if 300 <= response.status < 400:
        error = f"HTTP {response.status}: a redirect, not followed (webhooks go to their URL only)"
        return AttemptResult(response.status, error, elapsed_ms())
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
        .where(pending_after(claim.delivery_id, claim.attempt))
        .values(
            status=status,
            next_attempt_at=now + timedelta(seconds=delay_s) if delay_s is not None else None,
            completed_at=None if status == DeliveryStatus.PENDING else now,
        )
    )


def deliver(runtime: Runtime, delivery_id: str, attempt: int) -> str | None:
    """Make attempt `attempt` of a delivery; returns the delivery's new status, or None when
    there was nothing to do (already delivered, gone or failed, or the attempt was taken),
    or no room now (see `services.core.webhooks.sharing`: the same attempt is sent again)."""
    settings = runtime.settings
    if attempt > max_attempts(settings):
        # Re-sent by the maintenance pass after the last attempt's worker died: nothing is left.
        return give_up(runtime, delivery_id, attempt)
    target = delivery_target(runtime, delivery_id)
    if target is None:
        return None
    tenant, endpoint = target
    sharing = delivery_sharing(settings.webhook_breaker_failures, settings.webhook_breaker_pause_s)
    with sharing.attempt(tenant, endpoint, settings.tenant_max_deliveries) as wait_s:
        if wait_s > 0:
            # The tenant's attempts are all in progress, or its host is paused: the same
            # attempt is sent again later, nothing claimed or counted.
            log.info("webhook_attempt_deferred", delivery_id=delivery_id, retry_in_s=wait_s)
            try:
                runtime.broker.enqueue_webhook(delivery_id, attempt, countdown_s=wait_s)
            except Exception:  # the maintenance pass sends it once it is overdue
                log.exception("webhook_enqueue_failed")
            return None
        claim = claim_attempt(runtime, delivery_id, attempt)
        if claim is None:
            return None
        with logs.bound(request_id=claim.request_id, delivery_id=delivery_id):
            return attempt_delivery(runtime, claim, endpoint, sharing)


def delivery_target(runtime: Runtime, delivery_id: str) -> tuple[str, str] | None:
    """The tenant and receiving endpoint (host and port) of a pending delivery (None when it
    is not pending)."""
    with runtime.sessions() as session:
        row = session.execute(
            sa.select(WebhookDelivery.tenant_id, WebhookDelivery.url).where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == DeliveryStatus.PENDING.value,
            )
        ).first()
    if row is None:
        return None
    return str(row.tenant_id), urlsplit(row.url).netloc


def attempt_delivery(
    runtime: Runtime, claim: ClaimedAttempt, endpoint: str, sharing: DeliverySharing
) -> str:
    """POST a claimed attempt, record it (and its outcome against its endpoint's breaker),
    and send the retry if one is due."""
    settings = runtime.settings
    with outbound.fetching_for(claim.tenant_id or ""):
        result = post(claim, settings)
    if result.no_capacity:
        return put_back(runtime, claim, NO_CAPACITY_RETRY_S, reason="no_capacity")
    sharing.record(endpoint, failed=receiver_failed(result))
    status, delay_s = outcome(result, claim.attempt, settings)
    with session_scope(runtime.sessions) as session:
        record_attempt(session, claim, result, status, delay_s)
    metrics.webhook_attempted(outcome_label(result, status))
    log.info(
        "webhook_attempt",
        attempt=claim.attempt,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
        error=result.error,
        delivery_status=status,
    )
    if delay_s is not None:
        try:
            runtime.broker.enqueue_webhook(
                claim.delivery_id, claim.attempt + 1, countdown_s=delay_s
            )
        except Exception:
            log.exception("webhook_enqueue_failed")
    return status


def receiver_failed(result: AttemptResult) -> bool:
    """Whether an attempt failed on the receiver's side (no answer, or a 5xx): what pauses a
    host once it happens again and again."""
    if result.status_code is None:
        return not result.permanent
    return result.status_code >= 500


def put_back(runtime: Runtime, claim: ClaimedAttempt, delay_s: float, reason: str) -> str:
    """Give a claimed attempt back unmade (no outbound capacity was free) and send it again
    after `delay_s`, under the same number: other tenants' slow endpoints or lookups never
    use up this delivery's attempts."""
    with session_scope(runtime.sessions) as session:
        session.execute(
            sa.update(WebhookDelivery)
            .where(pending_after(claim.delivery_id, claim.attempt))
            .values(
                attempts=claim.attempt - 1,
                next_attempt_at=utcnow() + timedelta(seconds=delay_s),
            )
        )
    log.info("webhook_attempt_put_back", attempt=claim.attempt, reason=reason, retry_in_s=delay_s)
    try:
        runtime.broker.enqueue_webhook(claim.delivery_id, claim.attempt, countdown_s=delay_s)
    except Exception:
        log.exception("webhook_enqueue_failed")
    return DeliveryStatus.PENDING


def outcome_label(result: AttemptResult, status: str) -> str:
    """The `outcome` label of `vlmq_webhook_deliveries_total` for an attempt."""
    if status == DeliveryStatus.PENDING:
        return "retrying"
    if status == DeliveryStatus.FAILED and result.error and result.error.startswith("refused:"):
        return "refused"
    return str(status)


def give_up(runtime: Runtime, delivery_id: str, attempt: int) -> str | None:
    """Fail a pending delivery whose attempts are used up; None if it was not ours to fail."""
    with session_scope(runtime.sessions) as session:
        failed = rows_changed(
            session,
            sa.update(WebhookDelivery)
            .where(pending_after(delivery_id, attempt - 1))
            .values(status=DeliveryStatus.FAILED, next_attempt_at=None, completed_at=utcnow()),
        )
    return DeliveryStatus.FAILED if failed else None
