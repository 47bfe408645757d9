"""Request and response shapes of the OpenAI-compatible `/v1/chat/completions`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from services.core.models import Job


class ChatCompletionRequest(BaseModel):
    """The fields of OpenAI's chat request that vlmq reads; others are ignored, as in vLLM."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: Any = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    enable_thinking: bool | None = None

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return bool((self.stream_options or {}).get("include_usage"))


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
