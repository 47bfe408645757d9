"""The job service: submit, read, list, cancel and wait for jobs.

Submitting answers a deterministic request from the cache when it can; otherwise the job
row is committed first and enqueued after, so a worker always finds the row (and if the
broker is down, the maintenance pass enqueues the job later).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from services.core import cache, logs, metrics, notify, outbox
from services.core.auth import live_key_query, note_use
from services.core.config import Settings
from services.core.db import rows_changed, utcnow
from services.core.errors import (
    AuthenticationError,
    InvalidRequestError,
    JobFailedError,
    ServiceUnavailableError,
    SyncTimeoutError,
    TooManyRequestsError,
)
from services.core.idempotency import IdempotencyClaim
from services.core.ids import new_id
from services.core.inputs.images import CheckedImage
from services.core.inputs.prompts import CanonicalRequest, GenerationParams, check_fits_context
from services.core.logs import current_request_id
from services.core.model_info import served_revision
from services.core.models import (
    UNFINISHED_STATUSES,
    ApiKey,
    Image,
    Job,
    JobStatus,
    image_hashes,
)
from services.core.pagination import newest_first_page
from services.core.runtime import Runtime
from services.core.tenancy import get_owned

log = structlog.get_logger(__name__)
# A tenant at its cap waits for jobs to finish: a second is a fair first guess.
QUOTA_RETRY_AFTER_S = 1


@dataclass(frozen=True)
class SubmitOptions:
    """Everything about a submission besides the request and its generation parameters."""

    kind: str = "job"
    # The model that answers: the base model's id (empty: the same) or a LoRA adapter's.
    model: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    webhook: str | None = None
    webhook_events: list[str] | None = None
    batch_id: str | None = None
    custom_id: str | None = None
    # Batch work yields to interactive work (see `Broker.enqueue_jobs`).
    background: bool = False
    idempotency: IdempotencyClaim | None = None
    moderation: dict[str, Any] | None = None


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
    # Rows as parameters (not one VALUES list): the compiled statement is cached.
    session.execute(insert(Image).on_conflict_do_nothing(index_elements=["sha256"]), rows)


def new_job(
    settings: Settings,
    tenant_id: str,
    request: CanonicalRequest,
    params: GenerationParams,
    options: SubmitOptions,
    cache_key: str | None,
) -> Job:
    """A job row (not yet stored) for a submission."""
    return Job(**new_job_values(settings, tenant_id, request, params, options, cache_key))


def new_job_values(
    settings: Settings,
    tenant_id: str,
    request: CanonicalRequest,
    params: GenerationParams,
    options: SubmitOptions,
    cache_key: str | None,
) -> dict[str, Any]:
    """The column values of a new job (by attribute name), for a bulk insert."""
    now = utcnow()
    return dict(
        id=new_id("job"),
        tenant_id=tenant_id,
        kind=options.kind,
        model=options.model or settings.model_id,
        messages=request.messages,
        params=params.model_dump(mode="json"),
        status=JobStatus.QUEUED.value,
        cache_key=cache_key,
        first_image=next(iter(image_hashes(request.messages)), None),
        stream=options.stream,
        metadata_=options.metadata,
        webhook=options.webhook,
        webhook_events=options.webhook_events,
        batch_id=options.batch_id,
        custom_id=options.custom_id,
        moderation=options.moderation,
        request_id=current_request_id(),
        metrics={},
        attempts=0,
        cache_hit=False,
        created_at=now,
        enqueued_at=now,
    )


def request_cache_key(
    settings: Settings,
    tenant_id: str,
    request: CanonicalRequest,
    params: GenerationParams,
    model: str = "",
) -> str | None:
    """The cache key of a deterministic request to `model` (empty: the base model); None
    for one that samples freely."""
    if not cache.is_cacheable(params):
        return None
    return cache.cache_key(
        model_revision=served_revision(settings, model or settings.model_id),
        messages=request.messages,
        params=params,
        tenant_id=None if settings.cache_shared else tenant_id,
    )


def mark_cache_hit(job: Job, cached: dict[str, Any]) -> None:
    """Make a new job a cache hit: born succeeded, never sent to a worker."""
    job.status = JobStatus.SUCCEEDED.value
    job.output = cached.get("output")
    job.result = cached.get("result")
    job.cache_hit = True
    job.started_at = job.completed_at = job.created_at
    job.enqueued_at = None
    job.metrics = {"queue_ms": 0.0, "inference_ms": 0.0, "total_ms": 0.0}


def add_job(session: Session, job: Job, images: list[CheckedImage], options: SubmitOptions) -> None:
    """Store a new job, its images and its idempotency key in the session's transaction."""
    store_images(session, images)
    session.add(job)
    if options.idempotency is not None:
        options.idempotency.record(session, job.id)
    if job.job_status.is_terminal():
        outbox.emit(session, outbox.JobFinished(job.id))


