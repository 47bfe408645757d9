"""The state transitions of a job's attempts, as the worker makes them: claim, finish, fail.

Every transition is one conditional UPDATE, so duplicate deliveries, a stale attempt of
a killed worker, or a cancel racing a finish can never overwrite a terminal result. Each
function works in the caller's transaction and emits its events to the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core import outbox
from services.core.config import Settings
from services.core.db import rows_changed, utcnow
from services.core.models import UNFINISHED_STATUSES, Job, JobStatus


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


def elapsed_ms(start: datetime | None, end: datetime | None) -> float | None:
    """Milliseconds between two timestamps, if both are known."""
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 3)


def claim_job(session: Session, settings: Settings, job_id: str) -> Claim | None:
    """Start an attempt: queued (or running with an expired lease) becomes running.

    Returns None when there is nothing to do: the job is gone, terminal, or running
    under a live lease (a duplicate delivery). A job that has used up its attempts fails.
    """
    now = utcnow()
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
    if row is None:
        exhausted = session.scalar(
            sa.select(Job.id).where(
                Job.id == job_id, claimable, Job.attempts >= settings.max_attempts
            )
        )
        if exhausted:
            give_up_job(session, settings, job_id, only_if=claimable)
        return None
    claim = Claim(
        job_id,
        int(row.attempts),
        created_at=row.created_at,
        started_at=row.started_at,
        has_webhook=row.webhook is not None,
        in_batch=row.batch_id is not None,
    )
    if claim.attempt == 1 and claim.has_webhook:
        outbox.emit(session, outbox.JobStarted(job_id))
    return claim


def finish_job(
    session: Session,
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
        event = outbox.JobFinished(claim.job_id, claim.has_webhook, claim.in_batch)
        outbox.emit(session, event)
    return bool(done)


def fail_job(
    session: Session,
    job_id: str,
    claim: Claim | None,
    error_type: str,
    message: str,
    *,
    only_if: sa.ColumnElement[bool] | None = None,
) -> bool:
    """Mark a job failed with `{type, message}`; a given claim must still be current, and
    `only_if`, if given, must still hold (it is checked in the same UPDATE)."""
    conditions = [Job.id == job_id, Job.status.in_(UNFINISHED_STATUSES)]
    if claim is not None:
        conditions.append(Job.attempts == claim.attempt)
    if only_if is not None:
        conditions.append(only_if)
    done = rows_changed(
        session,
        sa.update(Job)
        .where(*conditions)
        .values(
            status=JobStatus.FAILED.value,
            error={"type": error_type, "message": message},
            completed_at=utcnow(),
            lease_expires_at=None,
        ),
    )
    if done:
        if claim is None:
            outbox.emit(session, outbox.JobFinished(job_id))
        else:
            outbox.emit(session, outbox.JobFinished(job_id, claim.has_webhook, claim.in_batch))
    return bool(done)


def give_up_job(
    session: Session,
    settings: Settings,
    job_id: str,
    *,
    only_if: sa.ColumnElement[bool] | None = None,
) -> bool:
    """Fail a job that has used up its attempts (it keeps killing its worker), if `only_if`
    still holds (say, its lease is still lapsed)."""
    message = f"the job stopped its worker {settings.max_attempts} times and was given up"
    return fail_job(session, job_id, None, "worker_lost", message, only_if=only_if)


def renew_leases(session: Session, settings: Settings, claims: list[Claim]) -> int:
    """Push the leases of attempts still running out to a full `lease_s` from now; returns how
    many were renewed (a canceled, finished or stale attempt is left alone)."""
    if not claims:
        return 0
    attempts = [(claim.job_id, claim.attempt) for claim in claims]
    return rows_changed(
        session,
        sa.update(Job)
        .where(
            sa.tuple_(Job.id, Job.attempts).in_(attempts),
            Job.status == JobStatus.RUNNING.value,
        )
        .values(lease_expires_at=utcnow() + timedelta(seconds=settings.lease_s)),
    )
