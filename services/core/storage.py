"""What a tenant keeps stored, against its quotas.

`VLMQ_TENANT_MAX_STORED_BYTES` counts a tenant's files (uploads, batch inputs, outputs and
error files) and the images its retained jobs brought (an image two jobs share counts for
each); `VLMQ_TENANT_MAX_OPEN_BATCHES` counts its batches that have not ended. Each write
that adds bytes is checked before anything is stored (`429 storage_quota_exceeded`, `429
batch_quota_exceeded`). The stored total is read from the database at most once a minute
per tenant and kept in Redis, where every accepted write adds to it; deletions and pruning
show up at the next read.
"""

from __future__ import annotations

from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core.errors import VlmqError
from services.core.runtime import Runtime
from services.core.tables import BATCH_TERMINAL_STATUSES, Batch, File, Job

KEY_PREFIX = "vlmq:stored-bytes:"
# How long a tenant's stored total read from the database is used.
CACHED_S = 60
# Add to a cached total only while it is cached (a total read later includes the write).
ADD_IF_CACHED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
return nil
"""


class QuotaExceededError(VlmqError):
    """429: the tenant keeps as much as its quota allows; retrying does not help until it
    deletes something or its data expires (OpenAI's `insufficient_quota`)."""

    status = 429
    type = "insufficient_quota"
    code = "storage_quota_exceeded"


def stored_bytes(session: Session, tenant_id: str) -> int:
    """The bytes the tenant keeps stored now: its files and its retained jobs' images."""
    files = sa.select(sa.func.coalesce(sa.func.sum(File.bytes), 0)).where(
        File.tenant_id == tenant_id
    )
    images = sa.select(sa.func.coalesce(sa.func.sum(Job.image_bytes), 0)).where(
        Job.tenant_id == tenant_id
    )
    return int(session.scalar(files) or 0) + int(session.scalar(images) or 0)


def open_batches(session: Session, tenant_id: str) -> int:
    """How many of the tenant's batches have not ended."""
    return int(
        session.scalar(
            sa.select(sa.func.count())
            .select_from(Batch)
            .where(
                Batch.tenant_id == tenant_id,
                Batch.status.not_in([status.value for status in BATCH_TERMINAL_STATUSES]),
            )
        )
        or 0
    )


def refuse_over_storage(runtime: Runtime, tenant_id: str, adding: int) -> None:
    """A 429 when storing `adding` more bytes would take the tenant over its quota."""
    cap = runtime.settings.tenant_max_stored_bytes
    if cap <= 0 or adding <= 0:
        return
    key = KEY_PREFIX + tenant_id
    cached = cast("bytes | None", runtime.redis.get(key))
    if cached is None:
        with runtime.sessions() as session:
            total = stored_bytes(session, tenant_id)
        runtime.redis.set(key, total, ex=CACHED_S, nx=True)
    else:
        total = int(cached)
    if total + adding > cap:
        raise QuotaExceededError(
            f"this API key's tenant stores {total} bytes and this request {adding} more; the "
            f"most allowed is {cap} (VLMQ_TENANT_MAX_STORED_BYTES): delete files, or wait for "
            "old jobs and files to expire",
        )


def count_stored(runtime: Runtime, tenant_id: str, added: int) -> None:
    """Add bytes just stored to the tenant's cached total (if it is cached)."""
    if added > 0:
        runtime.redis.eval(ADD_IF_CACHED, 1, KEY_PREFIX + tenant_id, added)


def refuse_over_open_batches(session: Session, settings: Any, tenant_id: str) -> None:
    """A 429 when the tenant has as many unfinished batches as it may."""
    cap = settings.tenant_max_open_batches
    if cap <= 0:
        return
    count = open_batches(session, tenant_id)
    if count >= cap:
        raise QuotaExceededError(
            f"this API key's tenant has {count} batches that have not ended; the most allowed "
            f"is {cap} (VLMQ_TENANT_MAX_OPEN_BATCHES): wait for one to end, or cancel one",
            code="batch_quota_exceeded",
        )