def unfinished_interactive_jobs(tenant_id: Any) -> sa.ScalarSelect[int]:
    """How many of the tenant's interactive jobs are unfinished (batch lines do not count:
    a batch has its own line cap); `tenant_id` is an id or a column holding one."""
    return (
        sa.select(sa.func.count())
        .select_from(Job)
        .where(
            Job.tenant_id == tenant_id,
            Job.status.in_(UNFINISHED_STATUSES),
            Job.batch_id.is_(None),
        )
        .scalar_subquery()
    )


def authenticate_submitter(
    session: Session, authorization: str | None, settings: Settings
) -> tuple[str, int]:
    """The tenant of a bearer key and its unfinished interactive jobs (0 when no cap is
    set), in one read: a submission is authenticated and checked against its quota at once."""
    query: sa.Select[Any] = live_key_query(authorization)
    if settings.tenant_max_queued > 0:
        query = query.add_columns(unfinished_interactive_jobs(ApiKey.tenant_id))
    row = session.execute(query).first()
    if row is None:
        raise AuthenticationError("invalid API key")
    note_use(session, row.id, row.last_used_at)
    return str(row.tenant_id), int(row[3]) if len(row) > 3 else 0


def check_queue_quota(
    session: Session, tenant_id: str, settings: Settings, adding: int = 1
) -> None:
    """A 429 when `adding` more jobs would take the tenant past `tenant_max_queued`."""
    if settings.tenant_max_queued > 0:
        unfinished = session.scalar(sa.select(unfinished_interactive_jobs(tenant_id)))
        refuse_over_quota(unfinished or 0, settings, adding)


