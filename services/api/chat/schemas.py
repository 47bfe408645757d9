"""Request and response shapes of the OpenAI-compatible `/v1/chat/completions`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


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
