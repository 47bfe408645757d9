"""`POST /v1/responses`: OpenAI's Responses request, read as the chat request it asks for.

The Responses API spells a conversation differently (`input` items with `input_text` and
`input_image` parts, `instructions`, `max_output_tokens`); `chat_messages` turns it into
the chat messages every other route submits, so one submit path serves both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, Field, ValidationInfo, model_validator

from services.core.errors import InvalidRequestError
from services.core.inputs.grammars import Grammar
from services.core.requests.base import EXAMPLE_IMAGE, OPENAI_COMPATIBLE, Metadata, where_of
from services.core.requests.chat import is_absent, refuse_unsupported, unsupported
from services.core.requests.generation import GenerationRequest, format_grammar
from services.core.requests.queueing import QueueingRequest

# `include` values vlmq answers: the answer's token log-probabilities.
LOGPROBS_INCLUDE = "message.output_text.logprobs"
# OpenAI Responses fields vlmq does not implement, each with a test of the values that ask
# for nothing (what clients send by default); any other value is `400 unsupported_parameter`.
UNSUPPORTED_FIELDS: dict[str, Callable[[Any], bool]] = {
    "tools": is_absent,
    "tool_choice": lambda value: value in (None, "none", "auto"),
    "max_tool_calls": is_absent,
    "previous_response_id": is_absent,
    "conversation": is_absent,
    "prompt": is_absent,
    "reasoning": is_absent,
    "truncation": lambda value: value in (None, "disabled"),
    "include": lambda value: is_absent(value) or value == [LOGPROBS_INCLUDE],
}
WHY_UNSUPPORTED = {
    "previous_response_id": "vlmq keeps no conversation state: send the whole input",
    "conversation": "vlmq keeps no conversation state: send the whole input",
    "tools": "vlmq's models answer in text; tool calls are not implemented",
}
# Gives the `image_url` (a data URL) of the tenant's image file with this id.
FileUrl = Callable[[str], str]
# Message roles of the Responses API, as chat roles (`developer` is OpenAI's newer system).
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
EXAMPLE_INPUT: list[Any] = [
    {
        "role": "user",
        "content": [
            {"type": "input_image", "image_url": EXAMPLE_IMAGE},
            {"type": "input_text", "text": "What color is the shape?"},
        ],
    }
]


class ResponseCreateRequest(GenerationRequest, QueueingRequest):
    """The fields of OpenAI's Responses request that vlmq reads; others are ignored, as in
    vLLM, except those in `UNSUPPORTED_FIELDS`, which would change the answer."""

    model_config = ConfigDict(
        **OPENAI_COMPATIBLE,
        json_schema_extra={"examples": [{"input": EXAMPLE_INPUT, "max_output_tokens": 8}]},
    )

    input: str | list[Any] = ""
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    metadata: Metadata | None = None
    stream: bool = False
    background: bool = False
    store: bool = True
    include: list[str] | None = None
    # The answer's format: {"format": {"type": "text" | "json_object" | "json_schema", ...}}.
    text: dict[str, Any] | None = None
    # vlmq's own: where to POST the job's events, as `/v1/jobs` takes them.
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, raw: Any) -> Any:
        refuse_unsupported(raw, UNSUPPORTED_FIELDS, WHY_UNSUPPORTED)
        if isinstance(raw, dict) and raw.get("include"):
            # The only `include` taken asks for the answer's log-probabilities.
            raw = {**raw, "logprobs": True}
        return raw

    @model_validator(mode="after")
    def _modes(self, info: ValidationInfo) -> ResponseCreateRequest:
        if self.background and not self.store:
            # As OpenAI: a background response is polled, so it must be kept.
            raise InvalidRequestError("background responses need store: true", param="store")
        if where_of(info) == "batch_line" and (self.stream or self.background):
            raise unsupported("stream", "a batch line is neither streamed nor in the background")
        return self

    @property
    def requested_max_tokens(self) -> int | None:
        """`max_output_tokens`, else the chat spellings vlmq also takes, else None."""
        if self.max_output_tokens is not None:
            return self.max_output_tokens
        return super().requested_max_tokens

    def requested_grammar(self, max_bytes: int) -> Grammar | None:
        """`text.format`'s grammar (or one of the chat spellings vlmq also takes)."""
        text_format = (self.text or {}).get("format")
        if text_format is None:
            return super().requested_grammar(max_bytes)
        if not isinstance(text_format, dict):
            raise InvalidRequestError("text.format must be an object", param="text.format")
        if self.response_format is not None:
            raise InvalidRequestError(
                "ask for one structured output at a time, not text.format and response_format",
                param="response_format",
            )
        return format_grammar(text_format, "text.format", max_bytes)

    def chat_messages(self, file_url: FileUrl) -> list[dict[str, Any]]:
        """The request's `instructions` and `input` as OpenAI chat messages (`file_url`
        gives an image file's `image_url`)."""
        messages: list[dict[str, Any]] = []
        if self.instructions:
            messages.append({"role": "system", "content": self.instructions})
        if isinstance(self.input, str):
            if not self.input:
                raise InvalidRequestError("input must not be empty", param="input")
            return [*messages, {"role": "user", "content": self.input}]
        if not self.input:
            raise InvalidRequestError("input must not be empty", param="input")
        for index, item in enumerate(self.input):
            messages.append(chat_message(item, index, file_url))
        return messages

    def options(self) -> dict[str, Any]:
        """What the response object echoes back beside the job's own fields."""
        return {
            "background": self.background,
            "store": self.store,
            "instructions": self.instructions,
            "service_tier": self.service_tier or "auto",
            "text": self.text or {"format": {"type": "text"}},
        }


def chat_message(item: Any, index: int, file_url: FileUrl) -> dict[str, Any]:
    """One `input` item (a message) as an OpenAI chat message."""
    if not isinstance(item, dict) or item.get("type", "message") != "message":
        raise unsupported(
            "input", f"input[{index}] is not a message: only messages are supported as input"
        )
    role = ROLES.get(item.get("role", ""))
    if role is None:
        raise InvalidRequestError(
            f"input[{index}] needs a role of {', '.join(ROLES)}", param="input"
        )
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequestError(
            f"input[{index}].content must be a string or a list of parts", param="input"
        )
    return {"role": role, "content": [chat_part(part, index, file_url) for part in content]}


def chat_part(part: Any, index: int, file_url: FileUrl) -> dict[str, Any]:
    """One content part (`input_text`, `output_text`, `input_image`) as a chat part."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        url = part.get("image_url")
        if isinstance(part.get("file_id"), str) and url is None:
            url = file_url(part["file_id"])
        if not isinstance(url, str):
            raise InvalidRequestError(
                f"input[{index}]: an input_image needs an image_url or a file_id", param="input"
            )
        image: dict[str, Any] = {"url": url}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise InvalidRequestError(
        f"input[{index}]: parts must be input_text or input_image", param="input"
    )
