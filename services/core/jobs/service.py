"""The job service: read, list, cancel and wait for jobs (`services.core.submit` makes them)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import redis
import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, sessionmaker

from services.core import metrics, notify, outbox
from services.core.db import rows_changed, utcnow
from services.core.errors import (
    InvalidRequestError,
    JobFailedError,
    SyncTimeoutError,
    TooManyRequestsError,
)
from services.core.pagination import newest_first_page
from services.core.runtime import Runtime
from services.core.tables import UNFINISHED_STATUSES, Job, JobStatus
from services.core.tenancy import get_owned

log = structlog.get_logger(__name__)


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


def queue_position(runtime: Runtime, job: Job) -> int | None:
    """About how many units of work run before a queued job (None once it left the queue,
    or while Redis cannot say)."""
    if job.status != JobStatus.QUEUED.value:
        return None
    try:
        return runtime.broker.fair.position(job.id)
    except redis.RedisError:
        return None


def leave_queue(runtime: Runtime, job: Job) -> None:
    """Take a canceled job out of the fair queue (had it stayed, a worker would have skipped
    it; taking it out keeps the queue's counts right), and mark the cancel in its token
    stream (readers take no text after it)."""
    if job.status != JobStatus.CANCELED.value:
        return
    try:
        runtime.broker.fair.remove(job.id)
        if job.stream:
            notify.publish_cancel(runtime.redis, job.id)
    except redis.RedisError:
        log.warning("fair_queue_remove_failed", job_id=job.id)


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
    """The job once it succeeded; a 504 after `timeout_s` (the job goes on), a 429
    `queue_deadline_exceeded` if it expired unstarted (`max_queue_ms`), and a 500
    `job_failed` if it failed or was canceled (synchronous calls answer with its error)."""
    job, done = wait_until_terminal(sessions, job_ends, job, timeout_s)
    if not done:
        raise SyncTimeoutError(f"job {job.id} did not finish in time; poll /v1/jobs/{job.id}")
    if job.status == JobStatus.EXPIRED:
        # As OpenAI answers flex work it has no capacity for: try again later.
        raise TooManyRequestsError(
            failure_message(job), code="queue_deadline_exceeded", retry_after_s=1
        )
    if (job.error or {}).get("type") == "content_filter":
        # As Azure OpenAI answers a prompt its content filter refused.
        raise InvalidRequestError(failure_message(job), code="content_filter")
    if job.status != JobStatus.SUCCEEDED:
        raise JobFailedError(failure_message(job))
    return job


def wait_for_all(runtime: Runtime, jobs: list[Job]) -> list[Job]:
    """The jobs once all succeeded, within one `sync_timeout_s` for them all (as
    `wait_for_success` answers when one does not)."""
    deadline = time.monotonic() + runtime.settings.sync_timeout_s
    return [
        wait_for_success(
            runtime.sessions, runtime.job_ends, job, max(0.0, deadline - time.monotonic())
        )
        for job in jobs
    ]


def failure_message(job: Job) -> str:
    """What a synchronous caller is told about a job that did not succeed."""
    message = (job.error or {}).get("message", job.status)
    return f"job {job.id} {job.status}: {message}"
