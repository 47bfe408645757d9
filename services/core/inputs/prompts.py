"""Requests in canonical form: messages with images by content hash, and generation parameters.

Every way of asking (the `{image, question}` shorthand, OpenAI messages, a multipart upload)
ends up as the same canonical messages, which are what the cache key and the worker use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.core.config import Settings
from services.core.errors import InvalidRequestError
from services.core.inputs.images import (
    CheckedImage,
    check_image,
    fit_image,
    image_bytes_from_reference,
)
from services.core.inputs.model_limits import model_limits

ROLES = ("system", "user", "assistant")
# OpenAI's `image_url.detail`: "low" asks for a smaller image (`VLMQ_LOW_DETAIL_SIDE`).
DETAILS = ("auto", "low", "high")


class GenerationParams(BaseModel):
    """How to generate: the OpenAI parameters vlmq honours, and GLM's thinking switch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    # A 64-bit signed integer, as in OpenAI's API (the model's generator takes no more).
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    stop: list[str] = Field(default_factory=list, max_length=4)
    enable_thinking: bool = False
    # vLLM's extensions: no end token before `min_tokens`, and none ends the answer at all
    # with `ignore_eos` (it runs to `max_tokens`).
    min_tokens: int = Field(default=0, ge=0)
    ignore_eos: bool = False
    # OpenAI's `logprobs`: each answer token's log-probability, and the `top_logprobs` most
    # likely tokens at each step.
    logprobs: bool = False
    top_logprobs: int = Field(default=0, ge=0, le=20)
    # Moderation: instead of generating, score each yes/no question {category: question}
    # with the model's probability of "yes".
    score_questions: dict[str, str] | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value


def build_params(raw: dict[str, Any], settings: Settings) -> GenerationParams:
    """Generation parameters from a request body, with the deployment's defaults and caps."""
    max_tokens = raw.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = raw.get("max_tokens")
    if max_tokens is None:
        max_tokens = settings.default_max_tokens
    if isinstance(max_tokens, int) and max_tokens > settings.max_tokens_limit:
        raise InvalidRequestError(
            f"max_tokens is over this deployment's limit of {settings.max_tokens_limit}",
            param="max_tokens",
        )
    values = {
        "max_tokens": max_tokens,
        "temperature": raw.get("temperature") if raw.get("temperature") is not None else 0.0,
        "top_p": raw.get("top_p") if raw.get("top_p") is not None else 1.0,
        "seed": raw.get("seed"),
        "stop": raw.get("stop"),
        "enable_thinking": (
            settings.enable_thinking
            if raw.get("enable_thinking") is None
            else raw["enable_thinking"]
        ),
        "min_tokens": raw.get("min_tokens") or 0,
        "ignore_eos": raw.get("ignore_eos") or False,
        "logprobs": raw.get("logprobs") or False,
        "top_logprobs": raw.get("top_logprobs") or 0,
    }
    try:
        params = GenerationParams.model_validate(values)
    except ValueError as exc:
        raise InvalidRequestError(first_error(exc), param=first_param(exc)) from exc
    if params.min_tokens > params.max_tokens:
        raise InvalidRequestError("min_tokens must not be over max_tokens", param="min_tokens")
    if params.top_logprobs and not params.logprobs:
        raise InvalidRequestError("top_logprobs needs logprobs: true", param="top_logprobs")
    return params


def first_error(exc: Exception) -> str:
    """A one-line message from a pydantic validation error."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        location = ".".join(str(part) for part in first.get("loc", ()))
        return f"{location}: {first.get('msg')}" if location else str(first.get("msg"))
    return str(exc)


def first_param(exc: Exception) -> str | None:
    """The name of the first field a pydantic validation error is about."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and errors() and errors()[0].get("loc"):
        return str(errors()[0]["loc"][0])
    return None


@dataclass(frozen=True)
class CanonicalRequest:
    """The messages of a request with every image checked and replaced by its hash."""

    messages: list[dict[str, Any]]
    images: list[CheckedImage]


def check_fits_context(
    request: CanonicalRequest, params: GenerationParams, settings: Settings
) -> None:
    """Refuse (400) a request whose prompt and `max_tokens` do not fit the model's context,
    before it is enqueued: in a batched model call it would fail every other request too."""
    texts = [
        part["text"]
        for message in request.messages
        for part in message["content"]
        if part.get("type") == "text"
    ]
    # Scoring runs one forward pass and generates nothing.
    completion = 1 if params.score_questions else params.max_tokens
    model_limits(settings.model).check_context(
        texts,
        [(image.width, image.height) for image in request.images],
        len(request.messages),
        completion,
    )


def canonical_from_question(
    image: CheckedImage, question: str, settings: Settings
) -> CanonicalRequest:
    """The shorthand `{image, question}` (or a multipart upload) as canonical messages."""
    question = check_question(question, settings)
    image = fit_image(image, settings.max_image_side)
    message = {
        "role": "user",
        "content": [{"type": "image", "sha256": image.sha256}, {"type": "text", "text": question}],
    }
    return CanonicalRequest(messages=[message], images=[image])


def check_question(question: Any, settings: Settings) -> str:
    """A non-empty question within the length limit."""
    if not isinstance(question, str) or not question.strip():
        raise InvalidRequestError(
            "question is required and must be a non-empty string", param="question"
        )
    if len(question) > settings.max_question_chars:
        raise InvalidRequestError(
            f"question is over {settings.max_question_chars} characters", param="question"
        )
    return question.strip()


def canonical_from_messages(messages: Any, settings: Settings) -> CanonicalRequest:
    """OpenAI chat messages (text and `image_url` parts) as canonical messages; a text-only
    conversation is fine (vision models answer text too)."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list", param="messages")
    if len(messages) > settings.max_messages_per_request:
        raise InvalidRequestError(
            f"at most {settings.max_messages_per_request} messages per request", param="messages"
        )
    part_count = 0
    canonical: list[dict[str, Any]] = []
    images: list[CheckedImage] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InvalidRequestError(
                f"messages[{index}] needs a role of {', '.join(ROLES)}", param="messages"
            )
        content = message.get("content")
        if isinstance(content, str):
            parts: list[Any] = [{"type": "text", "text": content}]
        elif isinstance(content, list):
            parts = content
        else:
            raise InvalidRequestError(
                f"messages[{index}].content must be a string or a list of parts", param="messages"
            )
        part_count += len(parts)
        if part_count > settings.max_parts_per_request:
            raise InvalidRequestError(
                f"at most {settings.max_parts_per_request} content parts per request",
                param="messages",
            )
        canonical_parts: list[dict[str, Any]] = []
        for part in parts:
            canonical_parts.append(canonical_part(part, index, images, settings))
        canonical.append({"role": message["role"], "content": canonical_parts})
    if not any(part["type"] == "text" for m in canonical for part in m["content"]):
        raise InvalidRequestError("messages contain no text: ask a question", param="messages")
    if len(images) > settings.max_images_per_request:
        raise InvalidRequestError(
            f"at most {settings.max_images_per_request} images per request", param="messages"
        )
    return CanonicalRequest(messages=canonical, images=images)


def image_side(detail: str | None, settings: Settings) -> int:
    """The longest side an image may keep: `low_detail_side` for `detail: "low"`, else
    `max_image_side` (0: no limit)."""
    if detail != "low":
        return settings.max_image_side
    sides = [side for side in (settings.low_detail_side, settings.max_image_side) if side > 0]
    return min(sides, default=0)


def canonical_part(
    part: Any, index: int, images: list[CheckedImage], settings: Settings
) -> dict[str, Any]:
    """One content part: text stays text; an `image_url` becomes a checked image's hash."""
    if not isinstance(part, dict):
        raise InvalidRequestError(
            f"messages[{index}] has a part that is not an object", param="messages"
        )
    if part.get("type") == "text" and isinstance(part.get("text"), str):
        return {"type": "text", "text": check_question(part["text"], settings)}
    if part.get("type") == "image_url":
        image_url = part.get("image_url")
        url = str(image_url.get("url") if isinstance(image_url, dict) else image_url)
        detail = image_url.get("detail") if isinstance(image_url, dict) else None
        if detail is not None and detail not in DETAILS:
            raise InvalidRequestError(
                f"messages[{index}] has an image_url detail of {detail!r}: use one of "
                f"{', '.join(DETAILS)}",
                param="messages",
            )
        if len(images) >= settings.max_images_per_request:
            raise InvalidRequestError(
                f"at most {settings.max_images_per_request} images per request", param="messages"
            )
        image = check_image(image_bytes_from_reference(url, settings), settings)
        image = fit_image(image, image_side(detail, settings))
        images.append(image)
        return {"type": "image", "sha256": image.sha256}
    raise InvalidRequestError(
        f"messages[{index}] has a part of unsupported type {part.get('type')!r}", param="messages"
    )
