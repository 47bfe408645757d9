"""Tracking a batch to its end: counting its jobs, expiring it when its window passes, and
finalizing it (result files written, then the terminal status) once every job is done.

Every status change is a conditional UPDATE whose row count is checked, so two progress
checks at once finalize a batch once, and `output_file_id` never changes once set. A batch
left `finalizing` by a crash is finalized again by a later check. Progress checks are
debounced per batch: a 10,000-job batch gets a check every half second, not 10,000.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core import metrics, outbox
from services.core.batches.results import write_result_file
from services.core.broker import BATCH_PROGRESS_TASK
from services.core.config import Settings
from services.core.db import rows_changed, utcnow
from services.core.files import file_life_s
from services.core.runtime import Runtime
from services.core.tables import UNFINISHED_STATUSES, Batch, BatchStatus, File, Job, JobStatus

PROGRESS_DEBOUNCE_MS = 500
# Where a batch may expire from: expansion and running stop, queued lines are canceled.
EXPIRABLE = (BatchStatus.VALIDATING.value, BatchStatus.IN_PROGRESS.value)
# Where a batch may start finalizing from, once no line is unfinished.
FINALIZABLE = (BatchStatus.IN_PROGRESS.value, BatchStatus.CANCELLING.value)


# The lines that count as failed, and go to the error file.
UNSUCCESSFUL = (JobStatus.FAILED, JobStatus.CANCELED, JobStatus.EXPIRED)


def schedule_progress_check(runtime: Runtime, job_id: str) -> None:
    """A job reached a terminal state: if it belongs to a batch, schedule a progress check."""
    with runtime.sessions() as session:
        batch_id = session.scalar(sa.select(Job.batch_id).where(Job.id == job_id))
    if batch_id is not None:
        schedule_batch_progress(runtime, batch_id)


def schedule_batch_progress(runtime: Runtime, batch_id: str) -> None:
    """Some of the batch's jobs reached a terminal state: schedule a progress check (at most
    one per `PROGRESS_DEBOUNCE_MS`)."""
    if runtime.redis.set(f"vlmq:batch-progress:{batch_id}", b"1", nx=True, px=PROGRESS_DEBOUNCE_MS):
        runtime.broker.send_batch_task(BATCH_PROGRESS_TASK, batch_id, PROGRESS_DEBOUNCE_MS / 1000)


def job_counts(session: Session, batch_id: str) -> dict[str, int]:
    """How many of the batch's jobs are in each status."""
    rows = session.execute(
        sa.select(Job.status, sa.func.count()).where(Job.batch_id == batch_id).group_by(Job.status)
    )
    return {status: int(count) for status, count in rows}


def expire_if_overdue(session: Session, batch: Batch, model: str) -> bool:
    """Expire a batch whose completion window has passed: it becomes `cancelling` (ending
    `expired`) and its queued lines are canceled. True if it expired now."""
    now = utcnow()
    if batch.expires_at is None or now <= batch.expires_at:
        return False
    errors = {"object": "list", "data": [{"code": "expired", "message": "window passed"}]}
    expired = rows_changed(
        session,
        sa.update(Batch)
        .where(Batch.id == batch.id, Batch.status.in_(EXPIRABLE))
        .values(status=BatchStatus.CANCELLING.value, expired_at=now, errors=errors),
    )
    if expired:
        canceled = rows_changed(
            session,
            sa.update(Job)
            .where(Job.batch_id == batch.id, Job.status == JobStatus.QUEUED.value)
            .values(status=JobStatus.CANCELED.value, completed_at=now),
        )
        metrics.batch_lines_canceled(model, canceled, expired=True)
    return bool(expired)


def advance_batch(runtime: Runtime, batch_id: str) -> None:
    """Expire an overdue batch; update its counts; finalize it once its jobs are all done
    (or finish the finalization of one whose finalizer died)."""
    with runtime.unit_of_work() as session:
        ready = ready_to_finalize(session, batch_id, runtime.settings)
    if ready:
        finalize_batch(runtime, batch_id)


