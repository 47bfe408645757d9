"""The ORM models: tenants, API keys, images (content-addressed) and jobs."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from services.core.db import Base, UTCDateTime, utcnow


class JobStatus(StrEnum):
    """Where a job is in its life: `queued → running → succeeded | failed | canceled`."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    def is_terminal(self) -> bool:
        """Terminal states are final: nothing changes a job after it reaches one."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


class Tenant(Base):
    """A customer of the deployment; every job, key and file belongs to one."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Job(Base):
    """One request to the model and everything that happened to it."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        sa.Index("ix_jobs_status_lease", "status", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    # "job" for /v1/jobs, "chat" for /v1/chat/completions.
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
    # The worker publishes generated text as it appears (`stream: true` chat calls).
    stream: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    metrics: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", sa.JSON, default=dict)
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
        return [
            part["sha256"]
            for message in self.messages
            if isinstance(message.get("content"), list)
            for part in message["content"]
            if part.get("type") == "image"
        ]
