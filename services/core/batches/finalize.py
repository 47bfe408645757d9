"""Tracking a batch to its end: counting its jobs, expiring it when its window passes, and
finalizing it (result files written, then the terminal status) once every job is done.

Progress checks are debounced per batch: a 10,000-job batch gets a check every half
second, not 10,000.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core import outbox
from services.core.batches.results import write_result_file
from services.core.broker import BATCH_PROGRESS_TASK
from services.core.db import utcnow
from services.core.models import Batch, BatchStatus, Job, JobStatus
from services.core.runtime import Runtime

PROGRESS_DEBOUNCE_MS = 500


def schedule_progress_check(runtime: Runtime, job_id: str) -> None:
    """A job reached a terminal state: if it belongs to a batch, schedule a progress check."""
    with runtime.sessions() as session:
        batch_id = session.scalar(sa.select(Job.batch_id).where(Job.id == job_id))
    if batch_id is None:
        return
    if runtime.redis.set(f"vlmq:batch-progress:{batch_id}", b"1", nx=True, px=PROGRESS_DEBOUNCE_MS):
        runtime.broker.send_batch_task(BATCH_PROGRESS_TASK, batch_id, PROGRESS_DEBOUNCE_MS / 1000)


def job_counts(session: Session, batch_id: str) -> dict[str, int]:
    """How many of the batch's jobs are in each status."""
    rows = session.execute(
        sa.select(Job.status, sa.func.count()).where(Job.batch_id == batch_id).group_by(Job.status)
    )
    return {status: int(count) for status, count in rows}


def advance_batch(runtime: Runtime, batch_id: str) -> None:
    """Update the counts; expire an overdue batch; finalize one whose jobs are all done."""
    now = utcnow()
    with runtime.unit_of_work() as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            return
        status = BatchStatus(batch.status)
        if status.is_terminal() or status == BatchStatus.FINALIZING:
            return
        if (
            batch.expires_at is not None
            and now > batch.expires_at
            and status != BatchStatus.CANCELLING
        ):
            batch.status, batch.expired_at = BatchStatus.CANCELLING.value, now
            batch.errors = {
                "object": "list",
                "data": [{"code": "expired", "message": "window passed"}],
            }
            session.execute(
                sa.update(Job)
                .where(Job.batch_id == batch_id, Job.status == JobStatus.QUEUED.value)
                .values(status=JobStatus.CANCELED.value, completed_at=now)
            )
        counts = job_counts(session, batch_id)
        batch.completed = counts.get(JobStatus.SUCCEEDED.value, 0)
        batch.failed = counts.get(JobStatus.FAILED.value, 0) + counts.get(
            JobStatus.CANCELED.value, 0
        )
        unfinished = counts.get(JobStatus.QUEUED.value, 0) + counts.get(JobStatus.RUNNING.value, 0)
        if unfinished or batch.status not in (BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING):
            return
        final_status = final_status_of(batch)
        batch.status, batch.finalizing_at = BatchStatus.FINALIZING.value, now
    finalize_batch(runtime, batch_id, final_status)


def final_status_of(batch: Batch) -> BatchStatus:
    """Where a batch ends once its jobs are done."""
    if batch.status == BatchStatus.CANCELLING:
        return BatchStatus.EXPIRED if batch.expired_at is not None else BatchStatus.CANCELLED
    return BatchStatus.COMPLETED


def finalize_batch(runtime: Runtime, batch_id: str, final_status: BatchStatus) -> None:
    """Write the output and error files, then close the batch."""
    with runtime.sessions() as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            return
        session.expunge(batch)
    ok_statuses = [JobStatus.SUCCEEDED.value]
    bad_statuses = [JobStatus.FAILED.value, JobStatus.CANCELED.value]
    output = write_result_file(runtime.sessions, batch, ok_statuses, "batch_output.jsonl")
    errors = write_result_file(runtime.sessions, batch, bad_statuses, "batch_errors.jsonl")
    now = utcnow()
    timestamps = {
        BatchStatus.COMPLETED: {"completed_at": now},
        BatchStatus.CANCELLED: {"cancelled_at": now},
        BatchStatus.EXPIRED: {"expired_at": batch.expired_at or now},
    }[final_status]
    with runtime.unit_of_work() as session:
        session.execute(
            sa.update(Batch)
            .where(Batch.id == batch_id)
            .values(
                status=final_status.value,
                output_file_id=output,
                error_file_id=errors,
                **timestamps,
            )
        )
        outbox.emit(session, outbox.BatchFinished(batch_id))
