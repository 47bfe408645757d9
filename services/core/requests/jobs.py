"""`POST /v1/jobs`: the `{image, question}` shorthand or OpenAI `messages`, plus parameters."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, model_validator

from services.core.errors import InvalidRequestError
from services.core.requests.base import EXAMPLE_IMAGE, Metadata
from services.core.requests.generation import GenerationRequest
from services.core.requests.queueing import QueueingRequest


class JobCreateRequest(GenerationRequest, QueueingRequest):
    """A job: one question about images (or a conversation), and where to report it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"image": EXAMPLE_IMAGE, "question": "What color is the shape?", "max_tokens": 8}
            ]
        }
    )

    # A data URL or an http(s) URL (a multipart upload sends the image as a file instead).
    image: str | None = None
    question: Any = None
    messages: Any = None
    metadata: Metadata = Field(default_factory=dict)
    # Where to POST the job's events ("start", "completed"; default both), signed per
    # Standard Webhooks. Checked by `webhooks.subscriptions.parse_subscription`.
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None

    @model_validator(mode="after")
    def _one_way_of_asking(self) -> JobCreateRequest:
        if self.messages is not None and (self.image is not None or self.question is not None):
            raise InvalidRequestError("send either messages or image + question, not both")
        return self
