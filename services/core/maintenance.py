"""The one periodic maintenance pass: re-enqueue lost jobs, re-send lost webhook deliveries,
resume stalled batches.

The database is the source of truth. A running job whose lease expired lost its worker;
a queued job not picked up for a while may have lost its message (Redis restarted empty).
Re-enqueueing is always safe: claiming a job is idempotent, and so is claiming a webhook
delivery attempt or running a batch task again.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa

from services.core.batches.expand import expanding_key
from services.core.broker import BATCH_EXPAND_TASK, BATCH_PROGRESS_TASK
from services.core.db import utcnow
from services.core.jobs.lifecycle import give_up_job
from services.core.models import Batch, BatchStatus, Job, JobStatus
from services.core.runtime import Runtime
from services.core.webhooks.scheduling import resend_lost_deliveries

log = logging.getLogger(__name__)
LOCK_PREFIX = "vlmq:maintenance-lock:"
# At most this many lost jobs are handled per pass.
REQUEUE_BATCH = 500


def requeue_lost_jobs(runtime: Runtime) -> int:
    """Re-enqueue lost jobs of this deployment's model (failing those out of attempts);
    returns how many were re-enqueued."""
    settings = runtime.settings
    now = utcnow()
    expired = sa.and_(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < now)
    stale_queued = sa.and_(
        Job.status == JobStatus.QUEUED.value,
        Job.enqueued_at < now - timedelta(seconds=settings.requeue_after_s),
    )
    with runtime.unit_of_work() as session:
        lost = list(
            session.execute(
                sa.select(Job.id, Job.attempts, Job.batch_id)
                .where(Job.model == settings.model_id, sa.or_(expired, stale_queued))
                .limit(REQUEUE_BATCH)
            )
        )
        exhausted = [job_id for job_id, attempts, _ in lost if attempts >= settings.max_attempts]
        retry = [job_id for job_id, attempts, _ in lost if attempts < settings.max_attempts]
        in_batch = {job_id for job_id, _, batch_id in lost if batch_id is not None}
        if retry:
            session.execute(
                sa.update(Job)
                .where(Job.id.in_(retry), sa.or_(expired, stale_queued))
                .values(status=JobStatus.QUEUED.value, enqueued_at=now, lease_expires_at=None)
            )
        for job_id in exhausted:
            give_up_job(session, settings, job_id)
    for job_id in retry:
        runtime.broker.enqueue_job(job_id, background=job_id in in_batch)
        log.info("event=requeued job_id=%s", job_id)
    return len(retry)


def resume_stalled_batches(runtime: Runtime) -> None:
    """Restart lost expansions and re-check running batches.

    Both tasks are idempotent, so sending one that was not lost costs only a query.
    """
    stale = utcnow() - timedelta(seconds=runtime.settings.requeue_after_s)
    unfinished = [BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING]
    with runtime.sessions() as session:
        rows = list(
            session.execute(
                sa.select(Batch.id, Batch.status, Batch.created_at).where(
                    Batch.status.in_([status.value for status in unfinished])
                )
            )
        )
    for batch_id, status, created_at in rows:
        if status != BatchStatus.VALIDATING:
            runtime.broker.send_batch_task(BATCH_PROGRESS_TASK, batch_id)
        elif created_at < stale and not runtime.redis.exists(expanding_key(batch_id)):
            runtime.broker.send_batch_task(BATCH_EXPAND_TASK, batch_id)


def run_pass(runtime: Runtime) -> int:
    """One maintenance pass; returns how many jobs were re-enqueued."""
    requeued = requeue_lost_jobs(runtime)
    # Lost webhooks and stalled batches wait for the next pass if this fails; the jobs
    # above are already handled.
    try:
        resend_lost_deliveries(runtime)
    except Exception:
        log.exception("event=webhook_resend_failed")
    try:
        resume_stalled_batches(runtime)
    except Exception:
        log.exception("event=batch_resume_failed")
    return requeued


def run_pass_if_leader(runtime: Runtime) -> int:
    """Run one pass unless another worker of the same model holds the lock for this interval."""
    interval = max(1, int(runtime.settings.reconcile_interval_s))
    lock = LOCK_PREFIX + runtime.settings.model_id
    if not runtime.redis.set(lock, b"1", nx=True, ex=interval):
        return 0
    return run_pass(runtime)
