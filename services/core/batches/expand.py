"""Expanding a batch's input file into jobs, a page of lines at a time.

Each line becomes one job with an id fixed by batch and line number, so an expansion that
runs again after a crash never duplicates a line. A line that cannot be parsed becomes a
failed job: a bad line fails alone. The file is read a chunk at a time and jobs are
committed a page at a time, so a large file never sits in memory at once.

The line cap is checked on a first pass, before any job exists. Each page commits only
while the batch is still `validating` (a conditional UPDATE in the page's transaction), so
a batch cancelled or expired meanwhile stops expanding at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any, NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core import logs, outbox
from services.core.bands import Band
from services.core.broker import BATCH_PROGRESS_TASK
from services.core.config import Settings
from services.core.db import rows_changed, utcnow
from services.core.errors import (
    InvalidRequestError,
    ServiceUnavailableError,
    TooManyRequestsError,
    VlmqError,
)
from services.core.files import file_lines
from services.core.inputs.images import CheckedImage
from services.core.inputs.prompts import GenerationParams
from services.core.job_spec import JobSpec, SubmitOptions
from services.core.moderation.service import screened, screening_policy, tenant_policy
from services.core.moderation.stored import store_policies
from services.core.outbound import fetching_for
from services.core.requests.base import parse
from services.core.requests.batches import MAX_CUSTOM_ID_CHARS, BatchLine
from services.core.requests.chat import ChatCompletionRequest
from services.core.requests.moderations import ModerationRequest
from services.core.requests.responses import ResponseCreateRequest
from services.core.runtime import Runtime
from services.core.submit import (
    chat_specs,
    enqueue_after_commit,
    failed_job_values,
    insert_job_values,
    job_values,
    moderation_specs,
    queued_work,
    response_specs,
    store_images,
)
from services.core.tables import Batch, BatchStatus, Job, JobStatus

PAGE = 100
MODERATIONS = "/v1/moderations"
RESPONSES = "/v1/responses"
# The kind of a line's job, by its batch's endpoint.
LINE_KINDS = {MODERATIONS: "moderation", RESPONSES: "response"}
EXPAND_LEASE_S = 60
MAX_EXPAND_ATTEMPTS = 3


class LineJob(NamedTuple):
    """A line's job: its column values (for a bulk insert), the images it stores, and the
    parameters it was made with (None for a line that failed: it stores no policy)."""

    values: dict[str, Any]
    images: list[CheckedImage]
    params: GenerationParams | None = None


def line_job_id(batch_id: str, line_number: int) -> str:
    """A job id fixed by batch and line, so a re-run expansion never duplicates a line."""
    digest = hashlib.sha256(f"{batch_id}:{line_number}".encode()).hexdigest()
    return f"job_{digest[:24]}"


def expanding_key(batch_id: str) -> str:
    """A short Redis lease held while a batch is being expanded."""
    return f"vlmq:batch-expanding:{batch_id}"


def parse_line(
    session: Session,
    settings: Settings,
    batch: Batch,
    raw: bytes,
    stored_policy: dict[str, Any] | None = None,
) -> JobSpec:
    """One input line as a job spec, or the `VlmqError` its live endpoint would answer: the
    body is parsed by the endpoint's own request model and becomes jobs by the same code.

    `stored_policy`: the tenant's moderation policy, read once for the whole batch.
    """
    try:
        line = parse(BatchLine, json.loads(raw), settings)
    except ValueError as exc:
        raise InvalidRequestError("line is not valid JSON") from exc
    if line.url != batch.endpoint or line.method != "POST":
        raise InvalidRequestError(f"line must be a POST to {batch.endpoint}", param="url")
    if batch.endpoint == MODERATIONS:
        body = parse(ModerationRequest, line.body, settings, where="batch_line")
        specs = moderation_specs(session, settings, batch.tenant_id, body, stored_policy)
        if len(specs) != 1:
            raise InvalidRequestError("a batch line moderates exactly one input", param="input")
        max_queue_ms = None
    elif batch.endpoint == RESPONSES:
        response = parse(ResponseCreateRequest, line.body, settings, where="batch_line")
        specs = response_specs(session, settings, batch.tenant_id, response)
        max_queue_ms = response.queue_limit_ms(settings, batch_line=True)
    else:
        chat = parse(ChatCompletionRequest, line.body, settings, where="batch_line")
        specs = chat_specs(session, settings, batch.tenant_id, chat)
        max_queue_ms = chat.queue_limit_ms(settings, batch_line=True)
    options = replace(
        specs[0].options,
        stream=False,  # nobody reads a batch line's text as it is generated
        batch_id=batch.id,
        custom_id=line.custom_id,
        band=Band.BATCH,
        max_queue_ms=max_queue_ms,
    )
    return replace(specs[0], options=options)


def line_job(
    session: Session,
    settings: Settings,
    batch: Batch,
    line_number: int,
    raw: bytes,
    stored_policy: dict[str, Any] | None = None,
    screen: dict[str, Any] | None = None,
) -> LineJob:
    """The job of one line (failed already if the line is bad) and the images to store
    (`screen`: the tenant's screening policy, None when it does not screen)."""
    job_id = line_job_id(batch.id, line_number)
    try:
        (spec,) = screened([parse_line(session, settings, batch, raw, stored_policy)], screen)
    except (ServiceUnavailableError, TooManyRequestsError):
        # Passing (no fetch slot free, a dependency outage): the expansion runs again.
        raise
    except VlmqError as exc:
        kind = LINE_KINDS.get(batch.endpoint, "chat")
        options = SubmitOptions(
            kind=kind, batch_id=batch.id, custom_id=custom_id_of(raw), band=Band.BATCH
        )
        return LineJob(failed_job_values(settings, batch.tenant_id, exc, options, job_id), [])
    return LineJob(
        job_values(settings, batch.tenant_id, spec, job_id), spec.request.images, spec.params
    )


def custom_id_of(raw: bytes) -> str | None:
    """The custom_id of a line, if one can be read at all."""
    try:
        value = json.loads(raw).get("custom_id")
    except (ValueError, AttributeError):
        return None
    return str(value)[:MAX_CUSTOM_ID_CHARS] if value is not None else None


def commit_page(runtime: Runtime, batch_id: str, page: list[LineJob]) -> bool:
    """Store a page of jobs (skipping lines a previous run stored), then enqueue the new ones.

    False, with nothing stored, when the batch is no longer `validating`.
    """
    ids = [line.values["id"] for line in page]
    with runtime.unit_of_work() as session:
        # A no-op write that locks the batch row: a cancel or an expiry that commits
        # first stops the page, and one that comes later waits for it.
        still_validating = rows_changed(
            session,
            sa.update(Batch)
            .where(Batch.id == batch_id, Batch.status == BatchStatus.VALIDATING.value)
            .values(total=Batch.total),
        )
        if not still_validating:
            return False
        existing = set(session.scalars(sa.select(Job.id).where(Job.id.in_(ids))))
        fresh = [line for line in page if line.values["id"] not in existing]
        store_images(session, [image for line in fresh for image in line.images])
        store_policies(session, [line.params for line in fresh if line.params is not None])
        insert_job_values(session, [line.values for line in fresh])
    queued = [
        queued_work(line.values)
        for line in fresh
        if line.values["status"] == JobStatus.QUEUED.value
    ]
    enqueue_after_commit(runtime, queued)
    return True


def fail_batch(session: Session, batch_id: str, message: str) -> None:
    """The batch cannot run at all (an empty or oversized file, an expansion that keeps
    failing); its webhook, if it has one, is told."""
    failed = rows_changed(
        session,
        sa.update(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.VALIDATING.value)
        .values(
            status=BatchStatus.FAILED.value,
            failed_at=utcnow(),
            errors={"object": "list", "data": [{"code": "invalid_file", "message": message}]},
        ),
    )
    if failed:
        outbox.emit(session, outbox.BatchFinished(batch_id))


def count_lines(runtime: Runtime, file_id: str) -> int:
    """The number of non-empty lines of a file (a first pass, before any job is made)."""
    return sum(1 for raw in file_lines(runtime.sessions, file_id) if raw.strip())


def expand_batch(runtime: Runtime, batch_id: str) -> None:
    """Turn the input file into jobs, a page at a time; safe to run again after a crash.

    An expansion that raises (a bug, a database outage) is retried by the maintenance pass;
    after `MAX_EXPAND_ATTEMPTS` the batch fails instead of staying `validating` for ever.
    """
    with runtime.sessions() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or batch.status != BatchStatus.VALIDATING:
            return
        session.expunge(batch)
    if not runtime.redis.set(expanding_key(batch_id), b"1", nx=True, ex=EXPAND_LEASE_S):
        return  # another expansion of this batch is running
    try:
        # The lines' jobs carry the batch's request id (`job_values` reads it from here).
        with logs.bound(request_id=batch.request_id, batch_id=batch_id):
            expand_lines(runtime, batch)
    except (ServiceUnavailableError, TooManyRequestsError):
        # Passing (no fetch slot free, a dependency briefly down): the maintenance pass
        # runs the expansion again, and it does not count towards failing the batch.
        raise
    except Exception as exc:
        attempts = int(cast(int, runtime.redis.incr(f"vlmq:batch-expand-attempts:{batch_id}")))
        runtime.redis.expire(f"vlmq:batch-expand-attempts:{batch_id}", 24 * 3600)
        if attempts >= MAX_EXPAND_ATTEMPTS:
            with runtime.unit_of_work() as session:
                fail_batch(session, batch_id, f"the input file could not be expanded: {exc}")
        raise
    finally:
        runtime.redis.delete(expanding_key(batch_id))


def expand_lines(runtime: Runtime, batch: Batch) -> None:
    """Check the line count, create the jobs page by page, then start the batch."""
    settings = runtime.settings
    total = count_lines(runtime, batch.input_file_id)
    if total == 0 or total > settings.max_batch_lines:
        message = (
            "the input file has no requests"
            if total == 0
            else f"the input file has more than {settings.max_batch_lines} lines"
        )
        with runtime.unit_of_work() as session:
            fail_batch(session, batch.id, message)
        return
    page: list[LineJob] = []
    lines = file_lines(runtime.sessions, batch.input_file_id)
    with runtime.sessions() as reads:
        # The tenant's moderation policy is read once: a policy changed while the batch
        # expands applies to the batches created after the change.
        policy = tenant_policy(reads, batch.tenant_id) if batch.endpoint == MODERATIONS else None
        screen = screening_policy(reads, batch.tenant_id) if batch.endpoint != MODERATIONS else None
        for line_number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            # The lines' image fetches count against the batch's tenant's share.
            with fetching_for(batch.tenant_id):
                page.append(line_job(reads, settings, batch, line_number, raw, policy, screen))
            if len(page) >= PAGE:
                reads.rollback()  # end the read transaction: no snapshot held across pages
                if not commit_page(runtime, batch.id, page):
                    return
                page = []
                runtime.redis.expire(expanding_key(batch.id), EXPAND_LEASE_S)
    if page and not commit_page(runtime, batch.id, page):
        return
    with runtime.unit_of_work() as session:
        started = rows_changed(
            session,
            sa.update(Batch)
            .where(Batch.id == batch.id, Batch.status == BatchStatus.VALIDATING.value)
            .values(status=BatchStatus.IN_PROGRESS.value, in_progress_at=utcnow(), total=total),
        )
    if started:
        runtime.broker.send_batch_task(BATCH_PROGRESS_TASK, batch.id)
