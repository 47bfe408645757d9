"""Batches in the OpenAI Batch API shape: expand an input file into jobs, track, finalize.

Each input line becomes one job (queued behind interactive work); a line that cannot be
parsed becomes a failed job, so a bad line fails alone. The input is read a chunk at a
time and jobs are committed a page at a time, so 10,000 lines never sit in memory at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core import webhooks
from services.core.db import session_scope, utcnow
from services.core.errors import ConflictError, InvalidRequestError, NotFoundError, VlmqError
from services.core.files import file_lines, get_file, store_file
from services.core.idempotency import IdempotencyClaim
from services.core.ids import new_id
from services.core.jobs import SubmitOptions, new_job, request_cache_key, store_images
from services.core.models import Batch, Job, JobStatus
from services.core.moderations import job_moderation_result, moderation_jobs_spec
from services.core.pagination import newest_first_page
from services.core.prompts import build_params, canonical_from_messages
from services.core.queue import (
    BATCH_EXPAND_TASK,
    BATCH_PROGRESS_TASK,
    enqueue_job,
    send_batch_task,
)
from services.core.runtime import Runtime
from services.core.serialize import chat_completion_response

log = logging.getLogger(__name__)

ENDPOINTS = ("/v1/chat/completions", "/v1/moderations")
COMPLETION_WINDOWS = {"24h": timedelta(hours=24)}
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
PAGE = 100
PROGRESS_DEBOUNCE_MS = 500
EXPAND_LEASE_S = 60
UNFINISHED = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
MAX_LINES = 50_000


def create_batch(
    runtime: Runtime,
    tenant_id: str,
    *,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: dict[str, str] | None,
    webhook: str | None = None,
    idempotency: IdempotencyClaim | None = None,
) -> Batch:
    """Validate and store a batch, then hand the expansion of its file to a background task."""
    if webhook is not None:
        webhook = webhooks.check_webhook_url(webhook, runtime.settings.outbound_allowed)
    if endpoint not in ENDPOINTS:
        raise InvalidRequestError(
            f"endpoint must be one of {', '.join(ENDPOINTS)}", param="endpoint"
        )
    if completion_window not in COMPLETION_WINDOWS:
        raise InvalidRequestError("completion_window must be '24h'", param="completion_window")
    now = utcnow()
    with session_scope(runtime.sessions) as session:
        file = get_file(session, tenant_id, input_file_id)
        if file.purpose != "batch":
            raise InvalidRequestError(
                "the input file's purpose must be 'batch'", param="input_file_id"
            )
        batch = Batch(
            id=new_id("batch"),
            tenant_id=tenant_id,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=completion_window,
            status="validating",
            metadata_=metadata or {},
            webhook=webhook,
            created_at=now,
            expires_at=now + COMPLETION_WINDOWS[completion_window],
        )
        session.add(batch)
        if idempotency is not None:
            idempotency.record(session, batch.id)
    send_batch_task(runtime.celery, BATCH_EXPAND_TASK, batch.id)
    return batch


def get_batch(session: Session, tenant_id: str, batch_id: str) -> Batch:
    """The tenant's batch, or a 404."""
    batch = session.get(Batch, batch_id)
    if batch is None or batch.tenant_id != tenant_id:
        raise NotFoundError(f"no batch {batch_id!r}", param="batch_id")
    return batch


def list_batches(
    session: Session, tenant_id: str, *, limit: int, after: str | None
) -> tuple[list[Batch], bool]:
    """A page of the tenant's batches, newest first."""
    query = sa.select(Batch).where(Batch.tenant_id == tenant_id)
    cursor = get_batch(session, tenant_id, after) if after is not None else None
    return newest_first_page(session, Batch, query, cursor, limit)


def cancel_batch(runtime: Runtime, tenant_id: str, batch_id: str) -> Batch:
    """Stop a batch: its unfinished jobs are canceled, then it is finalized as `cancelled`."""
    now = utcnow()
    with session_scope(runtime.sessions) as session:
        batch = get_batch(session, tenant_id, batch_id)
        if batch.status in TERMINAL:
            raise ConflictError(f"batch {batch_id} is already {batch.status}", param="batch_id")
        if batch.status != "cancelling":
            batch.status, batch.cancelling_at = "cancelling", now
        # Running jobs are canceled too: their answers, when they come, are dropped.
        session.execute(
            sa.update(Job)
            .where(Job.batch_id == batch_id, Job.status.in_(UNFINISHED))
            .values(status=JobStatus.CANCELED.value, completed_at=now, lease_expires_at=None)
        )
    send_batch_task(runtime.celery, BATCH_PROGRESS_TASK, batch_id)
    with runtime.sessions() as session:
        return get_batch(session, tenant_id, batch_id)


