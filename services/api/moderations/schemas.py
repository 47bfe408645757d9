"""Request shapes of `/v1/moderations`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ModerationRequest(BaseModel):
    """OpenAI's moderation request, plus vlmq's own `categories` and `thresholds`."""

    model_config = ConfigDict(extra="ignore")

    input: Any = None
    model: str | None = None
    # {category: question} or {category: {"question": ..., "threshold": ...}}
    categories: dict[str, Any] | None = None
    thresholds: dict[str, Any] | None = None


class PolicyRequest(BaseModel):
    """`PUT /v1/moderations/policy`: the tenant's default policy."""

    model_config = ConfigDict(extra="forbid")

    categories: dict[str, Any]
