"""The state transitions of a job's attempts, as the worker makes them: claim, finish, fail.

Every transition is one conditional UPDATE, so duplicate deliveries, a stale attempt of
a killed worker, or a cancel racing a finish can never overwrite a terminal result. Each
function works in the caller's transaction and emits its events to the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core import metrics, outbox
from services.core.bands import Band
from services.core.config import Settings
from services.core.db import rows_changed, utcnow
from services.core.tables import IMAGES, JOBS, UNFINISHED_STATUSES, Job, JobStatus


@dataclass(frozen=True)
class Claim:
    """A worker's right to run one attempt of a job until its lease expires.

    It carries what the worker needs later (the job's input, and what finishing it needs),
    read by the claim's own UPDATE, so running and finishing the job cost no extra read.
    """

    job_id: str
    attempt: int
    model: str = ""
    tenant_id: str = ""
    request_id: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    has_webhook: bool = True
    batch_id: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    cache_key: str | None = None
    stream: bool = False
    # A background response: its stream is kept with its row when the attempt ends.
    keeps_stream: bool = False
    # Its priority band and the tokens fair queuing charged for it (see `fair_queue`).
    band: int = Band.DEFAULT
    cost_tokens: int = 0
    # The bytes of the job's first image, read by the claim itself.
    first_image: tuple[str, bytes] | None = field(default=None, repr=False)

    @property
    def in_batch(self) -> bool:
        """Whether the job is a line of a batch."""
        return self.batch_id is not None


@dataclass(frozen=True)
class Finished:
    """The answer of one claimed attempt, as `finish_jobs` records it."""

    claim: Claim
    output: str
    result: dict[str, Any]
    inference_ms: float
    cache_hit: bool = False
    batch_size: int = 0


def elapsed_ms(start: datetime | None, end: datetime | None) -> float | None:
    """Milliseconds between two timestamps, if both are known."""
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 3)


def claimable(now: datetime | sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """Queued, or running under a lease that has run out (its worker is gone) at `now` (a
    time, or a bound parameter of one)."""
    return sa.or_(
        JOBS.c.status == JobStatus.QUEUED.value,
        sa.and_(JOBS.c.status == JobStatus.RUNNING.value, JOBS.c.lease_expires_at < now),
    )


def typed(name: str, column: str) -> sa.BindParameter[Any]:
    """A bound parameter of a job column's type (JSON, UTC datetimes)."""
    return sa.bindparam(name, type_=JOBS.c[column].type)


# The two statements every job runs, built once: SQLAlchemy keys its compiled-statement
# cache by the statement's structure, and working that key out again for a statement built
# anew each time (its values clause walked bind by bind) cost more than the database's own
# work on SQLite.
@cache
def claim_statement() -> sa.Update:
    """Claim the jobs `ids_` at `now_` (see `claim_jobs`)."""
    now = typed("now_", "started_at")
    jobs = JOBS.c
    return (
        sa.update(JOBS)
        .where(
            jobs.id.in_(sa.bindparam("ids_", expanding=True)),
            claimable(now),
            jobs.attempts < sa.bindparam("max_attempts_"),
            sa.or_(
                jobs.status != JobStatus.QUEUED.value,
                jobs.queue_deadline_at.is_(None),
                jobs.queue_deadline_at >= now,
            ),
        )
        .values(
            status=JobStatus.RUNNING.value,
            attempts=jobs.attempts + 1,
            started_at=sa.func.coalesce(jobs.started_at, now),
            lease_expires_at=typed("lease_until_", "lease_expires_at"),
        )
        .returning(
            jobs.id,
            jobs.attempts,
            jobs.model,
            jobs.tenant_id,
            jobs.request_id,
            jobs.created_at,
            jobs.started_at,
            jobs.webhook,
            jobs.kind,
            jobs.response,
            jobs.batch_id,
            jobs.messages,
            jobs.params,
            jobs.cache_key,
            jobs.stream,
            jobs.band,
            jobs.cost_tokens,
            jobs.first_image,
            sa.select(IMAGES.c.data)
            .where(IMAGES.c.sha256 == jobs.first_image)
            .scalar_subquery()
            .label("first_image_data"),
        )
    )


@cache
def finish_statement() -> sa.Update:
    """Record the answer of the attempt `attempt_` of the job `job_id_` (see `finish_job`)."""
    return (
        sa.update(JOBS)
        .where(
            JOBS.c.id == sa.bindparam("job_id_"),
            JOBS.c.status == JobStatus.RUNNING.value,
            JOBS.c.attempts == sa.bindparam("attempt_"),
        )
        .values(
            status=JobStatus.SUCCEEDED.value,
            output=sa.bindparam("output_"),
            result=typed("result_", "result"),
            cache_hit=sa.bindparam("cache_hit_"),
            metrics=typed("metrics_", "metrics"),
            completed_at=typed("completed_at_", "completed_at"),
            lease_expires_at=None,
        )
    )


def is_background_response(row: sa.Row[Any]) -> bool:
    """Whether a job is a background response (not a batch's line): its end is an event for
    its tenant's webhook endpoints (as OpenAI sends `response.*` events), and its stream is
    replayed for as long as it is kept."""
    background = bool((row.response or {}).get("background"))
    return row.kind == "response" and row.batch_id is None and background


def claim_job(session: Session, settings: Settings, job_id: str) -> Claim | None:
    """Start an attempt of one job (see `claim_jobs`); None when there is nothing to do."""
    claims = claim_jobs(session, settings, [job_id])
    return claims[0] if claims else None


def claim_jobs(session: Session, settings: Settings, job_ids: list[str]) -> list[Claim]:
    """Start an attempt of each job: queued (or running with an expired lease) becomes running.

    One UPDATE claims them all and returns their input. A job is left out when there is
    nothing to do: it is gone, terminal, or running under a live lease (a duplicate
    delivery). A job that has used up its attempts fails; one past its queue deadline
    (`max_queue_ms`) expires, and never runs.
    """
    now = utcnow()
    rows = session.execute(
        claim_statement(),
        {
            "ids_": list(job_ids),
            "now_": now,
            "max_attempts_": settings.max_attempts,
            "lease_until_": now + timedelta(seconds=settings.lease_s),
        },
    ).all()
    claims = [
        Claim(
            row.id,
            int(row.attempts),
            model=row.model,
            tenant_id=row.tenant_id,
            request_id=row.request_id,
            created_at=row.created_at,
            started_at=row.started_at,
            # A background response's end is an event for its tenant's webhook endpoints.
            has_webhook=row.webhook is not None or is_background_response(row),
            batch_id=row.batch_id,
            messages=row.messages,
            params=row.params,
            cache_key=row.cache_key,
            stream=bool(row.stream),
            keeps_stream=bool(row.stream) and is_background_response(row),
            band=int(row.band),
            cost_tokens=int(row.cost_tokens),
            first_image=(row.first_image, row.first_image_data)
            if row.first_image and row.first_image_data is not None
            else None,
        )
        for row in rows
    ]
    if len(claims) < len(job_ids):
        unclaimed = set(job_ids) - {claim.job_id for claim in claims}
        expire_jobs(session, list(unclaimed), now)
        give_up_exhausted(session, settings, unclaimed)
    for claim in claims:
        if claim.attempt == 1:
            metrics.job_claimed(
                claim.model,
                claim.created_at,
                claim.started_at,
                background=claim.in_batch,
                band=Band(claim.band).label,
            )
            if claim.has_webhook:
                outbox.emit(session, outbox.JobStarted(claim.job_id))
    # In the order asked for: a chunk's lines run in file order.
    order = {job_id: index for index, job_id in enumerate(job_ids)}
    return sorted(claims, key=lambda claim: order[claim.job_id])


def expire_jobs(session: Session, job_ids: list[str], now: datetime | None = None) -> list[str]:
    """End those of these queued jobs that are past their queue deadline as `expired` (they
    never run; their webhook is told); returns their ids."""
    now = now or utcnow()
    rows = session.execute(
        sa.update(Job)
        .where(
            Job.id.in_(job_ids),
            Job.status == JobStatus.QUEUED.value,
            Job.queue_deadline_at < now,
        )
        .values(
            status=JobStatus.EXPIRED.value,
            error={
                "type": "expired",
                "message": "the job was not started before its max_queue_ms ran out; it never ran",
            },
            completed_at=now,
        )
        .returning(Job.id, Job.model, Job.batch_id)
    ).all()
    for row in rows:
        metrics.job_ended(row.model, JobStatus.EXPIRED.value, in_batch=row.batch_id is not None)
        outbox.emit(session, outbox.JobFinished(row.id))
    return [row.id for row in rows]


def give_up_exhausted(session: Session, settings: Settings, job_ids: set[str]) -> None:
    """Fail those of these unclaimed jobs that were left claimable with no attempts left."""
    now = utcnow()
    exhausted = session.scalars(
        sa.select(Job.id).where(
            Job.id.in_(job_ids), claimable(now), Job.attempts >= settings.max_attempts
        )
    ).all()
    for job_id in exhausted:
        give_up_job(session, settings, job_id, only_if=claimable(now))


def attempt_metrics(
    claim: Claim, inference_ms: float, batch_size: int, now: datetime
) -> dict[str, Any]:
    """The timing metrics a finished attempt records."""
    return {
        "queue_ms": elapsed_ms(claim.created_at, claim.started_at),
        "inference_ms": round(inference_ms, 3),
        "total_ms": elapsed_ms(claim.created_at, now),
        # How many jobs shared this job's model call (0: it made none).
        "batch_size": batch_size,
    }


def keep_stream_log(session: Session, claim: Claim, stream_log: list[dict[str, Any]]) -> None:
    """Keep the job's token stream (`notify.stream_log`) with its row, unless a later attempt
    has taken the job since."""
    session.execute(
        sa.update(JOBS)
        .where(JOBS.c.id == claim.job_id, JOBS.c.attempts == claim.attempt)
        .values(stream_log=stream_log)
    )


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
    final = {
        "status": JobStatus.SUCCEEDED.value,
        "output": output,
        "result": result,
        "cache_hit": cache_hit,
        "metrics": attempt_metrics(claim, inference_ms, batch_size, now),
        "completed_at": now,
    }
    done = rows_changed(
        session,
        finish_statement(),
        {
            "job_id_": claim.job_id,
            "attempt_": claim.attempt,
            "output_": output,
            "result_": result,
            "cache_hit_": cache_hit,
            "metrics_": final["metrics"],
            "completed_at_": now,
        },
    )
    if done:
        ending = {
            **final,
            "attempts": claim.attempt,
            "started_at": claim.started_at.isoformat() if claim.started_at else None,
            "completed_at": now.isoformat(),
        }
        event = outbox.JobFinished(claim.job_id, claim.has_webhook, claim.in_batch, ending)
        outbox.emit(session, event)
        record_success(claim, result, inference_ms, cache_hit)
    return bool(done)


def record_success(
    claim: Claim, result: dict[str, Any], inference_ms: float, cache_hit: bool
) -> None:
    """The metrics of an answered attempt (recorded when its UPDATE changed the row)."""
    metrics.job_ended(
        claim.model,
        JobStatus.SUCCEEDED.value,
        in_batch=claim.in_batch,
        created_at=claim.created_at,
    )
    if not cache_hit:
        metrics.job_answered(claim.model, claim.tenant_id, result, inference_ms)


def finish_batch_lines(session: Session, answers: list[Finished]) -> None:
    """Record the answers of many batch lines in one statement (the lines of one chunk).

    A stale attempt or a canceled line is left alone by the UPDATE's conditions. Each batch
    gets one progress event for the chunk instead of one per line (a progress check counts
    every line anyway). Lines with a webhook of their own are finished one by one, so that
    each event follows a change that really happened.
    """

    def alone(answer: Finished) -> bool:
        return answer.claim.has_webhook or answer.claim.batch_id is None

    for answer in filter(alone, answers):
        finish_job(
            session,
            answer.claim,
            output=answer.output,
            result=answer.result,
            inference_ms=answer.inference_ms,
            cache_hit=answer.cache_hit,
            batch_size=answer.batch_size,
        )
    together = [answer for answer in answers if not alone(answer)]
    if not together:
        return
    now = utcnow()
    session.execute(
        sa.update(JOBS)  # Core: an executemany with per-row conditions
        .where(
            JOBS.c.id == sa.bindparam("b_id"),
            JOBS.c.status == JobStatus.RUNNING.value,
            JOBS.c.attempts == sa.bindparam("b_attempt"),
        )
        .values(
            status=JobStatus.SUCCEEDED.value,
            output=sa.bindparam("b_output"),
            result=sa.bindparam("b_result"),
            cache_hit=sa.bindparam("b_cache_hit"),
            metrics=sa.bindparam("b_metrics"),
            completed_at=now,
            lease_expires_at=None,
        ),
        [
            {
                "b_id": answer.claim.job_id,
                "b_attempt": answer.claim.attempt,
                "b_output": answer.output,
                "b_result": answer.result,
                "b_cache_hit": answer.cache_hit,
                "b_metrics": attempt_metrics(
                    answer.claim, answer.inference_ms, answer.batch_size, now
                ),
            }
            for answer in together
        ],
    )
    for batch_id in sorted({a.claim.batch_id for a in together if a.claim.batch_id}):
        outbox.emit(session, outbox.BatchLinesFinished(batch_id))
    # An executemany reports no per-row count: a line canceled meanwhile still counts here.
    for answer in together:
        record_success(answer.claim, answer.result, answer.inference_ms, answer.cache_hit)


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
    failed = session.execute(
        sa.update(Job)
        .where(*conditions)
        .values(
            status=JobStatus.FAILED.value,
            error={"type": error_type, "message": message},
            completed_at=utcnow(),
            lease_expires_at=None,
        )
        .returning(Job.model, Job.created_at, Job.batch_id)
    ).first()
    done = failed is not None
    if failed is not None:
        metrics.job_ended(
            failed.model,
            JobStatus.FAILED.value,
            error_type=error_type,
            in_batch=failed.batch_id is not None,
            created_at=failed.created_at,
        )
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
