"""Request shapes of `/v1/moderations`."""

from __future__ import annotations

from typing import Any

from services.api.protocol import OPENAI_COMPATIBLE, VlmqRequest


class ModerationRequest(VlmqRequest):
    """OpenAI's moderation request, plus vlmq's own `categories` and `thresholds`."""

    model_config = OPENAI_COMPATIBLE

    input: Any = None
    model: str | None = None
    # {category: question} or {category: {"question": ..., "threshold": ...}}
    categories: dict[str, Any] | None = None
    thresholds: dict[str, Any] | None = None


class PolicyRequest(VlmqRequest):
    """`PUT /v1/moderations/policy`: the tenant's default policy."""

    categories: dict[str, Any]
