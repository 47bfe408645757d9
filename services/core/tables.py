"""The database tables (SQLAlchemy ORM classes) and the status enums of jobs, batches and
webhook deliveries."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from services.core.db import Base, UTCDateTime, utcnow


class JobStatus(StrEnum):
    """Where a job is in its life: `queued → running → succeeded | failed | canceled`, or
    `queued → expired`."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    # Not started before its `max_queue_ms`: it never ran.
    EXPIRED = "expired"

    def is_terminal(self) -> bool:
        """Terminal states are final: nothing changes a job after it reaches one."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.EXPIRED}
)
# Queued or running: a job that may still change.
UNFINISHED_STATUSES = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


class BatchStatus(StrEnum):
    """OpenAI's batch states: `validating → in_progress → finalizing → completed`, or `failed`
    (the input cannot run), or `cancelling → cancelled | expired`."""

    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    def is_terminal(self) -> bool:
        """Terminal states are final."""
        return self in BATCH_TERMINAL_STATUSES


BATCH_TERMINAL_STATUSES = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED, BatchStatus.EXPIRED}
)


class DeliveryStatus(StrEnum):
    """The states of a webhook delivery: `pending → delivered | failed | gone` (a 410)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    GONE = "gone"


class Tenant(Base):
    """A customer of the deployment; every job, key and file belongs to one."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The Standard Webhooks secret (`whsec_...`) that signs this tenant's webhooks, sealed
    # with the deployment's secret key (services.core.secret_box); after a rotation, the one
    # it replaced, which signs beside it until `previous_webhook_secret_until`.
    webhook_secret: Mapped[str | None] = mapped_column(sa.String(400))
    previous_webhook_secret: Mapped[str | None] = mapped_column(sa.String(400))
    previous_webhook_secret_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The tenant's moderation policy: {category: {"question": ..., "threshold": ...}}.
    moderation_policy: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    # Whether that policy screens the images of every job of the tenant before it is answered.
    screen_inputs: Mapped[bool] = mapped_column(
        sa.Boolean, default=False, server_default=sa.false()
    )
    # Its share of the model against other backlogged tenants (2: twice a weight-1 tenant's).
    weight: Mapped[float] = mapped_column(sa.Float, default=1.0, server_default="1")

    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="tenant")


class ApiKey(Base):
    """An API key, stored only as the SHA-256 of the key (keys are long random strings)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # The first characters of the key, so an operator can tell keys apart.
    prefix: Mapped[str] = mapped_column(sa.String(16))
    label: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the key last authenticated a request, to within `auth.LAST_USED_RESOLUTION_S`.
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    tenant: Mapped[Tenant] = relationship(back_populates="api_keys")


