"""Held-open requests per tenant: synchronous calls and streams, each holding one of the API
process's threads until its jobs end (up to `sync_timeout_s`).

A tenant holds at most `VLMQ_TENANT_MAX_WAITING` of them at once in each API process: the
threads are the process's, so that is where they are counted (in memory, no round trip).
Over the cap, a call that must wait is refused with `429` before anything is queued; the
other tenants, and the health checks, keep the rest of the process's threads. All tenants
together hold at most the process's threads less `SHORT_CALL_THREADS`, so that a short call
(a submit, a poll, a health check) always finds a thread however many tenants wait.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from services.core.errors import TooManyRequestsError
from services.core.runtime import Runtime

# Threads of an API process that held-open requests never take.
SHORT_CALL_THREADS = 8


class WaitingSlots:
    """The held-open requests of each tenant in this process."""

    def __init__(self) -> None:
        self.held: Counter[str] = Counter()
        self.lock = threading.Lock()

    def take(self, tenant_id: str, cap: int, process_cap: int) -> str | None:
        """Count one more held-open request of the tenant; or, when the tenant holds `cap`
        already or the process `process_cap`, the setting that refuses it."""
        with self.lock:
            if cap > 0 and self.held[tenant_id] >= cap:
                return "VLMQ_TENANT_MAX_WAITING"
            if sum(self.held.values()) >= process_cap:
                return "VLMQ_API_THREADS"
            self.held[tenant_id] += 1
            return None

    def give_back(self, tenant_id: str) -> None:
        """One of the tenant's held-open requests ended."""
        with self.lock:
            self.held[tenant_id] -= 1
            if self.held[tenant_id] <= 0:
                del self.held[tenant_id]


SLOTS = WaitingSlots()


class WaitingSlot:
    """One held-open request of a tenant, until `release` (which may be called again)."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.released = False

    def release(self) -> None:
        """Free the slot (once the request's wait or stream ended)."""
        if not self.released:
            self.released = True
            SLOTS.give_back(self.tenant_id)


def take_slot(runtime: Runtime, tenant_id: str, *, refuse: bool = True) -> WaitingSlot | None:
    """One of the tenant's waiting slots in this process, or, when it holds all of
    `tenant_max_waiting` already, a `429` (None with `refuse=False`: the caller answers
    without waiting)."""
    settings = runtime.settings
    cap = settings.tenant_max_waiting
    process_cap = max(1, settings.api_threads - SHORT_CALL_THREADS)
    limit = SLOTS.take(tenant_id, cap, process_cap)
    if limit is None:
        return WaitingSlot(tenant_id)
    if not refuse:
        return None
    if limit == "VLMQ_TENANT_MAX_WAITING":
        held = f"this API key's tenant already holds {cap}"
    else:
        held = f"this server's tenants together hold {process_cap}"
    raise TooManyRequestsError(
        f"{held} synchronous calls and streams open on this server ({limit}); wait for one "
        "to end, or submit without waiting and poll",
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
