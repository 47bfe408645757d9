"""OpenAI's `response` object, and the events of its stream, for Responses API jobs.

A response is a job of kind `response`: its id is the job's with OpenAI's `resp_` prefix,
and its status is the job's, in OpenAI's words.
"""

from __future__ import annotations

from typing import Any, Literal

from services.core.responses.base import ResponseModel, epoch_seconds
from services.core.tables import Job, JobStatus

RESPONSE_PREFIX = "resp_"
JOB_PREFIX = "job_"

Status = Literal["queued", "in_progress", "completed", "failed", "cancelled", "incomplete"]
# A job's status as a response's; a finished job cut off by its token limit is `incomplete`.
STATUSES: dict[JobStatus, Status] = {
    JobStatus.QUEUED: "queued",
    JobStatus.RUNNING: "in_progress",
    JobStatus.SUCCEEDED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELED: "cancelled",
    JobStatus.EXPIRED: "failed",
}


def response_id(job: Job) -> str:
    """The response id of a Responses API job."""
    return RESPONSE_PREFIX + job.id.removeprefix(JOB_PREFIX)


def job_id_of(response: str) -> str | None:
    """The job id behind a response id; None for an id that is not a response's."""
    if not response.startswith(RESPONSE_PREFIX):
        return None
    return JOB_PREFIX + response.removeprefix(RESPONSE_PREFIX)


def message_id(job: Job) -> str:
    """The id of the response's one output message."""
    return "msg_" + job.id.removeprefix(JOB_PREFIX)


def status_of(job: Job) -> Status:
    """The response's status."""
    status = STATUSES[JobStatus(job.status)]
    if status == "completed" and (job.result or {}).get("finish_reason") == "length":
        return "incomplete"
    return status


def output_logprobs(entries: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Chat-shaped token log-probabilities in the Responses shape (`bytes` always a list)."""

    def entry(item: dict[str, Any]) -> dict[str, Any]:
        return {
            "token": item.get("token", ""),
            "logprob": item.get("logprob", 0.0),
            "bytes": item.get("bytes") or [],
        }

    return [
        {**entry(item), "top_logprobs": [entry(top) for top in item.get("top_logprobs") or []]}
        for item in entries or []
    ]


def text_part(text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An `output_text` content part."""
    part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
    if logprobs is not None:
        part["logprobs"] = output_logprobs(logprobs)
    return part


def message_item(job: Job, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    """The response's output message."""
    return {
        "id": message_id(job),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def final_part(job: Job) -> dict[str, Any]:
    """The answer of a finished job as its output text part."""
    result = job.result or {}
    asked = bool((job.params or {}).get("logprobs"))
    entries = (result.get("logprobs") or {}).get("content") if asked else None
    return text_part(job.output or "", entries if asked else None)


def usage_of(job: Job) -> dict[str, Any] | None:
    """OpenAI's Responses usage of a finished job, None before it has any."""
    usage = (job.result or {}).get("usage")
    if not usage:
        return None
    return {
        "input_tokens": usage.get("prompt_tokens", 0),
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.get("completion_tokens", 0),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.get("total_tokens", 0),
    }


class ResponseObject(ResponseModel):
    """OpenAI's `response`, with vlmq's job id, cache hit and timings in `vlmq`."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Status
    background: bool
    model: str
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None
    error: dict[str, Any] | None
    incomplete_details: dict[str, Any] | None
    completed_at: int | None
    instructions: str | None
    max_output_tokens: int | None
    temperature: float | None
    top_p: float | None
    metadata: dict[str, str]
    service_tier: str
    store: bool
    text: dict[str, Any]
    tools: list[Any]
    tool_choice: str
    parallel_tool_calls: bool
    truncation: str
    vlmq: dict[str, Any]

    @classmethod
    def of(cls, job: Job, status: Status | None = None) -> ResponseObject:
        """The job as a response; `status` shows it as it was at an earlier point of its
        life (the first events of a stream), with no output yet."""
        shown = status or status_of(job)
        ended = status is None and shown in ("completed", "incomplete")
        options = job.response or {}
        params = job.params or {}
        error = None
        if status is None and shown == "failed":
            message = (job.error or {}).get("message") or f"the job {job.status}"
            # An image refused by its tenant's screening policy: OpenAI's code for an image
            # its content policy refused.
            filtered = (job.error or {}).get("type") == "content_filter"
            code = "image_content_policy_violation" if filtered else "server_error"
            error = {"code": code, "message": message}
        return cls(
            id=response_id(job),
            object="response",
            created_at=int(job.created_at.timestamp()),
            status=shown,
            background=bool(options.get("background")),
            model=job.model,
            output=[message_item(job, shown, [final_part(job)])] if ended else [],
            usage=usage_of(job) if ended else None,
            error=error,
            incomplete_details=(
                {"reason": "max_output_tokens"} if ended and shown == "incomplete" else None
            ),
            completed_at=epoch_seconds(job.completed_at) if status is None else None,
            instructions=options.get("instructions"),
            max_output_tokens=params.get("max_tokens"),
            temperature=params.get("temperature"),
            top_p=params.get("top_p"),
            metadata=job.metadata_ or {},
            service_tier=options.get("service_tier", "auto"),
            store=bool(options.get("store", True)),
            text=options.get("text") or {"format": {"type": "text"}},
            tools=[],
            tool_choice="auto",
            parallel_tool_calls=True,
            truncation="disabled",
            vlmq=(
                {"job_id": job.id}
                if status is not None  # an earlier point's snapshot: what never changes
                else {"job_id": job.id, "cache_hit": job.cache_hit, "metrics": job.metrics or {}}
            ),
        )


class DeletedResponse(ResponseModel):
    """The answer of `DELETE /v1/responses/{id}`."""

    id: str
    object: Literal["response"]
    deleted: bool
