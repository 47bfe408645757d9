"""Admission by expected wait: when a model's queue would keep new work waiting longer than
`VLMQ_MAX_QUEUE_WAIT_S`, refuse the work that can wait (429 with a `Retry-After` from the
estimate) rather than let the queue grow.

Refused: `flex` work, and `default` work of a tenant already holding more than its fair
share of the queued tokens. Always admitted: `priority` work, `default` work of a tenant
under its share, and batch lines (their batch's window bounds them).
"""

from __future__ import annotations

import math
import threading
import time

import redis
import structlog

from services.core import metrics
from services.core.bands import Band
from services.core.errors import TooManyRequestsError
from services.core.fair_queue import FairQueue, Load
from services.core.job_spec import JobSpec
from services.core.runtime import Runtime

log = structlog.get_logger(__name__)
# The longest Retry-After the estimate gives: past it, a client should rather look again.
MAX_RETRY_AFTER_S = 600


def admit(runtime: Runtime, tenant_id: str, specs: list[JobSpec]) -> None:
    """Refuse (429) the specs' work if the model's queue is too long for it; see the module."""
    limit_s = runtime.settings.max_queue_wait_s
    bands = {spec.options.band for spec in specs}
    if limit_s <= 0 or not bands & {Band.DEFAULT, Band.FLEX}:
        return
    fair = runtime.broker.fair
    try:
        load = LOADS.get(fair)
        wait_s = load.wait_s
        if wait_s is None or wait_s <= limit_s:
            return
        if Band.FLEX not in bands and fair.queued_tokens_of(tenant_id) <= load.fair_share_tokens:
            return
    except redis.RedisError:
        return  # the enqueue will find out; admission is advice, not a dependency
    metrics.refused_by_limit("queue_wait")
    retry_after_s = min(MAX_RETRY_AFTER_S, max(1, math.ceil(wait_s - limit_s)))
    why = (
        "flex work is admitted only when the wait is shorter"
        if Band.FLEX in bands
        else "this API key already holds more than an equal share of the queued work"
    )
    raise TooManyRequestsError(
        f"the model's queue would keep this work waiting about {wait_s:.0f} s, over this "
        f"deployment's VLMQ_MAX_QUEUE_WAIT_S of {limit_s:g} s, and {why}: retry after "
        "Retry-After, or send the work as a batch",
        code="queue_wait_exceeded",
        retry_after_s=retry_after_s,
    )


class LoadCache:
    """Each model's load, read at most once per `ttl_s` by this process: admission needs an
    estimate, not a round trip per request."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._read: dict[str, tuple[float, Load]] = {}
        self._lock = threading.Lock()

    def get(self, fair: FairQueue) -> Load:
        """The model's load, as read within the last `ttl_s`."""
        with self._lock:
            found = self._read.get(fair.prefix)
        if found is not None and time.monotonic() - found[0] < self.ttl_s:
            return found[1]
        load = fair.load()
        with self._lock:
            self._read[fair.prefix] = (time.monotonic(), load)
        return load


LOADS = LoadCache(ttl_s=1.0)
