"""`POST /v1/moderations` and the tenant's policy."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from services.core.requests.base import EXAMPLE_IMAGE, OPENAI_COMPATIBLE, VlmqRequest


class ModerationRequest(VlmqRequest):
    """OpenAI's moderation request, plus vlmq's own `categories` and `thresholds`."""

    model_config = ConfigDict(
        **OPENAI_COMPATIBLE,
        json_schema_extra={
            "examples": [{"input": [{"type": "image_url", "image_url": {"url": EXAMPLE_IMAGE}}]}]
        },
    )

    input: Any = None
    model: str | None = None
    # {category: question} or {category: {"question": ..., "threshold": ...}}
    categories: dict[str, Any] | None = None
    thresholds: dict[str, Any] | None = None


class PolicyRequest(VlmqRequest):
    """`PUT /v1/moderations/policy`: the tenant's default policy."""

    categories: dict[str, Any]
    # Screen every job of the tenant with this policy: a job whose images it flags is not
    # answered (it fails with `content_filter`).
    screen: bool = False
