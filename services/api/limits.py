"""Per-tenant request rates (Flask-Limiter, counted in Redis) and OpenAI's rate-limit headers.

Every `/v1/` request of a tenant counts against `VLMQ_RATE_LIMIT`, in the same Redis that
every API process shares, so the limit holds however many processes serve. A tenant over its
limit gets `429` with `Retry-After`; another tenant's counter is its own, so it never slows
down. Every limited response carries `x-ratelimit-limit-requests`,
`x-ratelimit-remaining-requests` and `x-ratelimit-reset-requests`, as OpenAI's API does.

With Redis down the limiter cannot count: limited routes answer 503 with `Retry-After` (fail
closed), as every route that needs Redis does. Health and playground routes are not limited.
"""

from __future__ import annotations

import math
import time

import redis
import structlog
from flask import Flask, Response, g, request
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit

from services.api.audit import signal_refusal
from services.api.errors import error_response
from services.core import metrics
from services.core.config import Settings
from services.core.responses.errors import ErrorResponse

log = structlog.get_logger(__name__)
KEY_PREFIX = "vlmq:ratelimit"


def register(app: Flask, settings: Settings) -> Limiter | None:
    """Install the per-tenant limit of `settings.rate_limit` (nothing when it is empty)."""
    if not settings.rate_limit.strip():
        return None
    limiter = Limiter(
        key_func=tenant_key,
        app=app,
        # One count per tenant across every route (default limits would count per route).
        application_limits=[settings.rate_limit],
        storage_uri=settings.broker_url,
        # Short timeouts: a Redis outage becomes a prompt 503, not a hung request.
        storage_options={"socket_connect_timeout": 2, "socket_timeout": 2},
        # Counts per window, weighted across its edge: no burst at a window's start, and
        # two Redis keys per tenant, whatever the rate.
        strategy="sliding-window-counter",
        key_prefix=KEY_PREFIX,
        headers_enabled=False,
        swallow_errors=False,
    )
    limiter.request_filter(is_unlimited)

    @app.errorhandler(RateLimitExceeded)
    def handle_rate_limited(error: RateLimitExceeded) -> Response:
        metrics.refused_by_limit("rate")
        signal_refusal(429, "rate_limit_exceeded")
        message = f"rate limit of {error.limit.limit} exceeded for this API key; retry later"
        retry_after = seconds_until_reset(limiter.current_limit)
        return error_response(
            429,
            ErrorResponse.build("rate_limit_error", "rate_limit_exceeded", message),
            {"Retry-After": str(retry_after)},
        )

    @app.after_request
    def add_rate_limit_headers(response: Response) -> Response:
        try:
            current = limiter.current_limit if "caller" in g else None
            if current is not None:
                response.headers["x-ratelimit-limit-requests"] = str(current.limit.amount)
                response.headers["x-ratelimit-remaining-requests"] = str(current.remaining)
                reset = f"{seconds_until_reset(current)}s"
                response.headers["x-ratelimit-reset-requests"] = reset
        except redis.RedisError:
            # Redis went down after the request was counted: the answer is still good.
            log.warning("rate_limit_headers_skipped", reason="redis_down")
        return response

    return limiter


def tenant_key() -> str:
    """The counter a request counts against: its tenant's."""
    return f"tenant:{g.caller.tenant_id}"


def is_unlimited(*_: object) -> bool:
    """Requests outside `/v1/`, and those not authenticated (they are refused anyway)."""
    return not request.path.startswith("/v1/") or "caller" not in g


def seconds_until_reset(current: RequestLimit | None) -> int:
    """Whole seconds until the limit lets a request through again (at least 1)."""
    if current is None:
        return 1
    return max(1, math.ceil(current.reset_at - time.time()))
