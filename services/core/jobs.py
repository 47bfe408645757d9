"""The job service: submit, read, list, cancel, and the worker-side state transitions.

Every transition is one conditional UPDATE, so duplicate deliveries, a stale attempt of
a killed worker, or a cancel racing a finish can never overwrite a terminal result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.core import cache, events
from services.core.db import session_scope, utcnow
from services.core.errors import (
    InvalidRequestError,
    NotFoundError,
    ServiceUnavailableError,
    SyncTimeoutError,
)
from services.core.idempotency import IdempotencyClaim
from services.core.ids import new_id
from services.core.images import CheckedImage
from services.core.job_events import job_finished, job_started
from services.core.model_info import model_revision
from services.core.models import TERMINAL_STATUSES, Image, Job, JobStatus
from services.core.pagination import newest_first_page
from services.core.prompts import CanonicalRequest, GenerationParams
from services.core.queue import enqueue_job
from services.core.runtime import Runtime

log = logging.getLogger(__name__)

NON_TERMINAL = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]


def rows_changed(session: Session, statement: sa.Update) -> int:
    """Execute an UPDATE and return how many rows it changed."""
    result: sa.CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
    return int(result.rowcount)


def elapsed_ms(start: datetime | None, end: datetime | None) -> float | None:
    """Milliseconds between two timestamps, if both are known."""
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 3)


def store_images(session: Session, images: list[CheckedImage]) -> None:
    """Insert images by content hash; an image already stored is kept as it is."""
    if not images:
        return
    rows = [
        {
            "sha256": image.sha256,
            "media_type": image.media_type,
            "width": image.width,
            "height": image.height,
            "byte_size": len(image.data),
            "data": image.data,
            "created_at": utcnow(),
        }
        for image in {image.sha256: image for image in images}.values()
    ]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(Image).values(rows).on_conflict_do_nothing(index_elements=["sha256"]))


@dataclass(frozen=True)
class SubmitOptions:
    """Everything about a submission besides the request and its generation parameters."""

    kind: str = "job"
    metadata: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    webhook: str | None = None
    webhook_events: list[str] | None = None
    batch_id: str | None = None
    custom_id: str | None = None
    # Batch work yields to interactive work (see `enqueue_job`).
    background: bool = False
    idempotency: IdempotencyClaim | None = None
    moderation: dict[str, Any] | None = None


def new_job(
    runtime: Runtime,
    tenant_id: str,
    request: CanonicalRequest,
    params: GenerationParams,
    options: SubmitOptions,
    cache_key: str | None,
) -> Job:
    """A job row (not yet stored) for a submission."""
    now = utcnow()
    return Job(
        id=new_id("job"),
        tenant_id=tenant_id,
        kind=options.kind,
        model=runtime.settings.model_id,
        messages=request.messages,
        params=params.model_dump(mode="json"),
        status=JobStatus.QUEUED.value,
        cache_key=cache_key,
        stream=options.stream,
        metadata_=options.metadata,
        webhook=options.webhook,
        webhook_events=options.webhook_events,
        batch_id=options.batch_id,
        custom_id=options.custom_id,
        moderation=options.moderation,
        metrics={},
        attempts=0,
        created_at=now,
        enqueued_at=now,
    )


def request_cache_key(
    runtime: Runtime, tenant_id: str, request: CanonicalRequest, params: GenerationParams
) -> str | None:
    """The cache key of a deterministic request; None for one that samples freely."""
    if not cache.is_cacheable(params):
        return None
    return cache.cache_key(
        model_revision=model_revision(runtime.settings.model),
        messages=request.messages,
        params=params,
        tenant_id=None if runtime.settings.cache_shared else tenant_id,
    )


def submit_job(
    runtime: Runtime,
    tenant_id: str,
    request: CanonicalRequest,
    params: GenerationParams,
    options: SubmitOptions | None = None,
) -> Job:
    """Create a job: answer it from the cache, or commit the row and then enqueue it."""
    options = options or SubmitOptions()
    key = request_cache_key(runtime, tenant_id, request, params)
    cached = None
    if key is not None:
        try:
            cached = cache.get_cached(runtime.redis, key)
        except redis.RedisError as exc:
            raise ServiceUnavailableError("the queue (Redis) is unavailable") from exc
    job = new_job(runtime, tenant_id, request, params, options, key)
    if cached is not None:
        # A hit is born succeeded and never reaches a worker.
        job.status = JobStatus.SUCCEEDED.value
        job.output = cached.get("output")
        job.result = cached.get("result")
        job.cache_hit = True
        job.started_at = job.completed_at = job.created_at
        job.enqueued_at = None
        job.metrics = {"queue_ms": 0.0, "inference_ms": 0.0, "total_ms": 0.0}
    with session_scope(runtime.sessions) as session:
        store_images(session, request.images)
        session.add(job)
        if options.idempotency is not None:
            options.idempotency.record(session, job.id)
    if cached is not None:
        job_finished(runtime, job.id)
        return job
    # Enqueue only after the commit: a worker must always find the row. If Redis is down
    # now, the job stays queued and the reconciler enqueues it later.
    try:
        enqueue_job(runtime.celery, runtime.settings, job.id, background=options.background)
    except Exception:
        log.exception("event=enqueue_failed job_id=%s (the reconciler will retry)", job.id)
    return job


def get_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """The tenant's job, or a 404 (also for another tenant's job)."""
    job = session.get(Job, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise NotFoundError(f"no job {job_id!r}", param="id")
    return job


def list_jobs(
    session: Session, tenant_id: str, *, status: str | None, limit: int, after: str | None
) -> tuple[list[Job], bool]:
    """A page of the tenant's jobs, newest first, after the job id `after`; and has_more."""
    if status is not None and status not in {s.value for s in JobStatus}:
        raise InvalidRequestError(f"unknown status {status!r}", param="status")
    query = sa.select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status)
    cursor = get_job(session, tenant_id, after) if after is not None else None
    return newest_first_page(session, Job, query, cursor, limit)


