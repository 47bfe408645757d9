"""The one submit use case: a parsed request becomes jobs.

Each protocol's request becomes `JobSpec`s (`job_specs`, `chat_specs`, `response_specs`,
`moderation_specs`:
model, preset, webhook and images resolved, everything checked, nothing stored), and
`submit` turns the specs of one request into jobs: quota, `Idempotency-Key`, cache, the rows
and their outbox events in one transaction, then the queue. `/v1/jobs`, chat and moderations
call `submit`; batch expansion builds its lines' rows with `job_values` and `failed_job_values`
and enqueues them with `enqueue_after_commit`, a page at a time.

A job row is committed before it is enqueued, so a worker always finds it (and if the broker
is down, the maintenance pass enqueues it later).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from typing import Any

import redis
import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.core import cache, idempotency, logs, metrics, outbox
from services.core.admission import admit
from services.core.auth import Caller
from services.core.bands import Band
from services.core.config import Settings
from services.core.db import utcnow
from services.core.errors import InvalidRequestError, ServiceUnavailableError, VlmqError
from services.core.fair_queue import QueuedWork
from services.core.files import file_image
from services.core.idempotency import IdempotencyClaim
from services.core.ids import new_id
from services.core.inputs.images import CheckedImage, check_image, image_bytes_from_reference
from services.core.inputs.prompts import (
    CanonicalRequest,
    GenerationParams,
    canonical_from_messages,
    canonical_from_question,
    check_fits_context,
)
from services.core.job_spec import JobSpec, SubmitOptions
from services.core.jobs.service import get_job
from services.core.logs import current_request_id
from services.core.model_info import served_model, served_revision
from services.core.moderation.service import moderation_jobs_spec
from services.core.moderation.stored import store_policies, stored_params
from services.core.presets import with_preset
from services.core.quota import refuse_over_quota
from services.core.requests.chat import ChatCompletionRequest
from services.core.requests.jobs import JobCreateRequest
from services.core.requests.moderations import ModerationRequest
from services.core.requests.responses import ResponseCreateRequest
from services.core.runtime import Runtime
from services.core.storage import count_stored, refuse_over_storage
from services.core.tables import IMAGES, JOBS, Job, JobStatus, image_hashes
from services.core.webhooks.subscriptions import parse_subscription

log = structlog.get_logger(__name__)


# --- requests -> specs -------------------------------------------------------------------


def webhook_options(url: str | None, events: list[str] | None, settings: Settings) -> Any:
    """`webhook` and `webhook_events` as `SubmitOptions` takes them, checked; 400 if bad."""
    hook = parse_subscription(url, events, settings)
    return {"webhook": hook.url if hook else None, "webhook_events": hook.events if hook else None}


def job_specs(
    session: Session,
    settings: Settings,
    tenant_id: str,
    body: JobCreateRequest,
    upload: bytes | None = None,
) -> list[JobSpec]:
    """The job of a `/v1/jobs` request (`upload`: the image of a multipart upload)."""
    model = served_model(body.model, settings)
    params = body.to_params(settings)
    hook = webhook_options(body.webhook, body.webhook_events_filter, settings)
    if upload is not None:
        request = canonical_from_question(check_image(upload, settings), body.question, settings)
    elif body.messages is not None:
        request = canonical_from_messages(body.messages, settings)
    elif body.image is not None:
        image = check_image(image_bytes_from_reference(body.image, settings), settings)
        request = canonical_from_question(image, body.question, settings)
    else:
        raise InvalidRequestError("send messages, or an image and a question", param="image")
    request = with_preset(session, tenant_id, request, body.preset, settings)
    options = SubmitOptions(
        model=model,
        metadata=body.metadata,
        band=body.band(),
        max_queue_ms=body.queue_limit_ms(settings),
        **hook,
    )
    return [checked(JobSpec(request, params, options), settings)]


def chat_specs(
    session: Session, settings: Settings, tenant_id: str, body: ChatCompletionRequest
) -> list[JobSpec]:
    """The jobs of a chat request: one per choice (`n`). With sampling and a seed, the
    choices' seeds are seed, seed+1, … (so they differ and each is reproducible); greedy
    choices are the same answer, which the cache and single flight compute once."""
    spec = conversation_spec(
        session, settings, tenant_id, body, body.messages, kind="chat", stream=body.stream
    )
    params = spec.params
    if params.temperature > 0 and params.seed is not None:
        return [
            replace(spec, params=params.model_copy(update={"seed": params.seed + index}))
            for index in range(body.n)
        ]
    return [spec] * body.n


def response_specs(
    session: Session, settings: Settings, tenant_id: str, body: ResponseCreateRequest
) -> list[JobSpec]:
    """The job of a Responses request. Its text is always published as it is generated, so
    a background response can be streamed (and a stream resumed) whenever it is read."""
    return [
        conversation_spec(
            session,
            settings,
            tenant_id,
            body,
            body.chat_messages(partial(file_url, session, settings, tenant_id)),
            kind="response",
            stream=True,
            metadata=body.metadata or {},
            response=body.options(),
        )
    ]


def file_url(session: Session, settings: Settings, tenant_id: str, file_id: str) -> str:
    """The tenant's image file as a data URL, as an `image_url` part carries an image."""
    data = file_image(session, tenant_id, file_id, settings.max_image_bytes)
    return "data:application/octet-stream;base64," + base64.b64encode(data).decode()


