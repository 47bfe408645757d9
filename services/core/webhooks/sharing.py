"""Webhook delivery shared fairly between tenants, in each background worker process.

- A tenant has at most `VLMQ_TENANT_MAX_DELIVERIES` attempts in progress at once: a tenant
  whose endpoint hangs holds that many of the process's threads, and other tenants' events
  keep the rest.
- A receiving endpoint (host and port) that failed `VLMQ_WEBHOOK_BREAKER_FAILURES` attempts
  in a row (timeouts, refused or reset connections, 5xx) is paused for
  `VLMQ_WEBHOOK_BREAKER_PAUSE_S`; then one attempt probes it, and a success closes the
  breaker. Attempts that find their endpoint paused wait unmade: an endpoint that is down
  costs its deliveries time, not attempts.

An attempt that finds no room is sent again later under the same number, before it is
claimed (see `services.core.webhooks.delivery.deliver`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class HostState:
    """A receiving host's recent attempts."""

    failures: int = 0
    paused_until: float = 0.0
    probing: bool = False


class DeliverySharing:
    """Attempts in progress per tenant, and each host's breaker, in this process."""

    def __init__(self, breaker_failures: int = 5, breaker_pause_s: float = 30.0) -> None:
        # 0 failures: no breaker.
        self.breaker_failures = breaker_failures
        self.breaker_pause_s = breaker_pause_s
        self.running: Counter[str] = Counter()
        self.hosts: dict[str, HostState] = {}
        self.lock = threading.Lock()

    @contextmanager
    def attempt(self, tenant_id: str, host: str, per_tenant: int) -> Iterator[float]:
        """Hold one of the tenant's attempt slots for the block, yielding 0; or, without
        one (the tenant's slots are taken, or the host is paused), yield the seconds after
        which to try again, holding nothing."""
        wait_s = self._take(tenant_id, host, per_tenant)
        if wait_s > 0:
            yield wait_s
            return
        try:
            yield 0.0
        finally:
            with self.lock:
                self.running[tenant_id] -= 1
                if self.running[tenant_id] <= 0:
                    del self.running[tenant_id]

    def _take(self, tenant_id: str, host: str, per_tenant: int) -> float:
        now = time.monotonic()
        with self.lock:
            state = self.hosts.setdefault(host, HostState())
            if state.paused_until > now:
                return state.paused_until - now
            if self.breaking(state):
                # The pause is over: one attempt probes the host, the others wait for it.
                if state.probing:
                    return 1.0
                state.probing = True
            if per_tenant > 0 and self.running[tenant_id] >= per_tenant:
                if state.probing and self.breaking(state):
                    state.probing = False
                return 1.0
            self.running[tenant_id] += 1
            return 0.0

    def record(self, host: str, *, failed: bool) -> None:
        """Count an attempt's outcome against its host (a failure of the receiver's own:
        no answer, or a 5xx)."""
        with self.lock:
            state = self.hosts.setdefault(host, HostState())
            state.probing = False
            if not failed:
                state.failures = 0
                state.paused_until = 0.0
                return
            state.failures += 1
            if self.breaking(state):
                state.paused_until = time.monotonic() + self.breaker_pause_s

    def breaking(self, state: HostState) -> bool:
        """Whether the endpoint failed often enough in a row to be paused."""
        return 0 < self.breaker_failures <= state.failures

    def paused_hosts(self) -> list[str]:
        """The hosts paused now (for logs and tests)."""
        now = time.monotonic()
        with self.lock:
            return [host for host, state in self.hosts.items() if state.paused_until > now]


_SHARING: dict[tuple[int, float], DeliverySharing] = {}
_LOCK = threading.Lock()


def delivery_sharing(breaker_failures: int, breaker_pause_s: float) -> DeliverySharing:
    """The process-wide delivery state (one per breaker configuration)."""
    with _LOCK:
        key = (breaker_failures, breaker_pause_s)
        return _SHARING.setdefault(key, DeliverySharing(breaker_failures, breaker_pause_s))
