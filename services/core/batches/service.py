"""The batch service: create, read, list and cancel batches.

Creating stores the batch and hands the expansion of its input file to a background task;
each input line then becomes one job, queued behind interactive work.
"""

from __future__ import annotations

from datetime import timedelta

import redis
import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from services.core import metrics, notify
from services.core.batches.expand import count_lines
from services.core.broker import BATCH_EXPAND_TASK, BATCH_PROGRESS_TASK
from services.core.db import rows_changed, utcnow
from services.core.errors import ConflictError, InvalidRequestError
from services.core.files import get_file
from services.core.idempotency import IdempotencyClaim
from services.core.ids import new_id
from services.core.logs import current_request_id
from services.core.pagination import newest_first_page
from services.core.runtime import Runtime
from services.core.storage import refuse_over_open_batches
from services.core.tables import UNFINISHED_STATUSES, Batch, BatchStatus, Job, JobStatus
from services.core.tenancy import get_owned
from services.core.webhooks.subscriptions import check_webhook_url

log = structlog.get_logger(__name__)

ENDPOINTS = ("/v1/chat/completions", "/v1/moderations", "/v1/responses")
COMPLETION_WINDOWS = {"24h": timedelta(hours=24)}
CANCELLABLE = (BatchStatus.VALIDATING.value, BatchStatus.IN_PROGRESS.value)


def create_batch(
    runtime: Runtime,
    tenant_id: str,
    *,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: dict[str, str] | None,
    webhook: str | None = None,
    idempotency: IdempotencyClaim | None = None,
    output_expires_after_s: int | None = None,
) -> Batch:
    """Validate and store a batch, then hand the expansion of its file to a background task.

    Its output and error files live `output_expires_after_s` (the file retention if None).
    """
    if webhook is not None:
        webhook = check_webhook_url(webhook, runtime.settings.outbound_allowed)
    if endpoint not in ENDPOINTS:
        raise InvalidRequestError(
            f"endpoint must be one of {', '.join(ENDPOINTS)}", param="endpoint"
        )
    if completion_window not in COMPLETION_WINDOWS:
        raise InvalidRequestError("completion_window must be '24h'", param="completion_window")
    now = utcnow()
    with runtime.sessions() as session:
        refuse_over_open_batches(session, runtime.settings, tenant_id)
        file = get_file(session, tenant_id, input_file_id)
        if file.purpose != "batch":
            raise InvalidRequestError(
                "the input file's purpose must be 'batch'", param="input_file_id"
            )
    # The line cap is a 400 here, before the batch exists (expansion checks it again).
    lines = count_lines(runtime, input_file_id)
    if lines > runtime.settings.max_batch_lines:
        raise InvalidRequestError(
            f"the input file has {lines} lines, more than the {runtime.settings.max_batch_lines}"
            " a batch may have",
            param="input_file_id",
        )
    with runtime.unit_of_work() as session:
        batch = Batch(
            id=new_id("batch"),
            tenant_id=tenant_id,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=completion_window,
            status=BatchStatus.VALIDATING.value,
            metadata_=metadata or {},
            webhook=webhook,
            output_expires_after_s=output_expires_after_s,
            request_id=current_request_id(),
            created_at=now,
            expires_at=now + COMPLETION_WINDOWS[completion_window],
        )
        session.add(batch)
        if idempotency is not None:
            idempotency.record(session, batch.id)
    send_after_commit(runtime, BATCH_EXPAND_TASK, batch.id)
    return batch


def get_batch(session: Session, tenant_id: str, batch_id: str) -> Batch:
    """The tenant's batch, or a 404."""
    return get_owned(session, Batch, tenant_id, batch_id, noun="batch", param="batch_id")


def list_batches(
    session: Session, tenant_id: str, *, limit: int, after: str | None
) -> tuple[list[Batch], bool]:
    """A page of the tenant's batches, newest first."""
    query = sa.select(Batch).where(Batch.tenant_id == tenant_id)
    cursor = get_batch(session, tenant_id, after) if after is not None else None
    return newest_first_page(session, Batch, query, cursor, limit)


def cancel_batch(runtime: Runtime, tenant_id: str, batch_id: str) -> Batch:
    """Stop a batch: it becomes `cancelling` (an expansion under way stops at its next page),
    its unfinished jobs are canceled, and it is finalized as `cancelled`. Cancelling again
    is a no-op; a batch already finalizing or ended is a 409."""
    now = utcnow()
    with runtime.unit_of_work() as session:
        batch = get_batch(session, tenant_id, batch_id)
        session.execute(
            sa.update(Batch)
            .where(Batch.id == batch_id, Batch.status.in_(CANCELLABLE))
            .values(status=BatchStatus.CANCELLING.value, cancelling_at=now)
        )
        session.refresh(batch)
        if batch.status != BatchStatus.CANCELLING:
            raise ConflictError(f"batch {batch_id} is already {batch.status}", param="batch_id")
        # Running jobs are canceled too: their answers, when they come, are dropped.
        canceled = rows_changed(
            session,
            sa.update(Job)
            .where(Job.batch_id == batch_id, Job.status.in_(UNFINISHED_STATUSES))
            .values(status=JobStatus.CANCELED.value, completed_at=now, lease_expires_at=None),
        )
        metrics.batch_lines_canceled(runtime.settings.model_id, canceled)
    try:
        # Lines decoding right now leave their batch at the next step.
        notify.publish_batch_canceled(runtime.redis, batch_id)
    except redis.RedisError:
        log.warning("publish_failed", batch_id=batch_id)
    send_after_commit(runtime, BATCH_PROGRESS_TASK, batch_id)
    return batch


def send_after_commit(runtime: Runtime, task: str, batch_id: str) -> None:
    """Send a batch task for a committed change; if the broker is down, the maintenance pass
    moves the batch on later (the change itself is done)."""
    try:
        runtime.broker.send_batch_task(task, batch_id)
    except Exception:
        log.exception("batch_task_send_failed", task=task, batch_id=batch_id)