def conversation_spec(
    session: Session,
    settings: Settings,
    tenant_id: str,
    body: ChatCompletionRequest | ResponseCreateRequest,
    messages: Any,
    *,
    kind: str,
    stream: bool,
    metadata: dict[str, Any] | None = None,
    response: dict[str, Any] | None = None,
) -> JobSpec:
    """The job of an OpenAI conversation (chat messages), checked."""
    model = served_model(body.model, settings)
    params = body.to_params(settings)
    hook = webhook_options(body.webhook, body.webhook_events_filter, settings)
    request = canonical_from_messages(messages, settings)
    request = with_preset(session, tenant_id, request, body.preset, settings)
    options = SubmitOptions(
        kind=kind,
        model=model,
        metadata=metadata or {},
        stream=stream,
        band=body.band(),
        max_queue_ms=body.queue_limit_ms(settings),
        response=response,
        **hook,
    )
    return checked(JobSpec(request, params, options), settings)


def moderation_specs(
    session: Session,
    settings: Settings,
    tenant_id: str,
    body: ModerationRequest,
    stored_policy: dict[str, Any] | None = None,
) -> list[JobSpec]:
    """The scoring jobs of a moderation request, one per input, under the policy in force
    (`stored_policy`: the tenant's, when the caller has read it already)."""
    if served_model(body.model, settings) != settings.model_id:
        raise InvalidRequestError(
            "moderation scores with the base model only, not a LoRA adapter", param="model"
        )
    return moderation_jobs_spec(
        session,
        settings,
        tenant_id,
        body.input,
        body.categories,
        body.thresholds,
        stored_policy,
    )


def checked(spec: JobSpec, settings: Settings) -> JobSpec:
    """The spec, once its prompt and `max_tokens` fit the model's context (a 400 if not:
    in a batched model call it would fail every other request too), with its cost."""
    return replace(spec, cost_tokens=check_fits_context(spec.request, spec.params, settings))


