"""The JSON shapes of the API's objects as pydantic models: `services.core.serialize`
builds every response body (and webhook payload and batch result line) through them with
`shaped`, and the OpenAPI document describes the responses with them, so the two are one.

Fields a client may not rely on stay open (`dict[str, Any]`), and every model allows more
fields than it names, as OpenAI's objects do. Schemathesis checks live answers against the
document in `make test`.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict


class Shape(BaseModel):
    """A response object: the fields it names, and possibly more."""

    model_config = ConfigDict(extra="allow")


ShapeT = TypeVar("ShapeT", bound=Shape)


def shaped(shape: type[ShapeT], **fields: Any) -> dict[str, Any]:
    """`fields` checked against `shape`, as JSON-ready data (fields left out stay out)."""
    return shape(**fields).model_dump(mode="json", exclude_unset=True)


class ErrorDetail(Shape):
    """What went wrong: OpenAI's error fields."""

    type: str
    code: str
    message: str
    param: str | None = None


class ErrorResponse(Shape):
    """The one error shape of every non-2xx answer."""

    error: ErrorDetail


class JobUrls(Shape):
    """Where a job is read and canceled (and its webhook deliveries, with a webhook)."""

    get: str
    cancel: str
    webhook_deliveries: str | None = None


class JobObject(Shape):
    """A job: one question about images, its status, answer and timings."""

    id: str
    object: Literal["job"]
    status: Literal["queued", "running", "succeeded", "failed", "canceled"]
    model: str
    created_at: str
    started_at: str | None
    completed_at: str | None
    output: str | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    cache_hit: bool
    attempts: int
    metrics: dict[str, Any]
    urls: JobUrls
    metadata: dict[str, str]


class JobList(Shape):
    """A page of jobs, newest first."""

    object: Literal["list"]
    data: list[JobObject]
    has_more: bool
    next_cursor: str | None


class ChatMessage(Shape):
    """The assistant's answer (and GLM's reasoning, when asked for)."""

    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = None


class TopLogprob(Shape):
    """One of the most likely tokens at a step."""

    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    """A generated token's log-probability, and the most likely tokens at its step."""

    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(Shape):
    """OpenAI's `choices[].logprobs` (`logprobs: true`)."""

    content: list[TokenLogprob] | None


class ChatChoice(Shape):
    """One choice of a chat completion."""

    index: int
    message: ChatMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


class Usage(Shape):
    """Tokens of the prompt and of the answer."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(Shape):
    """OpenAI's `chat.completion`, with vlmq's job id, cache hit and timings in `vlmq`."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None
    vlmq: dict[str, Any]


class ModelCard(Shape):
    """A served model (vLLM's fields `root` and `parent` included)."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: str | None = None
    parent: str | None = None


class Preset(Shape):
    """A named system prompt: the tenant's own, or the deployment's."""

    object: Literal["preset"]
    name: str
    system_prompt: str
    owned_by: Literal["tenant", "deployment"]
    created_at: int | None
    updated_at: int | None


class PresetList(Shape):
    """Every preset the tenant can use, by name."""

    object: Literal["list"]
    data: list[Preset]


class PresetDeleted(Shape):
    """A deleted preset."""

    object: Literal["preset.deleted"]
    name: str
    deleted: bool


class ModelList(Shape):
    """The served models."""

    object: Literal["list"]
    data: list[ModelCard]


class FileObject(Shape):
    """OpenAI's file object."""

    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    expires_at: int | None
    filename: str
    purpose: str
    status: str


class OpenAIPage(Shape):
    """The paging fields of OpenAI's lists."""

    object: Literal["list"]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileList(OpenAIPage):
    """A page of files, newest first."""

    data: list[FileObject]


class FileDeleted(Shape):
    """A deleted file."""

    id: str
    object: Literal["file"]
    deleted: bool


class RequestCounts(Shape):
    """How many lines of a batch there are, and how many ended."""

    total: int
    completed: int
    failed: int


class BatchObject(Shape):
    """OpenAI's batch object."""

    id: str
    object: Literal["batch"]
    endpoint: str
    errors: dict[str, Any] | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, str] | None


class BatchList(OpenAIPage):
    """A page of batches, newest first."""

    data: list[BatchObject]


class ModerationResult(Shape):
    """One input's categories: flagged at its threshold, and each score."""

    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]


class ModerationResponse(Shape):
    """OpenAI's moderation response."""

    id: str
    model: str
    results: list[ModerationResult]


class ModerationPolicy(Shape):
    """A tenant's moderation categories (empty: the deployment's default applies)."""

    object: Literal["moderation.policy"]
    categories: dict[str, Any]


class WebhookSecret(Shape):
    """The tenant's Standard Webhooks secret."""

    key: str


class LastAttempt(Shape):
    """What the last attempt of a delivery got back."""

    attempt: int
    status_code: int | None
    error: str | None
    latency_ms: float
    at: str | None


class WebhookDelivery(Shape):
    """One webhook event of a job or batch and what became of it."""

    id: str
    object: Literal["webhook.delivery"]
    event: str
    url: str
    status: Literal["pending", "delivered", "failed", "gone"]
    attempts: int
    created_at: str | None
    completed_at: str | None
    next_attempt_at: str | None
    last_attempt: LastAttempt | None


class WebhookDeliveryList(Shape):
    """A job's or batch's webhook deliveries, oldest first."""

    object: Literal["list"]
    data: list[WebhookDelivery]


class Health(Shape):
    """The process is up."""

    status: Literal["ok"]


class Readiness(Shape):
    """Whether the database, Redis and a worker answer, and why not."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, bool]
    reasons: dict[str, str]


RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    ErrorResponse,
    JobObject,
    JobList,
    ChatCompletion,
    ModelCard,
    ModelList,
    Preset,
    PresetList,
    PresetDeleted,
    FileObject,
    FileList,
    FileDeleted,
    BatchObject,
    BatchList,
    ModerationResponse,
    ModerationPolicy,
    WebhookSecret,
    WebhookDeliveryList,
    Health,
    Readiness,
)