def cancel_job(runtime: Runtime, tenant_id: str, job_id: str) -> Job:
    """Cancel a queued or running job; a job already terminal is returned unchanged."""
    with session_scope(runtime.sessions) as session:
        get_job(session, tenant_id, job_id)
        now = utcnow()
        changed = rows_changed(
            session,
            sa.update(Job)
            .where(Job.id == job_id, Job.status.in_(NON_TERMINAL))
            .values(status=JobStatus.CANCELED.value, completed_at=now, lease_expires_at=None),
        )
    if changed:
        job_finished(runtime, job_id)
    with runtime.sessions() as session:
        return get_job(session, tenant_id, job_id)


# --- worker side -------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A worker's right to run one attempt of a job until its lease expires.

    It carries what the worker needs later, so finishing the job costs no extra read.
    """

    job_id: str
    attempt: int
    created_at: datetime | None = None
    started_at: datetime | None = None
    has_webhook: bool = True
    in_batch: bool = True


def claim_job(runtime: Runtime, job_id: str) -> Claim | None:
    """Start an attempt: queued (or running with an expired lease) becomes running.

    Returns None when there is nothing to do: the job is gone, terminal, or running
    under a live lease (a duplicate delivery). A job that has used up its attempts fails.
    """
    settings = runtime.settings
    now = utcnow()
    with session_scope(runtime.sessions) as session:
        claimable = sa.or_(
            Job.status == JobStatus.QUEUED.value,
            sa.and_(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < now),
        )
        row = session.execute(
            sa.update(Job)
            .where(Job.id == job_id, claimable, Job.attempts < settings.max_attempts)
            .values(
                status=JobStatus.RUNNING.value,
                attempts=Job.attempts + 1,
                started_at=sa.func.coalesce(Job.started_at, now),
                lease_expires_at=now + timedelta(seconds=settings.lease_s),
            )
            .returning(Job.attempts, Job.created_at, Job.started_at, Job.webhook, Job.batch_id)
        ).first()
    if row is not None:
        claim = Claim(
            job_id,
            int(row.attempts),
            created_at=row.created_at,
            started_at=row.started_at,
            has_webhook=row.webhook is not None,
            in_batch=row.batch_id is not None,
        )
        if claim.attempt == 1 and claim.has_webhook:
            job_started(runtime, job_id)
        return claim
    with session_scope(runtime.sessions) as session:
        exhausted = session.scalar(
            sa.select(Job.id).where(
                Job.id == job_id, claimable, Job.attempts >= settings.max_attempts
            )
        )
    if exhausted:
        give_up_job(runtime, job_id)
    return None


def finish_job(
    runtime: Runtime,
    claim: Claim,
    *,
    output: str,
    result: dict[str, Any],
    inference_ms: float,
    cache_hit: bool = False,
    batch_size: int = 0,
) -> bool:
    """Record the answer of an attempt; False if the attempt is stale or the job was canceled."""
    now = utcnow()
    metrics = {
        "queue_ms": elapsed_ms(claim.created_at, claim.started_at),
        "inference_ms": round(inference_ms, 3),
        "total_ms": elapsed_ms(claim.created_at, now),
        # How many jobs shared this job's model call (0: it made none).
        "batch_size": batch_size,
    }
    with session_scope(runtime.sessions) as session:
        done = rows_changed(
            session,
            sa.update(Job)
            .where(
                Job.id == claim.job_id,
                Job.status == JobStatus.RUNNING.value,
                Job.attempts == claim.attempt,
            )
            .values(
                status=JobStatus.SUCCEEDED.value,
                output=output,
                result=result,
                cache_hit=cache_hit,
                metrics=metrics,
                completed_at=now,
                lease_expires_at=None,
            ),
        )
    if done:
        job_finished(runtime, claim.job_id, has_webhook=claim.has_webhook, in_batch=claim.in_batch)
    return bool(done)


def give_up_job(runtime: Runtime, job_id: str) -> bool:
    """Fail a job that has used up its attempts (it keeps killing its worker)."""
    attempts = runtime.settings.max_attempts
    message = f"the job stopped its worker {attempts} times and was given up"
    return fail_job(runtime, job_id, None, "worker_lost", message)


def fail_job(
    runtime: Runtime, job_id: str, claim: Claim | None, error_type: str, message: str
) -> bool:
    """Mark a job failed with `{type, message}`; a given claim must still be current."""
    now = utcnow()
    conditions = [Job.id == job_id, Job.status.in_(NON_TERMINAL)]
    if claim is not None:
        conditions.append(Job.attempts == claim.attempt)
    with session_scope(runtime.sessions) as session:
        done = rows_changed(
            session,
            sa.update(Job)
            .where(*conditions)
            .values(
                status=JobStatus.FAILED.value,
                error={"type": error_type, "message": message},
                completed_at=now,
                lease_expires_at=None,
            ),
        )
    if done:
        job_finished(runtime, job_id)
    return bool(done)


def is_terminal(runtime: Runtime, job_id: str) -> bool:
    """Whether the job has reached a terminal state (read from the database)."""
    with runtime.sessions() as session:
        status = session.scalar(sa.select(Job.status).where(Job.id == job_id))
    return status is None or JobStatus(status) in TERMINAL_STATUSES


def wait_until_terminal(runtime: Runtime, job: Job, timeout_s: float) -> tuple[Job, bool]:
    """The job once terminal (woken by its notification), or as it is after `timeout_s`.

    Returns the job as last read and whether it is terminal. Each check is one read.
    """
    if JobStatus(job.status).is_terminal():
        return job, True
    latest = [job]

    def terminal_now() -> bool:
        with runtime.sessions() as session:
            latest.append(get_job(session, job.tenant_id, job.id))
        return JobStatus(latest[-1].status).is_terminal()

    done = events.wait_for_job(runtime.redis, job.id, terminal_now, timeout_s)
    return latest[-1], done


def wait_for_result(runtime: Runtime, job: Job, timeout_s: float) -> Job:
    """The terminal job; a 504 after `timeout_s` (the job goes on)."""
    job, done = wait_until_terminal(runtime, job, timeout_s)
    if not done:
        raise SyncTimeoutError(f"job {job.id} did not finish in time; poll /v1/jobs/{job.id}")
    return job