# --- specs -> jobs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    """The jobs of a request, and whether they were made by an earlier request with the same
    `Idempotency-Key`."""

    jobs: list[Job]
    replayed: bool = False


def submit(
    runtime: Runtime,
    caller: Caller,
    endpoint: str,
    specs: list[JobSpec],
    *,
    idempotency_key: str | None = None,
    replay_finished_only: bool = False,
) -> Submitted:
    """Create the jobs of one request (all or none are accepted).

    The tenant's quota counts every job; a request with an `Idempotency-Key` (one job only)
    answers with the job an earlier one made, and is checked against the quota only when it
    makes one. `replay_finished_only`: a synchronous call's replay is a 409 while the first
    call's job runs (its answer belongs to the call still waiting for it).
    """
    claim = claim_of(runtime.settings, caller, endpoint, specs, idempotency_key)

    def create() -> list[Job]:
        refuse_over_quota(
            caller.unfinished_jobs,
            runtime.settings,
            adding=len(specs),
            unfinished_tokens=caller.unfinished_tokens,
            adding_tokens=sum(spec.cost_tokens for spec in specs),
        )
        admit(runtime, caller.tenant_id, specs)
        image_bytes = sum(len(image.data) for spec in specs for image in spec.request.images)
        refuse_over_storage(runtime, caller.tenant_id, image_bytes)
        jobs = create_jobs(runtime, caller.tenant_id, specs, claim)
        count_stored(caller.tenant_id, image_bytes)
        return jobs

    def replay(job_id: str) -> list[Job]:
        with runtime.sessions() as session:
            job = get_job(session, caller.tenant_id, job_id)
        if replay_finished_only and not job.job_status.is_terminal():
            raise idempotency.IdempotencyKeyInFlightError(
                f"the request with this {idempotency.HEADER} is still in flight (job {job_id})",
                param=idempotency.HEADER,
            )
        return [job]

    jobs, replayed = idempotency.submit_once(runtime.sessions, claim, create, replay)
    return Submitted(jobs, replayed)


def claim_of(
    settings: Settings,
    caller: Caller,
    endpoint: str,
    specs: list[JobSpec],
    key: str | None,
) -> IdempotencyClaim | None:
    """The claim of an `Idempotency-Key` on this exact request; None without a key."""
    if key is None:
        return None
    if len(specs) != 1:
        raise InvalidRequestError(
            f"{idempotency.HEADER} names one job: this request makes {len(specs)}",
            code="unsupported_parameter",
            param=idempotency.HEADER,
        )
    fingerprint = idempotency.fingerprint(endpoint, specs[0].fingerprint_fields())
    return idempotency.claim_from_header(key, caller.tenant_id, fingerprint, settings)


def create_jobs(
    runtime: Runtime,
    tenant_id: str,
    specs: list[JobSpec],
    claim: IdempotencyClaim | None = None,
) -> list[Job]:
    """Store the jobs (each answered from the cache when it can) in one transaction, then
    enqueue the ones a worker must run."""
    settings = runtime.settings
    jobs: list[Job] = []
    for spec in specs:
        job = Job(**job_values(settings, tenant_id, spec))
        cached = cached_answer(runtime, job)
        if cached is not None:
            mark_cache_hit(job, cached)
        jobs.append(job)
    with runtime.unit_of_work() as session:
        images = [image for spec in specs for image in spec.request.images]
        store_policies(session, [spec.params for spec in specs])
        add_jobs(session, jobs, images, claim)
    logs.annotate(job_id=jobs[0].id)
    for job in jobs:
        if job.cache_hit:
            metrics.job_ended(job.model, JobStatus.SUCCEEDED.value, created_at=job.created_at)
    enqueue_after_commit(runtime, [queued_work(job) for job in jobs if not job.cache_hit])
    return jobs


def add_jobs(
    session: Session,
    jobs: list[Job],
    images: list[CheckedImage],
    claim: IdempotencyClaim | None = None,
) -> None:
    """Store new jobs, their images and the idempotency key in the session's transaction
    (with the outbox event of a job born finished: a cache hit)."""
    store_images(session, images)
    insert_jobs(session, jobs)
    for job in jobs:
        if job.job_status.is_terminal():
            outbox.emit(session, outbox.JobFinished(job.id))
    if claim is not None:
        claim.record(session, jobs[0].id)


# The column of each attribute of a job (the attribute `metadata_` is the column `metadata`).
JOB_COLUMNS = {
    attribute.key: attribute.columns[0].key for attribute in sa.inspect(Job).column_attrs
}


def insert_jobs(session: Session, jobs: list[Job]) -> None:
    """Insert new jobs by a Core statement into the table (the ORM's unit of work cost more
    than the statement on the submit path). The jobs stay out of the session, as the
    caller built them: every column a caller set is inserted, every other gets its column
    default."""
    insert_job_values(session, [vars(job) for job in jobs])


def insert_job_values(session: Session, jobs: list[dict[str, Any]]) -> None:
    """Insert new jobs given as their attributes' values (as `job_values` makes them) by a
    Core statement into the table, rows that set the same columns in one statement (no ORM
    object, nor the ORM's bulk insert, per row)."""
    rows: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for job in jobs:
        row = {JOB_COLUMNS[name]: value for name, value in job.items() if name in JOB_COLUMNS}
        rows.setdefault(tuple(row), []).append(row)
    for same_columns in rows.values():
        session.execute(sa.insert(JOBS), same_columns)


def submit_job(runtime: Runtime, tenant_id: str, spec: JobSpec) -> Job:
    """Create one job outside any request (no quota, no key): benchmarks and tests."""
    return create_jobs(runtime, tenant_id, [checked(spec, runtime.settings)])[0]


def cached_answer(runtime: Runtime, job: Job) -> dict[str, Any] | None:
    """The cached answer of a deterministic job, if any; a 503 while Redis is down."""
    if job.cache_key is None:
        return None
    try:
        cached = cache.get_cached(runtime.redis, job.cache_key)
    except redis.RedisError as exc:
        raise ServiceUnavailableError("the queue (Redis) is unavailable") from exc
    metrics.cache_looked_up(job.model, hit=cached is not None)
    return cached


def mark_cache_hit(job: Job, cached: dict[str, Any]) -> None:
    """Make a new job a cache hit: born succeeded, never sent to a worker."""
    job.status = JobStatus.SUCCEEDED.value
    job.output = cached.get("output")
    job.result = cached.get("result")
    job.cache_hit = True
    job.started_at = job.completed_at = job.created_at
    job.enqueued_at = None
    job.metrics = {"queue_ms": 0.0, "inference_ms": 0.0, "total_ms": 0.0}


def request_cache_key(settings: Settings, tenant_id: str, spec: JobSpec) -> str | None:
    """The cache key of a deterministic request; None for one that samples freely."""
    if not cache.is_cacheable(spec.params):
        return None
    model = spec.options.model or settings.model_id
    return cache.cache_key(
        model_revision=served_revision(settings, model),
        messages=spec.request.messages,
        params=spec.params,
        tenant_id=None if settings.cache_shared else tenant_id,
    )


def job_values(
    settings: Settings, tenant_id: str, spec: JobSpec, job_id: str | None = None
) -> dict[str, Any]:
    """The column values of a new queued job (by attribute name), for the ORM or a bulk
    insert."""
    now = utcnow()
    options = spec.options
    return dict(
        id=job_id or new_id("job"),
        tenant_id=tenant_id,
        kind=options.kind,
        model=options.model or settings.model_id,
        messages=spec.request.messages,
        params=stored_params(spec.params),
        status=JobStatus.QUEUED.value,
        cache_key=request_cache_key(settings, tenant_id, spec),
        first_image=next(iter(image_hashes(spec.request.messages)), None),
        image_bytes=sum(len(image.data) for image in spec.request.images),
        stream=options.stream,
        metadata_=options.metadata,
        webhook=options.webhook,
        webhook_events=options.webhook_events,
        batch_id=options.batch_id,
        custom_id=options.custom_id,
        moderation=options.moderation,
        response=options.response,
        request_id=current_request_id(),
        metrics={},
        attempts=0,
        cache_hit=False,
        band=int(options.band),
        cost_tokens=spec.cost_tokens,
        queue_deadline_at=(
            now + timedelta(milliseconds=options.max_queue_ms) if options.max_queue_ms else None
        ),
        created_at=now,
        enqueued_at=now,
    )


def queued_work(job: Job | dict[str, Any]) -> QueuedWork:
    """A job row (or its column values) as the fair queue keeps it."""

    def value(name: str) -> Any:
        return job[name] if isinstance(job, dict) else getattr(job, name)

    return QueuedWork(
        job_id=value("id"),
        tenant_id=value("tenant_id"),
        band=Band(value("band")),
        cost=int(value("cost_tokens")),
    )


def failed_job_values(
    settings: Settings, tenant_id: str, error: VlmqError, options: SubmitOptions, job_id: str
) -> dict[str, Any]:
    """The column values of a job that failed before it could be made (a bad batch line):
    it ends at once with the error the live endpoint would have answered."""
    nothing = JobSpec(CanonicalRequest([], []), GenerationParams(), options)
    values = job_values(settings, tenant_id, nothing)
    now = values["created_at"]
    values.update(
        id=job_id,
        params={},
        status=JobStatus.FAILED.value,
        cache_key=None,
        error={
            "type": error.code,
            "message": error.message,
            "param": error.param,
            "status": error.status,
            "error_type": error.type,
        },
        completed_at=now,
        enqueued_at=None,
    )
    return values


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
    # Rows as parameters (not one VALUES list): the compiled statement is cached. Into the
    # table, not the entity: the ORM's bulk-insert machinery cost more than the statement.
    session.execute(insert(IMAGES).on_conflict_do_nothing(index_elements=["sha256"]), rows)


def enqueue_after_commit(runtime: Runtime, work: list[QueuedWork]) -> None:
    """Send committed jobs to their queue. If the broker is down, they stay queued and out of
    the fair queue, and the maintenance pass sends them once it is back: the jobs are
    accepted."""
    if not work:
        return
    try:
        runtime.broker.enqueue_jobs(work)
    except Exception:
        log.exception("enqueue_failed", jobs=len(work))