class Image(Base):
    """An uploaded image, stored once per content hash, so jobs can be re-run from the database."""

    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    media_type: Mapped[str] = mapped_column(sa.String(40))
    width: Mapped[int] = mapped_column(sa.Integer)
    height: Mapped[int] = mapped_column(sa.Integer)
    byte_size: Mapped[int] = mapped_column(sa.Integer)
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)
    # When the first job brought it; pruning finds old images by it.
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class ScorePolicy(Base):
    """The questions of a moderation policy, stored once per content hash: a moderation job
    names them by hash (`params.score_policy`) instead of carrying a copy of its own."""

    __tablename__ = "score_policies"

    sha256: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    # {category: question}
    questions: Mapped[dict[str, str]] = mapped_column(sa.JSON)
    # When a job last named it; pruning removes the policies no job has named for a while.
    used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class Job(Base):
    """One request to the model and everything that happened to it."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        sa.Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        # A tenant's unfinished jobs are counted for its quota.
        sa.Index("ix_jobs_tenant_status", "tenant_id", "status"),
        # Pruning finds terminal jobs finished before the retention cutoff.
        sa.Index("ix_jobs_status_completed", "status", "completed_at"),
        # A batch's lines, in id order: its counts, and its result files a page at a time
        # (keyset on the id), each page read in order from the batch's own lines rather
        # than from every job of one status in the database, sorted.
        sa.Index("ix_jobs_batch_id_id", "batch_id", "id"),
        # A batch's counts by status, from the index (a progress check every half second
        # while the batch runs; reading each line's row for its status cost 11-16 ms a
        # check on a 10,000-line batch). Jobs of no batch are left out of it.
        sa.Index(
            "ix_jobs_batch_status",
            "batch_id",
            "status",
            sqlite_where=sa.text("batch_id IS NOT NULL"),
            postgresql_where=sa.text("batch_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    # "job" for /v1/jobs, "chat" for /v1/chat/completions, "response" for /v1/responses,
    # "moderation" for /v1/moderations.
    kind: Mapped[str] = mapped_column(sa.String(20), default="job")
    model: Mapped[str] = mapped_column(sa.String(200))
    # Canonical messages; images appear as {"type": "image", "sha256": ...}.
    messages: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON)
    params: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    status: Mapped[str] = mapped_column(sa.String(20), default=JobStatus.QUEUED.value)
    output: Mapped[str | None] = mapped_column(sa.Text)
    # Parsed parts of the output (answer, reasoning, boxes), usage and finish reason.
    result: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    cache_hit: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    cache_key: Mapped[str | None] = mapped_column(sa.String(80))
    # The SHA-256 of the first image in the messages: the claim returns its bytes.
    first_image: Mapped[str | None] = mapped_column(sa.String(64))
    # The worker publishes generated text as it appears (`stream: true` chat calls).
    stream: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    metrics: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", sa.JSON, default=dict)
    # Where to POST the job's events, and which ones ("start", "completed").
    webhook: Mapped[str | None] = mapped_column(sa.Text)
    webhook_events: Mapped[list[str] | None] = mapped_column(sa.JSON)
    # Jobs of a batch: the batch, and the input line's custom_id.
    batch_id: Mapped[str | None] = mapped_column(sa.String(40))
    custom_id: Mapped[str | None] = mapped_column(sa.String(200))
    # Moderation jobs: the thresholds in force and the kinds of input ("image", "text").
    moderation: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    # Responses API jobs: what the response object echoes (`background`, `store`,
    # `instructions`, `service_tier`).
    response: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    # A background response's token stream (`notify.stream_log`), kept when an attempt ends:
    # Redis lets the stream go after `notify.STREAM_TTL_S`, and its events must replay with
    # the same numbers for as long as the response is kept.
    stream_log: Mapped[list[dict[str, Any]] | None] = mapped_column(sa.JSON)
    # The `x-request-id` of the request that made the job (a batch line: its batch's), bound
    # to the worker's and the webhook's log lines.
    request_id: Mapped[str | None] = mapped_column(sa.String(128))
    # Its priority band (`services.core.bands.Band`) and the tokens it may cost (prompt plus
    # `max_tokens`): what fair queuing and the token quota read.
    band: Mapped[int] = mapped_column(sa.SmallInteger, default=1, server_default="1")
    cost_tokens: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    # The bytes of the images the request brought (what its tenant's storage quota counts).
    image_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # Not started by then: it ends `expired` (`max_queue_ms`).
    queue_deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def job_status(self) -> JobStatus:
        """The status as the enum."""
        return JobStatus(self.status)

    @property
    def image_hashes(self) -> list[str]:
        """The SHA-256 of each image in the messages, in order."""
        return image_hashes(self.messages)


# The jobs and images tables, for the statements every job runs (its submit, claim and
# finish): a Core statement skips the ORM's bulk-insert and bulk-update machinery, which
# cost as much again as the statement on SQLite.
JOBS = cast(sa.Table, Job.__table__)
IMAGES = cast(sa.Table, Image.__table__)


def image_hashes(messages: list[dict[str, Any]]) -> list[str]:
    """The SHA-256 of each image in canonical messages, in order."""
    return [
        part["sha256"]
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image"
    ]


class WebhookDelivery(Base):
    """One event to deliver; its id is the `webhook-id` on every attempt."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
        # Pruning finds ended deliveries by when they ended.
        sa.Index("ix_webhook_deliveries_status_completed", "status", "completed_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[str | None] = mapped_column(sa.String(40), index=True)
    batch_id: Mapped[str | None] = mapped_column(sa.String(40))
    event: Mapped[str] = mapped_column(sa.String(20))
    url: Mapped[str] = mapped_column(sa.Text)
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    # The request id of the job or batch the event is about (for the delivery's log lines).
    request_id: Mapped[str | None] = mapped_column(sa.String(128))
    # An event for one of the tenant's webhook endpoints: signed with that endpoint's secret
    # (None: a job's or batch's own webhook, signed with the tenant's secret).
    endpoint_id: Mapped[str | None] = mapped_column(sa.String(40))
    # pending → delivered | failed (retries used up) | gone (the receiver answered 410)
    status: Mapped[str] = mapped_column(sa.String(20), default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebhookEndpoint(Base):
    """A URL a tenant has subscribed to OpenAI-shaped events (`response.completed`,
    `batch.completed`, …), with a signing secret of its own (stored sealed)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(sa.Text)
    # A name for people (OpenAI's `name`).
    name: Mapped[str] = mapped_column(sa.String(200), default="")
    enabled_events: Mapped[list[str]] = mapped_column(sa.JSON)
    secret: Mapped[str] = mapped_column(sa.String(400))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookAttempt(Base):
    """One try at delivering an event: what came back and how long it took."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(sa.Integer)
    status_code: Mapped[int | None] = mapped_column(sa.Integer)
    latency_ms: Mapped[float] = mapped_column(sa.Float)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class IdempotencyKey(Base):
    """A client's `Idempotency-Key`: the request it named and the object that request made."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "key"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(sa.String(255))
    # SHA-256 of the endpoint and the canonical request body.
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    object_id: Mapped[str] = mapped_column(sa.String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Preset(Base):
    """A tenant's named system prompt: a request picks it with `"preset": name`."""

    __tablename__ = "presets"

    tenant_id: Mapped[str] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    system_prompt: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class File(Base):
    """An uploaded or generated file (OpenAI Files shape); its bytes live in `file_chunks`."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(sa.String(40))
    filename: Mapped[str] = mapped_column(sa.String(255))
    bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When the file is deleted (OpenAI's `expires_at`); None keeps it.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)


class FileChunk(Base):
    """A piece of a file, so large files are written and read without holding them whole."""

    __tablename__ = "file_chunks"

    file_id: Mapped[str] = mapped_column(
        sa.ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)


class Batch(Base):
    """A batch of requests (OpenAI Batch API shape), run as one job per input line."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    endpoint: Mapped[str] = mapped_column(sa.String(60))
    input_file_id: Mapped[str] = mapped_column(sa.String(40))
    completion_window: Mapped[str] = mapped_column(sa.String(20))
    # validating → in_progress → finalizing → completed (or failed, cancelling, cancelled, expired)
    status: Mapped[str] = mapped_column(sa.String(20), default=BatchStatus.VALIDATING.value)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", sa.JSON, default=dict)
    webhook: Mapped[str | None] = mapped_column(sa.Text)
    # OpenAI's `output_expires_after.seconds`: the life of the output and error files from
    # their creation (None: the deployment's file retention).
    output_expires_after_s: Mapped[int | None] = mapped_column(sa.Integer)
    output_file_id: Mapped[str | None] = mapped_column(sa.String(40))
    error_file_id: Mapped[str | None] = mapped_column(sa.String(40))
    total: Mapped[int] = mapped_column(sa.Integer, default=0)
    completed: Mapped[int] = mapped_column(sa.Integer, default=0)
    failed: Mapped[int] = mapped_column(sa.Integer, default=0)
    errors: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    # The `x-request-id` of the request that created the batch; its lines carry it too.
    request_id: Mapped[str | None] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    in_progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finalizing_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelling_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class OutboxEvent(Base):
    """An event of a state change that still has consequences to carry out (a webhook to
    schedule, a batch to advance); written in the change's transaction, deleted once done."""

    __tablename__ = "outbox_events"
    # Ids are never reused (SQLite would reuse a deleted top id), so deleting a carried-out
    # row by id can never delete a newer one.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    # The event's kind ("job_started", "job_finished", "batch_finished") and its fields.
    kind: Mapped[str] = mapped_column(sa.String(40))
    data: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class AuditEvent(Base):
    """One administrative change, or one sign of unusual behaviour, for an operator's eye:
    who (a key's id, `operator` for the command line, `vlmq` for the service itself), what,
    when and from where. Nothing secret is ever written here."""

    __tablename__ = "audit_events"

    # The order events happened in (keyset pagination walks it).
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(sa.String(40), unique=True)
    # The tenant it concerns; None: the deployment (an address failing to authenticate).
    tenant_id: Mapped[str | None] = mapped_column(sa.String(40), index=True)
    actor: Mapped[str] = mapped_column(sa.String(64))
    action: Mapped[str] = mapped_column(sa.String(64))
    target: Mapped[str | None] = mapped_column(sa.String(200))
    address: Mapped[str | None] = mapped_column(sa.String(64))
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
