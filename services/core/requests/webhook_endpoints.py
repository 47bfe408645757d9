"""`POST /v1/webhook_endpoints`: a URL and the event types it subscribes to."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from services.core.requests.base import VlmqRequest


class WebhookEndpointRequest(VlmqRequest):
    """The endpoint's URL and its `enabled_events` (checked by the webhooks module, which
    knows the event types)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://example.com/vlmq-events",
                    "enabled_events": ["response.completed", "batch.completed"],
                }
            ]
        }
    )

    url: str
    enabled_events: Any = None
    description: str | None = None
