"""What a tenant keeps stored, against its quotas.

`VLMQ_TENANT_MAX_STORED_BYTES` counts a tenant's files (uploads, batch inputs, outputs and
error files) and the images its retained jobs brought (an image two jobs share counts for
each); `VLMQ_TENANT_MAX_OPEN_BATCHES` counts its batches that have not ended. Each write
that adds bytes is checked before anything is stored (`429 storage_quota_exceeded`, `429
batch_quota_exceeded`). Each API process reads a tenant's stored total from the database
at most once a minute and adds what it stores meanwhile (no round trip per request);
deletions, pruning and other processes' writes show up at the next read.
"""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core.config import Settings
from services.core.errors import QuotaExceededError
from services.core.runtime import Runtime
from services.core.tables import BATCH_TERMINAL_STATUSES, Batch, File, Job

# How long a tenant's stored total read from the database is used.
CACHED_S = 60.0


class StoredTotals:
    """Each tenant's stored bytes as this process last read them, plus what it stored since."""

    def __init__(self) -> None:
        self.totals: dict[str, tuple[int, float]] = {}
        self.lock = threading.Lock()

    def get(self, tenant_id: str) -> int | None:
        """The tenant's total, unless it is missing or older than `CACHED_S`."""
        with self.lock:
            total, read_at = self.totals.get(tenant_id, (0, -CACHED_S))
        return total if time.monotonic() - read_at < CACHED_S else None

    def put(self, tenant_id: str, total: int) -> None:
        """A total just read from the database."""
        with self.lock:
            self.totals[tenant_id] = (total, time.monotonic())

    def add(self, tenant_id: str, added: int) -> None:
        """Bytes this process just stored for the tenant."""
        with self.lock:
            if tenant_id in self.totals:
                total, read_at = self.totals[tenant_id]
                self.totals[tenant_id] = (total + added, read_at)


TOTALS = StoredTotals()


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
    total = TOTALS.get(tenant_id)
    if total is None:
        with runtime.sessions() as session:
            total = stored_bytes(session, tenant_id)
        TOTALS.put(tenant_id, total)
    if total + adding > cap:
        raise QuotaExceededError(
            f"this API key's tenant stores {total} bytes and this request {adding} more; the "
            f"most allowed is {cap} (VLMQ_TENANT_MAX_STORED_BYTES): delete files, or wait for "
            "old jobs and files to expire",
        )


def count_stored(tenant_id: str, added: int) -> None:
    """Add bytes just stored to this process's total of the tenant (if it has one)."""
    if added > 0:
        TOTALS.add(tenant_id, added)


def refuse_over_open_batches(session: Session, settings: Settings, tenant_id: str) -> None:
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
