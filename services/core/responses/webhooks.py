"""Webhook deliveries of a job or batch, the tenant's signing secret, and its webhook endpoints."""

from __future__ import annotations

from typing import Literal

from services.core.responses.base import OpenAIPage, ResponseModel, iso
from services.core.tables import WebhookAttempt, WebhookDelivery, WebhookEndpoint


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


class WebhookEndpointResponse(ResponseModel):
    """A webhook endpoint, in the shape of OpenAI's client (`event_types`, `name`,
    `created_at`, `signing_secret`) and of Stripe's API (`enabled_events`, `created`,
    `secret`, `status`); its secret only in the answer that created it."""

    id: str
    object: Literal["webhook_endpoint"]
    url: str
    name: str
    event_types: list[str]
    enabled_events: list[str]
    status: Literal["enabled"]
    created_at: int
    created: int
    signing_secret: str | None = None
    secret: str | None = None

    @classmethod
    def of(cls, endpoint: WebhookEndpoint, secret: str | None = None) -> WebhookEndpointResponse:
        """The endpoint (with its secret, when just made)."""
        created = int(endpoint.created_at.timestamp())
        answer = cls(
            id=endpoint.id,
            object="webhook_endpoint",
            url=endpoint.url,
            name=endpoint.name,
            event_types=list(endpoint.enabled_events),
            enabled_events=list(endpoint.enabled_events),
            status="enabled",
            created_at=created,
            created=created,
        )
        if secret is not None:
            answer.signing_secret = answer.secret = secret
        return answer


class WebhookEndpointListResponse(OpenAIPage):
    """The tenant's webhook endpoints, newest first."""

    data: list[WebhookEndpointResponse]

    @classmethod
    def of(cls, endpoints: list[WebhookEndpoint]) -> WebhookEndpointListResponse:
        """All of the tenant's endpoints (there are few: see `MAX_ENDPOINTS_PER_TENANT`)."""
        return cls(
            data=[WebhookEndpointResponse.of(endpoint) for endpoint in endpoints],
            **cls.page_fields([endpoint.id for endpoint in endpoints], has_more=False),
        )


class DeletedWebhookEndpoint(ResponseModel):
    """The answer of `DELETE /v1/webhook_endpoints/{id}`, as OpenAI's client reads it."""

    id: str
    object: Literal["webhook_endpoint.deleted"]
    deleted: bool
