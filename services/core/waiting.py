"""Held-open requests per tenant: synchronous calls and streams, each holding an API thread
until its jobs end (up to `sync_timeout_s`).

A tenant holds at most `VLMQ_TENANT_MAX_WAITING` of them at once, across every API process
(a sorted set per tenant in Redis, each entry expiring at its request's deadline, so a
process that dies mid-wait frees its entries then). Over the cap, a call that must wait is
refused with `429` before anything is queued; other tenants' calls, and the API's own
threads, stay free.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import redis

from services.core.errors import TooManyRequestsError
from services.core.runtime import Runtime

KEY_PREFIX = "vlmq:waiting:"
# Entries outlive their request's deadline by this much (a wait may end a little late).
GRACE_S = 30

# Drop expired entries, then add this one unless the tenant holds `cap` already.
ACQUIRE = """
local key, now, deadline, cap, token = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]),
  tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZCARD', key) >= cap then return 0 end
redis.call('ZADD', key, deadline, token)
redis.call('EXPIRE', key, math.ceil(deadline - now))
return 1
"""


class WaitingSlot:
    """One held-open request of a tenant, until `release`."""

    def __init__(self, client: redis.Redis, key: str, token: str) -> None:
        self.client, self.key, self.token = client, key, token

    def release(self) -> None:
        """Free the slot (once the request's wait or stream ended); if Redis is down, the
        entry expires at the request's deadline instead."""
        with suppress(redis.RedisError):
            self.client.zrem(self.key, self.token)


def take_slot(runtime: Runtime, tenant_id: str, *, refuse: bool = True) -> WaitingSlot | None:
    """A waiting slot of the tenant, or, when it holds all of `tenant_max_waiting` already,
    a `429` (None with `refuse=False`: the caller answers without waiting). No cap: a slot
    that holds nothing."""
    settings = runtime.settings
    key = f"{KEY_PREFIX}{tenant_id}"
    token = secrets.token_hex(8)
    cap = settings.tenant_max_waiting
    if cap <= 0:
        return WaitingSlot(runtime.redis, key, token)
    now = time.time()
    taken = runtime.redis.eval(
        ACQUIRE, 1, key, now, now + settings.sync_timeout_s + GRACE_S, cap, token
    )
    if taken:
        return WaitingSlot(runtime.redis, key, token)
    if not refuse:
        return None
    raise TooManyRequestsError(
        f"this API key's tenant already holds {cap} synchronous calls and streams open "
        "(VLMQ_TENANT_MAX_WAITING); wait for one to end, or submit without waiting and poll",
        code="waiting_limit_exceeded",
        retry_after_s=1,
    )


@contextmanager
def waiting(runtime: Runtime, tenant_id: str) -> Iterator[None]:
    """Hold one of the tenant's waiting slots for the block (a `429` when none is free)."""
    slot = take_slot(runtime, tenant_id)
    try:
        yield
    finally:
        if slot is not None:
            slot.release()
