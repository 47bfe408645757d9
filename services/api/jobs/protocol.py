"""Request shapes of `/v1/jobs`."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from services.api.protocol import EXAMPLE_IMAGE, GenerationRequest


class JobCreateRequest(GenerationRequest):
    """`POST /v1/jobs`: the `{image, question}` shorthand or OpenAI `messages`, plus parameters."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"image": EXAMPLE_IMAGE, "question": "What color is the shape?", "max_tokens": 8}
            ]
        }
    )

    image: str | None = None
    question: Any = None
    messages: Any = None
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)
    # Where to POST the job's events ("start", "completed"; default both), signed per
    # Standard Webhooks. Checked by `webhooks.subscriptions.parse_subscription`.
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
