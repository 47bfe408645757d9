"""Image fetch capacity of one process, shared fairly between tenants.

At most `VLMQ_MAX_CONCURRENT_FETCHES` image downloads run at once in a process, and one
tenant holds at most `VLMQ_TENANT_MAX_FETCHES` of them: a tenant whose image URLs are slow
is refused (`429 fetch_quota_exceeded`) for its own next fetch, while the other tenants keep
the rest of the slots. Only when every slot is taken by several tenants is a fetch refused
for capacity (`503 fetch_capacity_exceeded`). Whose fetch it is comes from
`services.core.outbound.fetching_for`, set by whoever builds a tenant's jobs (the API's
submit path, a batch's expansion).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from services.core.errors import ServiceUnavailableError, TooManyRequestsError
from services.core.outbound import FETCHING_FOR


class FetchSlots:
    """The fetches running in this process, in all and per tenant."""

    def __init__(self, total: int, per_tenant: int) -> None:
        self.total = max(1, total)
        self.per_tenant = max(1, per_tenant)
        self.running: Counter[str | None] = Counter()
        self.lock = threading.Lock()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot for one fetch of the current tenant, or refuse at once."""
        tenant = FETCHING_FOR.get()
        with self.lock:
            if tenant is not None and self.running[tenant] >= self.per_tenant:
                raise TooManyRequestsError(
                    f"this API key's tenant already has {self.per_tenant} image downloads in "
                    "progress (VLMQ_TENANT_MAX_FETCHES); retry once they finish, or send the "
                    "images as data URLs",
                    code="fetch_quota_exceeded",
                    retry_after_s=1,
                )
            if sum(self.running.values()) >= self.total:
                raise ServiceUnavailableError(
                    "too many image downloads are in progress; retry shortly",
                    code="fetch_capacity_exceeded",
                    retry_after_s=1,
                )
            self.running[tenant] += 1
        try:
            yield
        finally:
            with self.lock:
                self.running[tenant] -= 1
                if self.running[tenant] <= 0:
                    del self.running[tenant]


def fetch_slots(total: int, per_tenant: int) -> FetchSlots:
    """The process-wide fetch slots (one set per configured limits)."""
    with _LOCK:
        return _SLOTS.setdefault((total, per_tenant), FetchSlots(total, per_tenant))


_SLOTS: dict[tuple[int, int], FetchSlots] = {}
_LOCK = threading.Lock()
