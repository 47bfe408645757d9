"""The JSON of domain objects (jobs, chat completions, batches, files, moderation), shared by
the API responses, webhook payloads and batch result files, each built through its model in
`services.core.shapes` (which the OpenAPI document describes the responses with)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.core import shapes
from services.core.models import Batch, File, Job
from services.core.moderation.policy import DEFAULT_THRESHOLD
from services.core.shapes import shaped


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds, or None."""
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else None


def job_response(job: Job) -> dict[str, Any]:
    """The job object of DESIGN.md."""
    return shaped(
        shapes.JobObject,
        id=job.id,
        object="job",
        status=job.status,
        model=job.model,
        created_at=iso(job.created_at),
        started_at=iso(job.started_at),
        completed_at=iso(job.completed_at),
        output=job.output,
        result=job.result,
        error=job.error,
        cache_hit=job.cache_hit,
        attempts=job.attempts,
        metrics=job.metrics or {},
        urls=job_urls(job),
        metadata=job.metadata_ or {},
    )


def job_urls(job: Job) -> dict[str, str]:
    """Where the job is read and canceled, and its webhook deliveries if it has a webhook."""
    urls = {"get": f"/v1/jobs/{job.id}", "cancel": f"/v1/jobs/{job.id}/cancel"}
    if job.webhook:
        urls["webhook_deliveries"] = f"/v1/jobs/{job.id}/webhook_deliveries"
    return urls


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


def delta_choice(
    delta: dict[str, Any],
    finish_reason: str | None = None,
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The only choice of a chunk (with its tokens' log-probabilities, when asked for)."""
    return {
        "index": 0,
        "delta": delta,
        "finish_reason": finish_reason,
        "logprobs": {"content": logprobs} if logprobs is not None else None,
    }


def chat_completion_response(job: Job, *more: Job) -> dict[str, Any]:
    """A finished job as a `chat.completion` object; `more` jobs (of a request with `n` > 1)
    are its further choices, and their completion tokens add to the usage."""
    jobs = (job, *more)
    usage = dict(
        (job.result or {}).get("usage")
        or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    )
    if more:
        completion = sum(
            ((j.result or {}).get("usage") or {}).get("completion_tokens", 0) for j in jobs
        )
        usage["completion_tokens"] = completion
        usage["total_tokens"] = usage.get("prompt_tokens", 0) + completion
    extension: dict[str, Any] = {
        "job_id": job.id,
        "cache_hit": job.cache_hit,
        "metrics": job.metrics or {},
    }
    if more:
        extension["job_ids"] = [j.id for j in jobs]
    return shaped(
        shapes.ChatCompletion,
        id=completion_id(job),
        object="chat.completion",
        created=int(job.created_at.timestamp()),
        model=job.model,
        choices=[chat_choice(index, j) for index, j in enumerate(jobs)],
        usage=usage,
        system_fingerprint=None,
        vlmq=extension,
    )


def chat_choice(index: int, job: Job) -> dict[str, Any]:
    """One choice of a `chat.completion`: the job's answer (and its reasoning, if any)."""
    result = job.result or {}
    message: dict[str, Any] = {"role": "assistant", "content": job.output or ""}
    if result.get("reasoning"):
        message["reasoning_content"] = result["reasoning"]
    return {
        "index": index,
        "message": message,
        "finish_reason": result.get("finish_reason", "stop"),
        # {"content": [...]} when the request asked for `logprobs`.
        "logprobs": result.get("logprobs"),
    }


def epoch_seconds(value: datetime | None) -> int | None:
    """A timestamp as Unix seconds (OpenAI's objects use them), or None."""
    return int(value.timestamp()) if value else None


def batch_response(batch: Batch) -> dict[str, Any]:
    """The OpenAI batch object."""
    return shaped(
        shapes.BatchObject,
        id=batch.id,
        object="batch",
        endpoint=batch.endpoint,
        errors=batch.errors,
        input_file_id=batch.input_file_id,
        completion_window=batch.completion_window,
        status=batch.status,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        created_at=epoch_seconds(batch.created_at),
        in_progress_at=epoch_seconds(batch.in_progress_at),
        expires_at=epoch_seconds(batch.expires_at),
        finalizing_at=epoch_seconds(batch.finalizing_at),
        completed_at=epoch_seconds(batch.completed_at),
        failed_at=epoch_seconds(batch.failed_at),
        expired_at=epoch_seconds(batch.expired_at),
        cancelling_at=epoch_seconds(batch.cancelling_at),
        cancelled_at=epoch_seconds(batch.cancelled_at),
        request_counts={"total": batch.total, "completed": batch.completed, "failed": batch.failed},
        metadata=batch.metadata_ or None,
    )


def openai_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """A page of a list in OpenAI's shape: `data`, `first_id`, `last_id`, `has_more`."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def file_response(file: File) -> dict[str, Any]:
    """The OpenAI file object."""
    return shaped(
        shapes.FileObject,
        id=file.id,
        object="file",
        bytes=file.bytes,
        created_at=epoch_seconds(file.created_at),
        expires_at=epoch_seconds(file.expires_at),
        filename=file.filename,
        purpose=file.purpose,
        status="processed",
        status_details=None,
    )


def moderation_result(
    scores: dict[str, float], thresholds: dict[str, float], input_types: list[str]
) -> dict[str, Any]:
    """One entry of OpenAI's moderation `results`: a category is flagged at its threshold."""
    flags = {name: scores[name] >= thresholds.get(name, DEFAULT_THRESHOLD) for name in scores}
    return {
        "flagged": any(flags.values()),
        "categories": flags,
        "category_scores": scores,
        "category_applied_input_types": {name: input_types for name in scores},
    }


def job_moderation_result(job: Job) -> dict[str, Any]:
    """The `results` entry of a finished scoring job."""
    context = job.moderation or {}
    scores = (job.result or {}).get("scores") or {}
    return moderation_result(scores, context.get("thresholds", {}), context.get("input_types", []))


def moderation_response(finished: list[Job]) -> dict[str, Any]:
    """OpenAI's moderation response for the finished jobs of one request."""
    return shaped(
        shapes.ModerationResponse,
        id="modr-" + finished[0].id.removeprefix("job_"),
        model=finished[0].model,
        results=[job_moderation_result(job) for job in finished],
    )
