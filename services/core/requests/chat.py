"""`POST /v1/chat/completions`: OpenAI's chat request, and the OpenAI fields vlmq refuses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, ValidationInfo, model_validator

from services.core.errors import InvalidRequestError
from services.core.requests.base import (
    EXAMPLE_MESSAGES,
    OPENAI_COMPATIBLE,
    settings_of,
    where_of,
)
from services.core.requests.generation import GenerationRequest
from services.core.requests.queueing import QueueingRequest


def is_absent(value: Any) -> bool:
    """The field asks for nothing: null, false, zero or empty."""
    return value in (None, False, 0, "", [], {})


# OpenAI chat fields vlmq does not implement, each with a test of the values that ask for
# nothing (what clients send by default), which are accepted. Any other value is refused
# with `400 unsupported_parameter`: an option silently ignored is a wrong answer.
UNSUPPORTED_FIELDS: dict[str, Callable[[Any], bool]] = {
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
    "best_of": lambda value: value in (None, 1),
    "use_beam_search": is_absent,
}
WHY_UNSUPPORTED = {
    "tools": "vlmq's models answer in text; tool calls are not implemented",
}


def unsupported(name: str, message: str) -> InvalidRequestError:
    """A `400 unsupported_parameter` about the field `name`."""
    return InvalidRequestError(message, code="unsupported_parameter", param=name)


def refuse_unsupported(
    raw: Any, fields: dict[str, Callable[[Any], bool]], reasons: dict[str, str]
) -> None:
    """A `400 unsupported_parameter` for the first of `fields` that `raw` (a body) sets to a
    value asking for something (`reasons` says why a field is not supported)."""
    if not isinstance(raw, dict):
        return
    for name, asks_nothing in fields.items():
        if name in raw and not asks_nothing(raw[name]):
            reason = reasons.get(name, "vlmq does not implement it")
            raise unsupported(name, f"{name}={raw[name]!r} is not supported: {reason}")


class ChatCompletionRequest(GenerationRequest, QueueingRequest):
    """The fields of OpenAI's chat request that vlmq reads; others are ignored, as in vLLM,
    except those in `UNSUPPORTED_FIELDS`, which would change the answer and are refused."""

    model_config = ConfigDict(
        **OPENAI_COMPATIBLE,
        json_schema_extra={"examples": [{"messages": EXAMPLE_MESSAGES, "max_tokens": 8}]},
    )

    messages: Any = None
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    # vlmq's own: where to POST the job's events, as `/v1/jobs` takes them.
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, raw: Any) -> Any:
        refuse_unsupported(raw, UNSUPPORTED_FIELDS, WHY_UNSUPPORTED)
        return raw

    @model_validator(mode="after")
    def _choices(self, info: ValidationInfo) -> ChatCompletionRequest:
        cap = settings_of(info).max_choices
        if not 1 <= self.n <= cap:
            raise InvalidRequestError(f"n must be between 1 and {cap}", param="n")
        if self.n > 1 and self.stream:
            raise unsupported("n", "n > 1 cannot be streamed: ask for one choice per request")
        if where_of(info) == "batch_line":
            # A batch line is one job with one result line.
            if self.n > 1:
                raise unsupported(
                    "n", "n > 1 is not supported in a batch line: send one line per choice"
                )
            if self.stream:
                raise unsupported("stream", "a batch line cannot be streamed")
        return self

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return bool((self.stream_options or {}).get("include_usage"))
