"""Server-Sent Events for `stream: true`: OpenAI chunks as the worker generates text."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from services.core.errors import JobFailedError
from services.core.jobs import service as jobs
from services.core.notify import read_stream
from services.core.responses.chat import ChatCompletionChunk, ChunkChoice
from services.core.responses.errors import ErrorResponse
from services.core.runtime import Runtime
from services.core.tables import Job, JobStatus


def sse(payload: dict[str, Any] | str) -> str:
    """One Server-Sent Event."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


def chunk(job: Job, choices: list[ChunkChoice], **extra: Any) -> str:
    """One chunk of the job's answer as an event."""
    return sse(ChatCompletionChunk.of(job, choices, **extra).dump())


def stream_chat(runtime: Runtime, job: Job, include_usage: bool) -> Iterator[str]:
    """Chunks of the job's answer as they are generated, then the finish, usage and [DONE]."""
    yield chunk(job, [ChunkChoice.of({"role": "assistant", "content": ""})])
    asked_logprobs = bool((job.params or {}).get("logprobs"))
    sent = ""
    # Log-probability entries sent so far; those the stream did not carry come at the end.
    sent_logprobs = 0
    deadline = time.monotonic() + runtime.settings.sync_timeout_s
    if not JobStatus(job.status).is_terminal():
        for event in read_stream(runtime.redis, job.id, block_ms=1000):
            if event is None:
                # Nothing for a second: the job may have ended without a stream
                # (failed before generating), or the wait may be over.
                if jobs.has_ended(runtime.sessions, job.id) or time.monotonic() > deadline:
                    break
                continue
            if event.done:
                break
            sent += event.delta
            sent_logprobs += len(event.logprobs)
            logprobs = event.logprobs if asked_logprobs else None
            yield chunk(job, [ChunkChoice.of({"content": event.delta}, logprobs=logprobs)])
    # The stream ends just before the job row is final: wait for the row.
    remaining_s = max(0.0, deadline - time.monotonic())
    job, _ = jobs.wait_until_terminal(runtime.sessions, runtime.job_ends, job, remaining_s)
    if job.status != JobStatus.SUCCEEDED:
        yield sse(ErrorResponse.of(JobFailedError(jobs.failure_message(job))).dump())
        yield sse("[DONE]")
        return
    output = job.output or ""
    result = job.result or {}
    rest = output[len(sent) :] if output.startswith(sent) else ""
    unsent = ((result.get("logprobs") or {}).get("content") or [])[sent_logprobs:]
    if rest or unsent:
        logprobs = unsent if asked_logprobs else None
        yield chunk(job, [ChunkChoice.of({"content": rest}, logprobs=logprobs)])
    yield chunk(job, [ChunkChoice.of({}, result.get("finish_reason", "stop"))])
    if include_usage:
        yield chunk(job, [], usage=result.get("usage"))
    yield sse("[DONE]")