# --- expansion ---------------------------------------------------------------------------


def line_job_id(batch_id: str, line_number: int) -> str:
    """A job id fixed by batch and line, so a re-run expansion never duplicates a line."""
    digest = hashlib.sha256(f"{batch_id}:{line_number}".encode()).hexdigest()
    return f"job_{digest[:24]}"


def parse_line(runtime: Runtime, batch: Batch, raw: bytes) -> tuple[Any, Any, SubmitOptions, str]:
    """One input line as (canonical request, params, options, custom_id), or a VlmqError."""
    try:
        line = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequestError("line is not valid JSON") from exc
    if not isinstance(line, dict):
        raise InvalidRequestError("line must be a JSON object")
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise InvalidRequestError("line needs a custom_id", param="custom_id")
    if line.get("url") != batch.endpoint or line.get("method", "POST") != "POST":
        raise InvalidRequestError(f"line must be a POST to {batch.endpoint}", param="url")
    body = line.get("body")
    if not isinstance(body, dict):
        raise InvalidRequestError("line needs a body object", param="body")
    model = body.get("model")
    if model and model != runtime.settings.model_id:
        raise NotFoundError(f"the model {model!r} does not exist", code="model_not_found")
    if batch.endpoint == "/v1/moderations":
        specs = moderation_jobs_spec(
            runtime,
            batch.tenant_id,
            body.get("input"),
            body.get("categories"),
            body.get("thresholds"),
        )
        if len(specs) != 1:
            raise InvalidRequestError("a batch line moderates exactly one input", param="input")
        request, params, options = specs[0]
        in_batch = dataclasses.replace(
            options, batch_id=batch.id, custom_id=custom_id, background=True
        )
        return request, params, in_batch, custom_id
    request = canonical_from_messages(body.get("messages"), runtime.settings)
    params = build_params(body, runtime.settings)
    options = SubmitOptions(kind="chat", batch_id=batch.id, custom_id=custom_id, background=True)
    return request, params, options, custom_id


def expanding_key(batch_id: str) -> str:
    """A short Redis lease held while a batch is being expanded."""
    return f"vlmq:batch-expanding:{batch_id}"


def expand_batch(runtime: Runtime, batch_id: str) -> None:
    """Turn the input file into jobs, a page at a time; safe to run again after a crash."""
    with runtime.sessions() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or batch.status != "validating":
            return
        session.expunge(batch)
    if not runtime.redis.set(expanding_key(batch_id), b"1", nx=True, ex=EXPAND_LEASE_S):
        return  # another expansion of this batch is running
    total = 0
    page: list[tuple[Job, list[Any]]] = []
    for line_number, raw in enumerate(file_lines(runtime, batch.input_file_id), start=1):
        if not raw.strip():
            continue
        if total >= MAX_LINES:
            fail_batch(runtime, batch_id, f"the input file has more than {MAX_LINES} lines")
            return
        total += 1
        page.append(line_job(runtime, batch, line_number, raw))
        if len(page) >= PAGE:
            commit_page(runtime, page)
            page = []
            runtime.redis.expire(expanding_key(batch_id), EXPAND_LEASE_S)
    commit_page(runtime, page)
    if total == 0:
        fail_batch(runtime, batch_id, "the input file has no requests")
        return
    with session_scope(runtime.sessions) as session:
        session.execute(
            sa.update(Batch)
            .where(Batch.id == batch_id, Batch.status == "validating")
            .values(status="in_progress", in_progress_at=utcnow(), total=total)
        )
    runtime.redis.delete(expanding_key(batch_id))
    send_batch_task(runtime.celery, BATCH_PROGRESS_TASK, batch_id)


def resume_stalled(runtime: Runtime) -> None:
    """Reconciler pass: restart lost expansions and re-check running batches.

    Both tasks are idempotent, so sending one that was not lost costs only a query.
    """
    stale = utcnow() - timedelta(seconds=runtime.settings.requeue_after_s)
    with runtime.sessions() as session:
        rows = list(
            session.execute(
                sa.select(Batch.id, Batch.status, Batch.created_at).where(
                    Batch.status.in_(["validating", "in_progress", "cancelling"])
                )
            )
        )
    for batch_id, status, created_at in rows:
        if status != "validating":
            send_batch_task(runtime.celery, BATCH_PROGRESS_TASK, batch_id)
        elif created_at < stale and not runtime.redis.exists(expanding_key(batch_id)):
            send_batch_task(runtime.celery, BATCH_EXPAND_TASK, batch_id)


