"""The one periodic maintenance pass: re-enqueue lost jobs, expire jobs past their queue
deadline, re-send lost webhook deliveries, resume stalled batches, prune what the retention
settings no longer keep.

The database is the source of truth. A running job whose lease expired lost its worker;
a queued job not picked up for a while may have lost its place in the fair queue (Redis
restarted empty).
Re-enqueueing is always safe: claiming a job is idempotent, and so is claiming a webhook
delivery attempt or running a batch task again.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
import structlog

from services.core import outbox, retention
from services.core.bands import Band
from services.core.batches.expand import expanding_key
from services.core.broker import BATCH_EXPAND_TASK, BATCH_PROGRESS_TASK
from services.core.db import utcnow
from services.core.fair_queue import QueuedWork, set_weights
from services.core.heartbeats import live_background_workers
from services.core.jobs.lifecycle import expire_jobs, give_up_job
from services.core.runtime import Runtime
from services.core.tables import Batch, BatchStatus, Job, JobStatus
from services.core.tenant_admin import weights
from services.core.webhooks.scheduling import resend_lost_deliveries

log = structlog.get_logger(__name__)
LOCK_PREFIX = "vlmq:maintenance-lock:"
# At most this many lost jobs, and outbox events, are handled per pass.
REQUEUE_BATCH = 500
OUTBOX_BATCH = 500
# An outbox row younger than this is still being carried out by the process that wrote it.
OUTBOX_GRACE_S = 10.0
# Pruning runs at most this often in the whole deployment (each model's workers elect a
# leader of their own, and old rows do not need a pass every few seconds).
PRUNE_LOCK = "vlmq:prune-lock"
PRUNE_EVERY_S = 60


def requeue_lost_jobs(runtime: Runtime) -> int:
    """Re-enqueue the lost jobs of this deployment's model; returns how many were re-sent.

    Lost: running under a lapsed lease (its worker died), or queued for a while and neither
    waiting in the fair queue nor held by a worker about to claim it (Redis restarted empty,
    or a worker died between taking it and claiming it). Any other queued job is merely
    waiting in a backlog: it is not re-sent, only moved to the back of this scan.
    A lost job out of attempts fails.
    """
    settings = runtime.settings
    now = utcnow()
    # A lease counts as lapsed half a lease after it ran out: a renewal held up by a short
    # database outage still comes first, so a live worker's job never runs twice.
    lapsed = sa.and_(
        Job.status == JobStatus.RUNNING.value,
        Job.lease_expires_at < now - timedelta(seconds=settings.lease_s / 2),
    )
    waiting = sa.and_(
        Job.status == JobStatus.QUEUED.value,
        Job.enqueued_at < now - timedelta(seconds=settings.requeue_after_s),
    )
    columns = (Job.id, Job.attempts, Job.batch_id, Job.tenant_id, Job.band, Job.cost_tokens)
    with runtime.sessions() as session:
        # Two scans: dead workers' jobs are found at once, however long the backlog is.
        dead = session.execute(
            sa.select(*columns).where(Job.model == settings.model_id, lapsed).limit(REQUEUE_BATCH)
        ).all()
        queued = session.execute(
            sa.select(*columns)
            .where(Job.model == settings.model_id, waiting)
            .order_by(Job.enqueued_at)
            .limit(REQUEUE_BATCH)
        ).all()
    gone = set(runtime.broker.fair.missing([row.id for row in queued]))
    lost = [*dead, *(row for row in queued if row.id in gone)]
    exhausted = [row.id for row in lost if row.attempts >= settings.max_attempts]
    retry = {row.id: row for row in lost if row.attempts < settings.max_attempts}
    with runtime.unit_of_work() as session:
        if still_waiting := [row.id for row in queued if row.id not in gone]:
            session.execute(
                sa.update(Job).where(Job.id.in_(still_waiting), waiting).values(enqueued_at=now)
            )
        requeued = []
        if retry:
            requeued = list(
                session.scalars(
                    sa.update(Job)
                    .where(Job.id.in_(list(retry)), sa.or_(lapsed, waiting))
                    .values(status=JobStatus.QUEUED.value, enqueued_at=now, lease_expires_at=None)
                    .returning(Job.id)
                )
            )
        for job_id in exhausted:
            give_up_job(session, settings, job_id, only_if=sa.or_(lapsed, waiting))
    # A batch line that was running when its worker died goes in a chunk of its own: it
    # may be what killed the worker, and must not take innocent lines down with it again.
    runtime.broker.enqueue_jobs(
        [
            QueuedWork(
                row.id,
                row.tenant_id,
                Band(row.band),
                int(row.cost_tokens),
                alone=row.attempts > 0 and row.batch_id is not None,
            )
            for row in (retry[job_id] for job_id in requeued)
        ]
    )
    for job_id in requeued:
        log.info("requeued", job_id=job_id)
    return len(requeued)


def expire_overdue_jobs(runtime: Runtime) -> int:
    """End the queued jobs of this model past their queue deadline (`max_queue_ms`) as
    `expired`, and take them out of the fair queue; returns how many."""
    with runtime.sessions() as session:
        overdue = list(
            session.scalars(
                sa.select(Job.id)
                .where(
                    Job.model == runtime.settings.model_id,
                    Job.status == JobStatus.QUEUED.value,
                    Job.queue_deadline_at < utcnow(),
                )
                .limit(REQUEUE_BATCH)
            )
        )
    if not overdue:
        return 0
    with runtime.unit_of_work() as session:
        expired = expire_jobs(session, overdue)
    for job_id in expired:
        runtime.broker.fair.remove(job_id)
    return len(expired)


def sync_tenant_weights(runtime: Runtime) -> None:
    """Give the scheduler the tenants' weights as the database holds them (Redis may have
    restarted empty since `vlmq tenants set` wrote them)."""
    with runtime.sessions() as session:
        set_weights(runtime.redis, weights(session))


def resume_stalled_batches(runtime: Runtime) -> None:
    """Send every unfinished batch a progress check (it expires an overdue one, finalizes a
    finished one, resumes a finalization whose finalizer died), and restart expansions
    that stopped.

    Both tasks are idempotent, so sending one that was not needed costs only a query.
    """
    if not live_background_workers(runtime.redis):
        return  # nobody would take the tasks: sending them would only pile them up
    stale = utcnow() - timedelta(seconds=runtime.settings.requeue_after_s)
    unfinished = [status.value for status in BatchStatus if not status.is_terminal()]
    with runtime.sessions() as session:
        rows = session.execute(
            sa.select(Batch.id, Batch.status, Batch.created_at).where(Batch.status.in_(unfinished))
        ).all()
    for batch_id, status, created_at in rows:
        runtime.broker.send_batch_task(BATCH_PROGRESS_TASK, batch_id)
        if (
            status == BatchStatus.VALIDATING
            and created_at < stale
            and not runtime.redis.exists(expanding_key(batch_id))
        ):
            runtime.broker.send_batch_task(BATCH_EXPAND_TASK, batch_id)


def drain_outbox(runtime: Runtime) -> int:
    """Carry out the outbox events left behind (their process died between the commit and
    the hand-off, or a consequence failed); returns how many were found."""
    with runtime.sessions.begin() as session:
        left = outbox.left_behind(session, OUTBOX_GRACE_S, OUTBOX_BATCH)
    if left:
        log.info("outbox_drain", events=len(left))
        runtime.on_events(runtime, left)
    return len(left)


def prune_if_due(runtime: Runtime) -> dict[str, int]:
    """Run the pruning pass unless one ran in the last `PRUNE_EVERY_S`; returns the rows
    deleted per kind (empty when it did not run)."""
    if not runtime.redis.set(PRUNE_LOCK, b"1", nx=True, ex=PRUNE_EVERY_S):
        return {}
    return retention.prune(runtime)


def run_pass(runtime: Runtime) -> int:
    """One maintenance pass; returns how many jobs were re-enqueued."""
    requeued = requeue_lost_jobs(runtime)
    # Each part waits for the next pass if it fails; the jobs above are already handled.
    try:
        expire_overdue_jobs(runtime)
        sync_tenant_weights(runtime)
    except Exception:
        log.exception("fair_queue_upkeep_failed")
    try:
        drain_outbox(runtime)
    except Exception:
        log.exception("outbox_drain_failed")
    try:
        resend_lost_deliveries(runtime)
    except Exception:
        log.exception("webhook_resend_failed")
    try:
        resume_stalled_batches(runtime)
    except Exception:
        log.exception("batch_resume_failed")
    try:
        prune_if_due(runtime)
    except Exception:
        log.exception("prune_failed")
    return requeued


def run_pass_if_leader(runtime: Runtime) -> int:
    """Run one pass unless another worker of the same model holds the lock for this interval."""
    interval = max(1, int(runtime.settings.reconcile_interval_s))
    lock = LOCK_PREFIX + runtime.settings.model_id
    if not runtime.redis.set(lock, b"1", nx=True, ex=interval):
        return 0
    return run_pass(runtime)
