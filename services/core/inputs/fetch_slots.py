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

from services.core.outbound import OwnerSlots


def fetch_slots(total: int, per_tenant: int) -> OwnerSlots:
    """The process-wide fetch slots (one set per configured limits)."""
    with _LOCK:
        if (total, per_tenant) not in _SLOTS:
            _SLOTS[(total, per_tenant)] = OwnerSlots(total, per_tenant, "image downloads", ADVICE)
        return _SLOTS[(total, per_tenant)]


# What a tenant over its share is told.
ADVICE = " (VLMQ_TENANT_MAX_FETCHES); retry once they finish, or send the images as data URLs"
_SLOTS: dict[tuple[int, int], OwnerSlots] = {}
_LOCK = threading.Lock()