def line_job(runtime: Runtime, batch: Batch, line_number: int, raw: bytes) -> tuple[Job, list[Any]]:
    """The job of one line (failed already if the line is bad) and the images to store."""
    job_id = line_job_id(batch.id, line_number)
    try:
        request, params, options, _custom_id = parse_line(runtime, batch, raw)
    except VlmqError as exc:
        now = utcnow()
        custom_id = custom_id_of(raw)
        job = Job(
            id=job_id,
            tenant_id=batch.tenant_id,
            kind="chat" if batch.endpoint == "/v1/chat/completions" else "moderation",
            model=runtime.settings.model_id,
            messages=[],
            params={},
            status=JobStatus.FAILED.value,
            error={"type": exc.code, "message": exc.message, "status": exc.status},
            batch_id=batch.id,
            custom_id=custom_id,
            metrics={},
            metadata_={},
            attempts=0,
            created_at=now,
            completed_at=now,
        )
        return job, []
    key = request_cache_key(runtime, batch.tenant_id, request, params)
    job = new_job(runtime, batch.tenant_id, request, params, options, key)
    job.id = job_id
    return job, request.images


def custom_id_of(raw: bytes) -> str | None:
    """The custom_id of a line, if one can be read at all."""
    try:
        value = json.loads(raw).get("custom_id")
    except (ValueError, AttributeError):
        return None
    return str(value)[:200] if value is not None else None


def commit_page(runtime: Runtime, page: list[tuple[Job, list[Any]]]) -> None:
    """Store a page of jobs (skipping lines a previous run stored), then enqueue the new ones."""
    if not page:
        return
    ids = [job.id for job, _ in page]
    with session_scope(runtime.sessions) as session:
        existing = set(session.scalars(sa.select(Job.id).where(Job.id.in_(ids))))
        fresh = [(job, images) for job, images in page if job.id not in existing]
        store_images(session, [image for _, images in fresh for image in images])
        session.add_all([job for job, _ in fresh])
    for job, _ in fresh:
        if job.status == JobStatus.QUEUED.value:
            enqueue_job(runtime.celery, runtime.settings, job.id, background=True)


def fail_batch(runtime: Runtime, batch_id: str, message: str) -> None:
    """The batch cannot run at all (an empty or oversized file)."""
    with session_scope(runtime.sessions) as session:
        session.execute(
            sa.update(Batch)
            .where(Batch.id == batch_id)
            .values(
                status="failed",
                failed_at=utcnow(),
                errors={"object": "list", "data": [{"code": "invalid_file", "message": message}]},
            )
        )


# --- progress and finalization ----------------------------------------------------------------


def on_job_finished(runtime: Runtime, job_id: str) -> None:
    """A job reached a terminal state: if it belongs to a batch, schedule a progress check.

    Debounced per batch: a 10,000-job batch gets a check every half second, not 10,000.
    """
    with runtime.sessions() as session:
        batch_id = session.scalar(sa.select(Job.batch_id).where(Job.id == job_id))
    if batch_id is None:
        return
    if runtime.redis.set(f"vlmq:batch-progress:{batch_id}", b"1", nx=True, px=PROGRESS_DEBOUNCE_MS):
        send_batch_task(runtime.celery, BATCH_PROGRESS_TASK, batch_id, PROGRESS_DEBOUNCE_MS / 1000)


def job_counts(session: Session, batch_id: str) -> dict[str, int]:
    """How many of the batch's jobs are in each status."""
    rows = session.execute(
        sa.select(Job.status, sa.func.count()).where(Job.batch_id == batch_id).group_by(Job.status)
    )
    return {status: int(count) for status, count in rows}


def advance_batch(runtime: Runtime, batch_id: str) -> None:
    """Update the counts; expire an overdue batch; finalize one whose jobs are all done."""
    now = utcnow()
    with session_scope(runtime.sessions) as session:
        batch = session.get(Batch, batch_id)
        if batch is None or batch.status in TERMINAL or batch.status == "finalizing":
            return
        if batch.expires_at is not None and now > batch.expires_at and batch.status != "cancelling":
            batch.status, batch.expired_at = "cancelling", now
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
        if unfinished or batch.status not in ("in_progress", "cancelling"):
            return
        final_status = final_status_of(batch)
        batch.status, batch.finalizing_at = "finalizing", now
    finalize_batch(runtime, batch_id, final_status)


def final_status_of(batch: Batch) -> str:
    """Where a batch ends once its jobs are done."""
    if batch.status == "cancelling":
        return "expired" if batch.expired_at is not None else "cancelled"
    return "completed"


