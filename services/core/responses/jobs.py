"""The job object, and a page of jobs."""

from __future__ import annotations

from typing import Any, Literal

from services.core.bands import Band
from services.core.responses.base import ResponseModel, iso
from services.core.tables import Job


class JobUrls(ResponseModel):
    """Where a job is read and canceled (and its webhook deliveries, with a webhook)."""

    get: str
    cancel: str
    webhook_deliveries: str | None = None

    @classmethod
    def of(cls, job: Job) -> JobUrls:
        """The job's URLs."""
        urls = cls(get=f"/v1/jobs/{job.id}", cancel=f"/v1/jobs/{job.id}/cancel")
        if job.webhook:
            urls.webhook_deliveries = f"/v1/jobs/{job.id}/webhook_deliveries"
        return urls


class JobResponse(ResponseModel):
    """A job: one question about images, its status, answer and timings."""

    id: str
    object: Literal["job"]
    status: Literal["queued", "running", "succeeded", "failed", "canceled", "expired"]
    model: str
    # Its priority band (OpenAI's `service_tier` names; batch lines: "batch").
    service_tier: Literal["priority", "default", "flex", "batch"]
    # While queued: about how many units of work run before it (fair order across tenants).
    queue_position: int | None = None
    created_at: str
    started_at: str | None
    completed_at: str | None
    output: str | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    cache_hit: bool
    attempts: int
    metrics: dict[str, Any]
    urls: JobUrls
    metadata: dict[str, str]

    @classmethod
    def of(cls, job: Job, queue_position: int | None = None) -> JobResponse:
        """The job object of a job (`queue_position`: where it waits, while queued)."""
        return cls(
            id=job.id,
            object="job",
            status=job.status,  # type: ignore[arg-type]
            model=job.model,
            service_tier=Band(job.band).label,  # type: ignore[arg-type]
            queue_position=queue_position,
            created_at=iso(job.created_at) or "",
            started_at=iso(job.started_at),
            completed_at=iso(job.completed_at),
            output=job.output,
            result=job.result,
            error=job.error,
            cache_hit=job.cache_hit,
            attempts=job.attempts,
            metrics=job.metrics or {},
            urls=JobUrls.of(job),
            metadata=job.metadata_ or {},
        )

    @classmethod
    def as_started(cls, job: Job) -> JobResponse:
        """The job as its `start` event reports it: running, with nothing of its end. The
        event's effect may run after the job has ended (its outbox entry waited for a
        relay, or its worker was killed), and a `start` delivery that showed the final
        state would read as a second completion."""
        return cls.of(job).model_copy(
            update={
                "status": "running",
                "completed_at": None,
                "output": None,
                "result": None,
                "error": None,
                "cache_hit": False,
                "metrics": {},
            }
        )


class JobListResponse(ResponseModel):
    """A page of jobs, newest first."""

    object: Literal["list"]
    data: list[JobResponse]
    has_more: bool
    next_cursor: str | None

    @classmethod
    def of(cls, jobs: list[Job], has_more: bool) -> JobListResponse:
        """A page of jobs (`next_cursor`: the last id, when there is more)."""
        return cls(
            object="list",
            data=[JobResponse.of(job) for job in jobs],
            has_more=has_more,
            next_cursor=jobs[-1].id if has_more and jobs else None,
        )
