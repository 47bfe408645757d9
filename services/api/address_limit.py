"""The request rate of callers without a valid API key, per client address.

Every request that carries no key, and every attempt with a wrong one, counts against
`VLMQ_UNAUTHENTICATED_RATE_LIMIT` for its address (the `limits` library, counted in the
Redis every API process shares). An address over it gets `429` before its key is even
looked up: guessing keys, or flooding the API with requests it must refuse, costs the
caller its own budget, not every tenant's threads and database reads. Requests with a valid
key count against their tenant's limit instead (see `services.api.limits`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TypeVar

from flask import Flask, current_app, request
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from services.core import metrics
from services.core.config import Settings
from services.core.errors import ServiceUnavailableError, TooManyRequestsError

KEY_PREFIX = "vlmq:ratelimit:address"
EXTENSION = "vlmq_address_limit"
T = TypeVar("T")
# Never limited: health checks and the metrics scrape.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class AddressLimit:
    """Counts and checks the unauthenticated requests of each client address."""

    def __init__(self, settings: Settings) -> None:
        self.item: RateLimitItem = parse(settings.unauthenticated_rate_limit)
        storage = storage_from_string(
            settings.broker_url, socket_connect_timeout=2, socket_timeout=2
        )
        self.limiter = SlidingWindowCounterRateLimiter(storage)

    def refuse_if_over(self) -> None:
        """429 when the caller's address has used up its unauthenticated requests."""
        address = client_address()
        if self._call(self.limiter.test, address):
            return
        metrics.refused_by_limit("unauthenticated_rate")
        reset_at = self._call(self.limiter.get_window_stats, address).reset_time
        raise TooManyRequestsError(
            f"rate limit of {self.item} for requests without a valid API key from this "
            "address exceeded; retry later",
            retry_after_s=max(1, math.ceil(reset_at - time.time())),
        )

    def count(self) -> None:
        """Count one request without a valid key against the caller's address."""
        self._call(self.limiter.hit, client_address())

    def _call(self, method: Callable[..., T], address: str) -> T:
        try:
            return method(self.item, KEY_PREFIX, address)
        except Exception as exc:  # the storage's own errors differ by backend
            raise ServiceUnavailableError("the rate limiter's Redis is unreachable") from exc


def register(app: Flask, settings: Settings) -> None:
    """Install the per-address limit (nothing when `unauthenticated_rate_limit` is empty).

    `/v1/` requests are counted by the key check (`services.api.auth`); every other request
    (the playground, the OpenAPI document, unknown paths) counts here, except the health
    probes, which a load balancer must always reach.
    """
    if not settings.unauthenticated_rate_limit.strip():
        return
    limit = app.extensions[EXTENSION] = AddressLimit(settings)

    @app.before_request
    def count_keyless_requests() -> None:
        if request.path.startswith("/v1/") or request.path in PROBES:
            return
        limit.refuse_if_over()
        limit.count()


def address_limit() -> AddressLimit | None:
    """The app's per-address limit, if one is set."""
    limit: AddressLimit | None = current_app.extensions.get(EXTENSION)
    return limit


def client_address() -> str:
    """The address the request came from (the socket's peer: a proxy in front must be one
    vlmq trusts to set it, see the operations guide)."""
    return request.remote_addr or "unknown"