def finalize_batch(runtime: Runtime, batch_id: str, final_status: str) -> None:
    """Write the output and error files, then close the batch."""
    with runtime.sessions() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        session.expunge(batch)
    ok_statuses = [JobStatus.SUCCEEDED.value]
    bad_statuses = [JobStatus.FAILED.value, JobStatus.CANCELED.value]
    output = write_result_file(runtime, batch, ok_statuses, "batch_output.jsonl")
    errors = write_result_file(runtime, batch, bad_statuses, "batch_errors.jsonl")
    now = utcnow()
    timestamps = {
        "completed": {"completed_at": now},
        "cancelled": {"cancelled_at": now},
        "expired": {"expired_at": batch.expired_at or now},
    }[final_status]
    with session_scope(runtime.sessions) as session:
        session.execute(
            sa.update(Batch)
            .where(Batch.id == batch_id)
            .values(
                status=final_status,
                output_file_id=output,
                error_file_id=errors,
                **timestamps,
            )
        )
    batch_finished(runtime, batch_id)


def batch_finished(runtime: Runtime, batch_id: str) -> None:
    """Tell the batch's webhook, if it has one, with the finished batch object."""
    with runtime.sessions() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or not batch.webhook:
            return
        payload, tenant_id, url = batch_response(batch), batch.tenant_id, batch.webhook
    try:
        webhooks.schedule_delivery(
            runtime,
            tenant_id=tenant_id,
            url=url,
            event="completed",
            payload=payload,
            batch_id=batch_id,
            delivery_id=webhooks.event_delivery_id(batch_id, "completed"),
        )
    except Exception:
        log.exception("event=batch_webhook_failed batch_id=%s", batch_id)


def write_result_file(
    runtime: Runtime, batch: Batch, statuses: list[str], filename: str
) -> str | None:
    """A JSONL file of the batch's jobs in `statuses`, or None when there are none."""
    lines = (
        (json.dumps(result_line(batch, job), separators=(",", ":")) + "\n").encode()
        for job in batch_jobs(runtime, batch.id, statuses)
    )
    first = next(lines, None)
    if first is None:
        return None

    def pieces() -> Iterator[bytes]:
        yield first
        yield from lines

    return store_file(runtime, batch.tenant_id, "batch_output", filename, pieces()).id


def batch_jobs(runtime: Runtime, batch_id: str, statuses: list[str]) -> Iterator[Job]:
    """The batch's jobs in `statuses`, a page at a time (keyset pagination on the id)."""
    last = ""
    while True:
        with runtime.sessions() as session:
            page = list(
                session.scalars(
                    sa.select(Job)
                    .where(Job.batch_id == batch_id, Job.status.in_(statuses), Job.id > last)
                    .order_by(Job.id)
                    .limit(500)
                )
            )
            session.expunge_all()
        if not page:
            return
        yield from page
        last = page[-1].id


def result_line(batch: Batch, job: Job) -> dict[str, Any]:
    """One line of the output or error file, in OpenAI's batch output shape."""
    line_id = "batch_req_" + job.id.removeprefix("job_")
    if job.status == JobStatus.SUCCEEDED.value:
        if batch.endpoint == "/v1/moderations":
            body: dict[str, Any] = {
                "id": "modr-" + job.id.removeprefix("job_"),
                "model": job.model,
                "results": [job_moderation_result(job)],
            }
        else:
            body = chat_completion_response(job)
        response = {"status_code": 200, "request_id": job.id, "body": body}
        return {"id": line_id, "custom_id": job.custom_id, "response": response, "error": None}
    error = job.error or {"type": job.status, "message": f"the request was {job.status}"}
    return {
        "id": line_id,
        "custom_id": job.custom_id,
        "response": None,
        "error": {"code": error.get("type", job.status), "message": error.get("message", "")},
    }


def batch_response(batch: Batch) -> dict[str, Any]:
    """The OpenAI batch object."""

    def seconds(value: datetime | None) -> int | None:
        return int(value.timestamp()) if value else None

    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": batch.errors,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": batch.status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": seconds(batch.created_at),
        "in_progress_at": seconds(batch.in_progress_at),
        "expires_at": seconds(batch.expires_at),
        "finalizing_at": seconds(batch.finalizing_at),
        "completed_at": seconds(batch.completed_at),
        "failed_at": seconds(batch.failed_at),
        "expired_at": seconds(batch.expired_at),
        "cancelling_at": seconds(batch.cancelling_at),
        "cancelled_at": seconds(batch.cancelled_at),
        "request_counts": {
            "total": batch.total,
            "completed": batch.completed,
            "failed": batch.failed,
        },
        "metadata": batch.metadata_ or None,
    }