def refuse_over_quota(unfinished: int, settings: Settings, adding: int = 1) -> None:
    """A 429 when `adding` jobs to the tenant's `unfinished` would pass `tenant_max_queued`."""
    cap = settings.tenant_max_queued
    if cap > 0 and unfinished + adding > cap:
        metrics.refused_by_limit("queue")
        raise TooManyRequestsError(
            f"this API key has {unfinished} unfinished jobs, the most allowed is {cap}: wait "
            "for some to finish, or send the work as a batch",
            code="quota_exceeded",
            retry_after_s=QUOTA_RETRY_AFTER_S,
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
    check_fits_context(request, params, runtime.settings)
    key = request_cache_key(runtime.settings, tenant_id, request, params, options.model)
    cached = None
    if key is not None:
        try:
            cached = cache.get_cached(runtime.redis, key)
        except redis.RedisError as exc:
            raise ServiceUnavailableError("the queue (Redis) is unavailable") from exc
        metrics.cache_looked_up(options.model or runtime.settings.model_id, hit=cached is not None)
    job = new_job(runtime.settings, tenant_id, request, params, options, key)
    if cached is not None:
        mark_cache_hit(job, cached)
    with runtime.unit_of_work() as session:
        add_job(session, job, request.images, options)
    logs.annotate(job_id=job.id)
    if cached is None:
        enqueue_after_commit(runtime, [job.id], background=options.background)
    else:
        metrics.job_ended(job.model, JobStatus.SUCCEEDED.value, created_at=job.created_at)
    return job


def enqueue_after_commit(runtime: Runtime, job_ids: list[str], *, background: bool) -> None:
    """Send committed jobs to their queue. If the broker is down, they stay queued without a
    marker, and the maintenance pass sends them once it is back: the jobs are accepted."""
    try:
        runtime.broker.enqueue_jobs(job_ids, background=background)
    except Exception:
        log.exception("enqueue_failed", jobs=len(job_ids))


def get_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """The tenant's job, or a 404 (also for another tenant's job)."""
    return get_owned(session, Job, tenant_id, job_id, noun="job", param="id")


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


def cancel_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """Cancel a queued or running job; a job already terminal is returned unchanged."""
    job = get_job(session, tenant_id, job_id)
    changed = rows_changed(
        session,
        sa.update(Job)
        .where(Job.id == job_id, Job.status.in_(UNFINISHED_STATUSES))
        .values(status=JobStatus.CANCELED.value, completed_at=utcnow(), lease_expires_at=None),
    )
    if changed:
        outbox.emit(session, outbox.JobFinished(job_id))
        metrics.job_ended(job.model, JobStatus.CANCELED.value, in_batch=job.batch_id is not None)
    session.refresh(job)
    return job


def has_ended(sessions: sessionmaker[Session], job_id: str) -> bool:
    """Whether the job has reached a terminal state (a job that is gone counts as one)."""
    with sessions() as session:
        status = session.scalar(sa.select(Job.status).where(Job.id == job_id))
    return status is None or JobStatus(status).is_terminal()


def wait_until_terminal(
    sessions: sessionmaker[Session], job_ends: notify.JobEnds, job: Job, timeout_s: float
) -> tuple[Job, bool]:
    """The job once terminal (woken by its end), or as it is after `timeout_s`.

    Returns the job and whether it is terminal. A job that ends with its final fields
    announced is answered from them, without a read; otherwise each check is one read.
    """
    if job.job_status.is_terminal():
        return job, True
    latest = [job]

    def terminal_now() -> bool:
        with sessions() as session:
            latest.append(get_job(session, job.tenant_id, job.id))
        return latest[-1].job_status.is_terminal()

    created_at = job.created_at.timestamp() if job.created_at is not None else None
    done, ending = job_ends.wait(job.id, terminal_now, timeout_s, created_at=created_at)
    if ending is not None:
        apply_ending(job, ending)
        return job, True
    return latest[-1], done


def apply_ending(job: Job, ending: dict[str, Any]) -> None:
    """Set the final fields a job's end announced (as committed) on the job object."""
    for name in ("status", "output", "result", "error", "cache_hit", "metrics", "attempts"):
        if name in ending:
            setattr(job, name, ending[name])
    for name in ("started_at", "completed_at"):
        if ending.get(name):
            setattr(job, name, datetime.fromisoformat(ending[name]))


def wait_for_success(
    sessions: sessionmaker[Session], job_ends: notify.JobEnds, job: Job, timeout_s: float
) -> Job:
    """The job once it succeeded; a 504 after `timeout_s` (the job goes on), and a 500
    `job_failed` if it failed or was canceled (synchronous calls answer with its error)."""
    job, done = wait_until_terminal(sessions, job_ends, job, timeout_s)
    if not done:
        raise SyncTimeoutError(f"job {job.id} did not finish in time; poll /v1/jobs/{job.id}")
    if job.status != JobStatus.SUCCEEDED:
        raise JobFailedError(failure_message(job))
    return job


def failure_message(job: Job) -> str:
    """What a synchronous caller is told about a job that did not succeed."""
    message = (job.error or {}).get("message", job.status)
    return f"job {job.id} {job.status}: {message}"
