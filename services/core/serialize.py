"""The JSON shapes of domain objects, shared by the API responses and webhook payloads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.core.models import Job


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds, or None."""
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else None


def job_response(job: Job) -> dict[str, Any]:
    """The job object of DESIGN.md."""
    return {
        "id": job.id,
        "object": "job",
        "status": job.status,
        "model": job.model,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "completed_at": iso(job.completed_at),
        "output": job.output,
        "result": job.result,
        "error": job.error,
        "cache_hit": job.cache_hit,
        "attempts": job.attempts,
        "metrics": job.metrics or {},
        "urls": {"get": f"/v1/jobs/{job.id}", "cancel": f"/v1/jobs/{job.id}/cancel"},
        "metadata": job.metadata_ or {},
    }
