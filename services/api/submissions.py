"""What every job-creating route reads besides the request itself: webhook fields and the
`Idempotency-Key` header."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request

from services.api.context import runtime, tenant_id
from services.core import idempotency
from services.core.idempotency import IdempotencyClaim
from services.core.inputs.prompts import CanonicalRequest, GenerationParams
from services.core.jobs import service as jobs
from services.core.presets import with_preset
from services.core.webhooks.subscriptions import parse_subscription

T = TypeVar("T")
# The routes that create interactive jobs: their authentication also counts the tenant's
# unfinished jobs, for the quota.
JOB_CREATING_ENDPOINTS = frozenset(
    {"jobs.create_job", "chat.create_chat_completion", "moderations.create_moderation"}
)


def check_quota() -> None:
    """A 429 before any work when the tenant is at its cap on unfinished jobs. A request
    with an `Idempotency-Key` is checked when it creates its job instead (`quota_checked`):
    replaying an accepted request is never refused."""
    if not request.headers.get(idempotency.HEADER):
        check_quota_now()


def quota_checked(create: Callable[[], T]) -> Callable[[], T]:
    """`create`, preceded by the quota check for a request with an `Idempotency-Key`
    (`submit_once` calls it only when the key made nothing yet)."""

    def checked() -> T:
        if request.headers.get(idempotency.HEADER):
            check_quota_now()
        return create()

    return checked


def check_quota_now() -> None:
    """A 429 when the tenant is at its cap on unfinished jobs (counted when the request was
    authenticated)."""
    jobs.refuse_over_quota(g.get("unfinished_jobs", 0), runtime().settings)


def webhook_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """`webhook` and `webhook_events` (as SubmitOptions takes them), checked; 400 if bad."""
    hook = parse_subscription(
        raw.get("webhook"), raw.get("webhook_events_filter"), runtime().settings
    )
    return {
        "webhook": hook.url if hook else None,
        "webhook_events": hook.events if hook else None,
    }


def idempotency_claim(
    endpoint: str, canonical: CanonicalRequest, params: GenerationParams, **extra: Any
) -> IdempotencyClaim | None:
    """The claim of the request's `Idempotency-Key` header on this exact request, if any."""
    return idempotency.claim_from_header(
        request.headers.get(idempotency.HEADER),
        tenant_id(),
        idempotency.submission_fingerprint(endpoint, canonical, params, **extra),
        runtime().settings,
    )


def with_requested_preset(canonical: CanonicalRequest, preset: str | None) -> CanonicalRequest:
    """The request with the tenant's (or the deployment's) preset applied; a 404 for a
    preset it does not have."""
    if preset is None:
        return canonical
    rt = runtime()
    with rt.sessions() as session:
        return with_preset(session, tenant_id(), canonical, preset, rt.settings)
