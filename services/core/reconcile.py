"""The reconciler: re-enqueue jobs whose worker died or whose queue message was lost.

The database is the source of truth. A running job whose lease expired lost its worker;
a queued job not picked up for a while may have lost its message (Redis restarted empty).
Re-enqueueing is always safe: claiming a job is idempotent. The same pass re-sends webhook
deliveries whose message was lost (claiming a delivery attempt is idempotent too).
"""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa

from services.core import batches, webhooks
from services.core.db import session_scope, utcnow
from services.core.jobs import give_up_job
from services.core.models import Job, JobStatus
from services.core.queue import enqueue_job
from services.core.runtime import Runtime

log = logging.getLogger(__name__)
LOCK_PREFIX = "vlmq:reconciler-lock:"
BATCH = 500


def reconcile(runtime: Runtime) -> int:
    """One pass over lost jobs of this deployment's model; returns how many were re-enqueued."""
    settings = runtime.settings
    now = utcnow()
    expired = sa.and_(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < now)
    stale_queued = sa.and_(
        Job.status == JobStatus.QUEUED.value,
        Job.enqueued_at < now - timedelta(seconds=settings.requeue_after_s),
    )
    with session_scope(runtime.sessions) as session:
        lost = list(
            session.execute(
                sa.select(Job.id, Job.attempts, Job.batch_id)
                .where(Job.model == settings.model_id, sa.or_(expired, stale_queued))
                .limit(BATCH)
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
        give_up_job(runtime, job_id)
    for job_id in retry:
        enqueue_job(runtime.celery, settings, job_id, background=job_id in in_batch)
        log.info("event=requeued job_id=%s", job_id)
    # Lost webhooks and stalled batches wait for the next pass if this fails; the jobs
    # above are already handled.
    try:
        webhooks.resend_lost_deliveries(runtime)
    except Exception:
        log.exception("event=webhook_resend_failed")
    try:
        batches.resume_stalled(runtime)
    except Exception:
        log.exception("event=batch_resume_failed")
    return len(retry)


def reconcile_if_leader(runtime: Runtime) -> int:
    """Run one pass unless another worker of the same model holds the lock for this interval."""
    interval = max(1, int(runtime.settings.reconcile_interval_s))
    lock = LOCK_PREFIX + runtime.settings.model_id
    if not runtime.redis.set(lock, b"1", nx=True, ex=interval):
        return 0
    return reconcile(runtime)
