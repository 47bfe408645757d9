"""OpenAI's `chat.completion` and `chat.completion.chunk` of chat jobs."""

from __future__ import annotations

from typing import Any, Literal

from services.core.responses.base import ResponseModel
from services.core.tables import Job


def completion_id(job: Job) -> str:
    """The OpenAI-style id of a chat job."""
    return "chatcmpl-" + job.id.removeprefix("job_")


class ChatMessage(ResponseModel):
    """The assistant's answer (and GLM's reasoning, when asked for)."""

    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = None


class TopLogprob(ResponseModel):
    """One of the most likely tokens at a step."""

    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    """A generated token's log-probability, and the most likely tokens at its step."""

    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(ResponseModel):
    """OpenAI's `choices[].logprobs` (`logprobs: true`)."""

    content: list[TokenLogprob] | None


class ChatChoice(ResponseModel):
    """One choice of a chat completion."""

    index: int
    message: ChatMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None

    @classmethod
    def of(cls, index: int, job: Job) -> ChatChoice:
        """A finished job's answer (and its reasoning, if any) as choice `index`."""
        result = job.result or {}
        message = ChatMessage(role="assistant", content=job.output or "")
        if result.get("reasoning"):
            message.reasoning_content = result["reasoning"]
        return cls(
            index=index,
            message=message,
            finish_reason=result.get("finish_reason", "stop"),
            # {"content": [...]} when the request asked for `logprobs`.
            logprobs=result.get("logprobs"),
        )


class Usage(ResponseModel):
    """Tokens of the prompt and of the answer."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionResponse(ResponseModel):
    """OpenAI's `chat.completion`, with vlmq's job id, cache hit and timings in `vlmq`."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None
    vlmq: dict[str, Any]

    @classmethod
    def of(cls, job: Job, *more: Job) -> ChatCompletionResponse:
        """A finished job as a `chat.completion`; `more` jobs (of a request with `n` > 1)
        are its further choices, and their completion tokens add to the usage."""
        jobs = (job, *more)
        usage = dict(
            (job.result or {}).get("usage")
            or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        )
        extension: dict[str, Any] = {
            "job_id": job.id,
            "cache_hit": job.cache_hit,
            "metrics": job.metrics or {},
        }
        attention = (job.result or {}).get("attention")
        if attention is not None:
            # Where the answer looked, per image (`"attention": true`).
            extension["attention"] = attention
        if more:
            completion = sum(
                ((j.result or {}).get("usage") or {}).get("completion_tokens", 0) for j in jobs
            )
            usage["completion_tokens"] = completion
            usage["total_tokens"] = usage.get("prompt_tokens", 0) + completion
            extension["job_ids"] = [j.id for j in jobs]
        return cls(
            id=completion_id(job),
            object="chat.completion",
            created=int(job.created_at.timestamp()),
            model=job.model,
            choices=[ChatChoice.of(index, j) for index, j in enumerate(jobs)],
            usage=Usage(**usage),
            system_fingerprint=None,
            vlmq=extension,
        )


class ChunkChoice(ResponseModel):
    """The only choice of a chunk (with its tokens' log-probabilities, when asked for)."""

    index: int
    delta: dict[str, Any]
    finish_reason: str | None
    logprobs: dict[str, Any] | None

    @classmethod
    def of(
        cls,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> ChunkChoice:
        """A choice carrying `delta` (and, at the end, why the answer ended)."""
        return cls(
            index=0,
            delta=delta,
            finish_reason=finish_reason,
            logprobs={"content": logprobs} if logprobs is not None else None,
        )


class ChatCompletionChunk(ResponseModel):
    """One `chat.completion.chunk` of a streamed answer."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]

    @classmethod
    def of(cls, job: Job, choices: list[ChunkChoice], **extra: Any) -> ChatCompletionChunk:
        """A chunk of the job's answer; `extra` adds fields (`usage`)."""
        return cls(
            id=completion_id(job),
            object="chat.completion.chunk",
            created=int(job.created_at.timestamp()),
            model=job.model,
            choices=choices,
            **extra,
        )
