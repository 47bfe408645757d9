"""The model and generation parameters that every generating request shares, with their rules.

`GenerationRequest` is the only place a request's generation fields are read and checked;
`to_params` turns them into the canonical `GenerationParams` a job stores (the deployment's
defaults filled in), which is what the cache key and the worker use.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from services.core.config import Settings
from services.core.errors import InvalidRequestError
from services.core.inputs.grammars import (
    Grammar,
    checked_grammar,
    choice_grammar,
    schema_grammar,
)
from services.core.inputs.prompts import GenerationParams
from services.core.requests.base import VlmqRequest, parse, settings_of

MAX_STOP_STRINGS = 4
# Each stop string is searched for in the answer at every decode step of its row.
MAX_STOP_CHARS = 256


class GenerationRequest(VlmqRequest):
    """The model and generation parameters that job and chat requests share."""

    # The base model's id or a LoRA adapter's (`GET /v1/models`); absent: the base model.
    model: str | None = None
    # A prompt preset's name (`/v1/presets`): its text becomes the first system message.
    preset: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    # A 64-bit signed integer, as in OpenAI's API (the model's generator takes no more).
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    stop: str | list[str] | None = None
    enable_thinking: bool | None = None
    # vLLM's extensions, for answers of a known length (benchmarks, load tests).
    min_tokens: int | None = Field(default=None, ge=0)
    ignore_eos: bool | None = None
    # OpenAI's token log-probabilities (`top_logprobs`: 0-20 alternatives per token).
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    # vlmq's own: return the answer's attention map over each image (`result.attention`).
    attention: bool | None = None
    # Structured output, as OpenAI asks for it: {"type": "text" | "json_object" |
    # "json_schema", "json_schema": {"name", "schema", "strict"}}.
    response_format: dict[str, Any] | None = None
    # vLLM's structured-output extras: the answer is one of these strings, matches this
    # regular expression, or follows this JSON schema.
    guided_choice: list[str] | None = None
    guided_regex: str | None = None
    guided_json: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _few_stop_strings(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        strings = [value] if isinstance(value, str) else value or []
        if any(len(text) > MAX_STOP_CHARS for text in strings):
            raise ValueError(f"a stop string is at most {MAX_STOP_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _within_the_deployment(self, info: ValidationInfo) -> GenerationRequest:
        limit = settings_of(info).max_tokens_limit
        if self.requested_max_tokens is not None and self.requested_max_tokens > limit:
            raise InvalidRequestError(
                f"max_tokens is over this deployment's limit of {limit}", param="max_tokens"
            )
        if self.min_tokens and self.min_tokens > (self.requested_max_tokens or limit):
            raise InvalidRequestError("min_tokens must not be over max_tokens", param="min_tokens")
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequestError("top_logprobs needs logprobs: true", param="top_logprobs")
        return self

    @property
    def requested_max_tokens(self) -> int | None:
        """OpenAI's newer `max_completion_tokens`, else `max_tokens`, else None."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens

    def requested_grammar(self, max_bytes: int) -> Grammar | None:
        """The grammar the answer must follow (structured output), checked; None: free text."""
        asked = [
            name
            for name in ("guided_json", "guided_choice", "guided_regex")
            if getattr(self, name) is not None
        ]
        response_format = self.response_format or {"type": "text"}
        if response_format.get("type") != "text":
            asked.insert(0, "response_format")
        if len(asked) > 1:
            raise InvalidRequestError(
                f"ask for one structured output at a time, not {' and '.join(asked)}",
                param=asked[1],
            )
        if self.guided_json is not None:
            return schema_grammar(self.guided_json, "guided_json", max_bytes)
        if self.guided_choice is not None:
            return choice_grammar(self.guided_choice, "guided_choice", max_bytes)
        if self.guided_regex is not None:
            regex = Grammar(kind="regex", value=self.guided_regex)
            return checked_grammar(regex, "guided_regex", max_bytes)
        return format_grammar(response_format, "response_format", max_bytes)

    def to_params(self, settings: Settings) -> GenerationParams:
        """The canonical parameters of this request, the deployment's defaults filled in."""
        max_tokens = self.requested_max_tokens or settings.default_max_tokens
        if self.min_tokens and self.min_tokens > max_tokens:
            raise InvalidRequestError("min_tokens must not be over max_tokens", param="min_tokens")
        grammar = self.requested_grammar(settings.max_grammar_bytes)
        if grammar is not None and (self.ignore_eos or self.min_tokens):
            # The grammar decides where the answer ends; neither can move that end.
            param = "ignore_eos" if self.ignore_eos else "min_tokens"
            raise InvalidRequestError(f"{param} cannot be used with structured output", param=param)
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return GenerationParams(
            max_tokens=max_tokens,
            temperature=self.temperature if self.temperature is not None else 0.0,
            top_p=self.top_p if self.top_p is not None else 1.0,
            seed=self.seed,
            stop=stop,
            enable_thinking=(
                settings.enable_thinking if self.enable_thinking is None else self.enable_thinking
            ),
            min_tokens=self.min_tokens or 0,
            ignore_eos=bool(self.ignore_eos),
            logprobs=bool(self.logprobs),
            top_logprobs=self.top_logprobs or 0,
            grammar=grammar,
            attention=bool(self.attention),
        )


def format_grammar(response_format: dict[str, Any], param: str, max_bytes: int) -> Grammar | None:
    """The grammar of OpenAI's `response_format` (chat) or `text.format` (Responses API):
    `text` (None), `json_object`, or `json_schema` with its schema (nested under
    `json_schema` in chat, beside `type` in the Responses API)."""
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return Grammar(kind="json_object")
    if kind == "json_schema":
        spec = response_format.get("json_schema", response_format)
        if not isinstance(spec, dict) or "schema" not in spec:
            raise InvalidRequestError(
                f"{param} of type json_schema needs a schema", param=f"{param}.schema"
            )
        return schema_grammar(spec["schema"], f"{param}.schema", max_bytes)
    raise InvalidRequestError(
        f"{param}.type must be text, json_object or json_schema, not {kind!r}",
        param=f"{param}.type",
    )


def generation_params(body: dict[str, object], settings: Settings) -> GenerationParams:
    """The canonical parameters of a body's generation fields (other fields are ignored)."""
    fields = {name: body[name] for name in GenerationRequest.model_fields if name in body}
    return parse(GenerationRequest, fields, settings).to_params(settings)
