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
    enable_thinking: bool | None = None


def chat_completion_response(job: Job) -> dict[str, Any]:
    """A finished job as a `chat.completion` object."""
    result = job.result or {}
    usage = result.get("usage") or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    message: dict[str, Any] = {"role": "assistant", "content": job.output or ""}
    if result.get("reasoning"):
        message["reasoning_content"] = result["reasoning"]
    return {
        "id": "chatcmpl-" + job.id.removeprefix("job_"),
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
