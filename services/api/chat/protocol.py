"""Request shapes of the OpenAI-compatible `/v1/chat/completions`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict

from services.api.protocol import EXAMPLE_MESSAGES, OPENAI_COMPATIBLE, GenerationRequest
from services.core.errors import InvalidRequestError


def is_absent(value: Any) -> bool:
    """The field asks for nothing: null, false, zero or empty."""
    return value in (None, False, 0, "", [], {})


# OpenAI chat fields vlmq does not implement, each with a test of the values that ask for
# nothing (what clients send by default), which are accepted. Any other value is refused
# with `400 unsupported_parameter`: an option silently ignored is a wrong answer.
UNSUPPORTED_FIELDS: dict[str, Callable[[Any], bool]] = {
    "response_format": lambda value: (
        is_absent(value) or (isinstance(value, dict) and value.get("type") == "text")
    ),
    "tools": is_absent,
    "tool_choice": lambda value: value in (None, "none", "auto"),
    "functions": is_absent,
    "function_call": lambda value: value in (None, "none", "auto"),
    "presence_penalty": is_absent,
    "frequency_penalty": is_absent,
    "logit_bias": is_absent,
    "audio": is_absent,
    "modalities": lambda value: value in (None, ["text"]),
    "prediction": is_absent,
    "web_search_options": is_absent,
    "store": is_absent,
    "metadata": is_absent,
    "reasoning_effort": is_absent,
    "verbosity": is_absent,
    "service_tier": lambda value: value in (None, "auto", "default"),
    "best_of": lambda value: value in (None, 1),
    "use_beam_search": is_absent,
}
WHY_UNSUPPORTED = {
    "response_format": "vlmq does not constrain decoding to JSON; ask for JSON in the prompt "
    "and parse the answer",
    "tools": "vlmq's models answer in text; tool calls are not implemented",
}


def refuse_unsupported(raw: dict[str, Any]) -> None:
    """A `400 unsupported_parameter` naming the first OpenAI field vlmq cannot honour."""
    for name, asks_nothing in UNSUPPORTED_FIELDS.items():
        if name in raw and not asks_nothing(raw[name]):
            reason = WHY_UNSUPPORTED.get(name, "vlmq does not implement it")
            raise InvalidRequestError(
                f"{name}={raw[name]!r} is not supported: {reason}",
                code="unsupported_parameter",
                param=name,
            )


class ChatCompletionRequest(GenerationRequest):
    """The fields of OpenAI's chat request that vlmq reads; others are ignored, as in vLLM."""

    model_config = ConfigDict(
        **OPENAI_COMPATIBLE,
        json_schema_extra={"examples": [{"messages": EXAMPLE_MESSAGES, "max_tokens": 8}]},
    )

    messages: Any = None
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return bool((self.stream_options or {}).get("include_usage"))
