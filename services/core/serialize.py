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


def completion_id(job: Job) -> str:
    """The OpenAI-style id of a chat job."""
    return "chatcmpl-" + job.id.removeprefix("job_")


def chunk(job: Job, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """One `chat.completion.chunk` of a streamed answer."""
    return {
        "id": completion_id(job),
        "object": "chat.completion.chunk",
        "created": int(job.created_at.timestamp()),
        "model": job.model,
        "choices": choices,
        **extra,
    }


def delta_choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    """The only choice of a chunk."""
    return {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}


def chat_completion_response(job: Job) -> dict[str, Any]:
    """A finished job as a `chat.completion` object."""
    result = job.result or {}
    usage = result.get("usage") or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    message: dict[str, Any] = {"role": "assistant", "content": job.output or ""}
    if result.get("reasoning"):
        message["reasoning_content"] = result["reasoning"]
    return {
        "id": completion_id(job),
        "object": "chat.completion",
        "created": int(job.created_at.timestamp()),
        "model": job.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": result.get("finish_reason", "stop"),
                "logprobs": None,
            }
        ],
        "usage": usage,
        "system_fingerprint": None,
        "vlmq": {"job_id": job.id, "cache_hit": job.cache_hit, "metrics": job.metrics or {}},
    }
