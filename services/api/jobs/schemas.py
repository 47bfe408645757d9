"""Request and response shapes of `/v1/jobs`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class JobCreateRequest(BaseModel):
    """`POST /v1/jobs`: the `{image, question}` shorthand or OpenAI `messages`, plus parameters."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    image: str | None = None
    question: Any = None
    messages: Any = None
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    enable_thinking: bool | None = None
    # Where to POST the job's events ("start", "completed"; default both), signed per
    # Standard Webhooks. Checked by `webhooks.parse_subscription`.
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
