"""Request shapes of the OpenAI-compatible `/v1/chat/completions`."""

from __future__ import annotations

from typing import Any

from services.api.protocol import OPENAI_COMPATIBLE, GenerationRequest


class ChatCompletionRequest(GenerationRequest):
    """The fields of OpenAI's chat request that vlmq reads; others are ignored, as in vLLM."""

    model_config = OPENAI_COMPATIBLE

    messages: Any = None
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return bool((self.stream_options or {}).get("include_usage"))
