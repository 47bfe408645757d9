"""Webhook deliveries of a job or batch, and the tenant's signing secret."""

from __future__ import annotations

from typing import Literal

from services.core.responses.base import ResponseModel, iso
from services.core.tables import WebhookAttempt, WebhookDelivery


class WebhookSecretResponse(ResponseModel):
    """The tenant's Standard Webhooks secret, in Replicate's shape `{"key": ...}`."""

    key: str


class LastAttempt(ResponseModel):
    """What the last attempt of a delivery got back."""

    attempt: int
    status_code: int | None
    error: str | None
    latency_ms: float
    at: str | None

    @classmethod
    def of(cls, attempt: WebhookAttempt) -> LastAttempt:
        """The summary of one attempt."""
        return cls(
            attempt=attempt.attempt,
            status_code=attempt.status_code,
            error=attempt.error,
            latency_ms=round(attempt.latency_ms, 1),
            at=iso(attempt.created_at),
        )


class WebhookDeliveryResponse(ResponseModel):
    """One webhook event of a job or batch and what became of it (never its payload)."""

    id: str
    object: Literal["webhook.delivery"]
    event: str
    url: str
    status: Literal["pending", "delivered", "failed", "gone"]
    attempts: int
    created_at: str | None
    completed_at: str | None
    next_attempt_at: str | None
    last_attempt: LastAttempt | None

    @classmethod
    def of(cls, delivery: WebhookDelivery, last: WebhookAttempt | None) -> WebhookDeliveryResponse:
        """A delivery with its last attempt."""
        return cls(
            id=delivery.id,
            object="webhook.delivery",
            event=delivery.event,
            url=delivery.url,
            status=delivery.status,  # type: ignore[arg-type]
            attempts=delivery.attempts,
            created_at=iso(delivery.created_at),
            completed_at=iso(delivery.completed_at),
            next_attempt_at=iso(delivery.next_attempt_at),
            last_attempt=LastAttempt.of(last) if last is not None else None,
        )


class WebhookDeliveryListResponse(ResponseModel):
    """A job's or batch's webhook deliveries, oldest first."""

    object: Literal["list"]
    data: list[WebhookDeliveryResponse]