def ready_to_finalize(session: Session, batch_id: str, settings: Settings) -> bool:
    """Move the batch on as far as its jobs allow; True when it is now this caller's to
    finalize (it moved to `finalizing` here, or has been `finalizing` for
    `batch_finalize_stale_s`: its finalizer died)."""
    now = utcnow()
    batch = session.get(Batch, batch_id)
    if batch is None or BatchStatus(batch.status).is_terminal():
        return False
    if batch.status == BatchStatus.FINALIZING:
        # Take the finalization over (once: the next check finds it fresh again).
        stale_before = now - timedelta(seconds=settings.batch_finalize_stale_s)
        taken_over = rows_changed(
            session,
            sa.update(Batch)
            .where(
                Batch.id == batch_id,
                Batch.status == BatchStatus.FINALIZING.value,
                sa.or_(Batch.finalizing_at.is_(None), Batch.finalizing_at < stale_before),
            )
            .values(finalizing_at=now),
        )
        return bool(taken_over)
    # The status the decision rests on. The reads below may each see a later state than
    # this one (SQLite reads outside a write, and PostgreSQL's READ COMMITTED, take a fresh
    # snapshot per statement), so the move to `finalizing` is conditional on it: a batch
    # seen `validating` may have committed its lines and started since, and counts read
    # before that must not finalize it.
    seen = (
        BatchStatus.CANCELLING.value
        if expire_if_overdue(session, batch, settings.model_id)
        else batch.status
    )
    counts = job_counts(session, batch_id)
    failed = sum(counts.get(status.value, 0) for status in UNSUCCESSFUL)
    session.execute(
        sa.update(Batch)
        .where(Batch.id == batch_id)
        .values(completed=counts.get(JobStatus.SUCCEEDED.value, 0), failed=failed)
    )
    if seen not in FINALIZABLE or any(counts.get(status, 0) for status in UNFINISHED_STATUSES):
        return False
    finalizing = rows_changed(
        session,
        sa.update(Batch)
        .where(Batch.id == batch_id, Batch.status == seen)
        .values(status=BatchStatus.FINALIZING.value, finalizing_at=now),
    )
    return bool(finalizing)


def final_status_of(batch: Batch) -> BatchStatus:
    """Where a finalizing batch ends: expired, cancelled, or completed."""
    if batch.expired_at is not None:
        return BatchStatus.EXPIRED
    if batch.cancelling_at is not None:
        return BatchStatus.CANCELLED
    return BatchStatus.COMPLETED


def finalize_batch(runtime: Runtime, batch_id: str) -> None:
    """Write the output and error files, then close the batch, once: if another finalizer
    closed it first, the files written here are deleted again."""
    with runtime.sessions() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or batch.status != BatchStatus.FINALIZING:
            return
        session.expunge(batch)
    ok_statuses = [JobStatus.SUCCEEDED.value]
    bad_statuses = [status.value for status in UNSUCCESSFUL]
    life_s = file_life_s(runtime.settings, batch.output_expires_after_s)
    output = write_result_file(runtime.sessions, batch, ok_statuses, "batch_output.jsonl", life_s)
    errors = write_result_file(runtime.sessions, batch, bad_statuses, "batch_errors.jsonl", life_s)
    now = utcnow()
    final_status = final_status_of(batch)
    timestamps = {
        BatchStatus.COMPLETED: {"completed_at": now},
        BatchStatus.CANCELLED: {"cancelled_at": now},
        BatchStatus.EXPIRED: {"expired_at": batch.expired_at or now},
    }[final_status]
    with runtime.unit_of_work() as session:
        closed = rows_changed(
            session,
            sa.update(Batch)
            .where(Batch.id == batch_id, Batch.status == BatchStatus.FINALIZING.value)
            .values(
                status=final_status.value,
                output_file_id=output,
                error_file_id=errors,
                **timestamps,
            ),
        )
        if closed:
            outbox.emit(session, outbox.BatchFinished(batch_id))
        else:
            orphans = [file_id for file_id in (output, errors) if file_id is not None]
            session.execute(sa.delete(File).where(File.id.in_(orphans)))
