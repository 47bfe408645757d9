"""Requests in canonical form: messages with images by content hash, and generation parameters.

Every way of asking (the `{image, question}` shorthand, OpenAI messages, a multipart upload)
ends up as the same canonical messages, which are what the cache key and the worker use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.core.config import Settings
from services.core.errors import InvalidRequestError
from services.core.inputs.grammars import Grammar
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
    """How to generate, in canonical form (stored on the job, part of the cache key): the
    OpenAI parameters vlmq honours and GLM's thinking switch. Requests are checked by
    `services.core.requests.generation.GenerationRequest`, which builds these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    enable_thinking: bool = False
    # vLLM's extensions: no end token before `min_tokens`, and none ends the answer at all
    # with `ignore_eos` (it runs to `max_tokens`).
    min_tokens: int = 0
    ignore_eos: bool = False
    # OpenAI's `logprobs`: each answer token's log-probability, and the `top_logprobs` most
    # likely tokens at each step.
    logprobs: bool = False
    top_logprobs: int = 0
    # Moderation: instead of generating, score each yes/no question {category: question}
    # with the model's probability of "yes".
    score_questions: dict[str, str] | None = None
    # How a job row names those questions: the hash of a stored policy (see
    # `services.core.moderation.stored`); never set together with `score_questions`.
    score_policy: str | None = None
    # Screening (the tenant's moderation policy with `screen`): the images are scored with
    # these questions before the answer, which is refused when a score reaches its
    # threshold. A job row names the questions by `screen_policy`, their stored hash.
    screen_questions: dict[str, str] | None = None
    screen_thresholds: dict[str, float] | None = None
    screen_policy: str | None = None
    # Return where the answer looked: its tokens' attention to each image's patches.
    attention: bool = False
    # Structured output: the grammar the answer's text follows (constrained decoding).
    grammar: Grammar | None = None


def image_parts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The image parts of chat messages, in order (canonical parts, or decoded ones)."""
    return [
        part
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image"
    ]


@dataclass(frozen=True)
class CanonicalRequest:
    """The messages of a request with every image checked and replaced by its hash."""

    messages: list[dict[str, Any]]
    images: list[CheckedImage]


def check_fits_context(
    request: CanonicalRequest, params: GenerationParams, settings: Settings
) -> int:
    """Refuse (400) a request whose prompt and `max_tokens` do not fit the model's context,
    before it is enqueued: in a batched model call it would fail every other request too.
    Returns the tokens it may cost (what fair queuing charges its tenant until it ran)."""
    texts = [
        part["text"]
        for message in request.messages
        for part in message["content"]
        if part.get("type") == "text"
    ]
    # Scoring runs one forward pass per question over the input and generates nothing: the
    # longest question must fit with it.
    completion = 1 if params.score_questions else params.max_tokens
    if params.score_questions:
        texts.append(max(params.score_questions.values(), key=len))
    return model_limits(settings.model).check_context(
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
    image = fit_image(image, settings.max_image_side, settings)
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
        image = fit_image(image, image_side(detail, settings), settings)
        images.append(image)
        return {"type": "image", "sha256": image.sha256}
    raise InvalidRequestError(
        f"messages[{index}] has a part of unsupported type {part.get('type')!r}", param="messages"
    )
