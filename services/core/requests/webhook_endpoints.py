"""`POST /v1/webhook_endpoints`: a URL and the event types it subscribes to."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from services.core.requests.base import VlmqRequest


class WebhookEndpointRequest(VlmqRequest):
    """The endpoint's URL and the event types it wants: `enabled_events` as Stripe spells
    them, or `event_types` as OpenAI's client sends them (checked by the webhooks module,
    which knows the event types); a `name` for people."""

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
    event_types: Any = None
    name: str = Field(default="", max_length=200)

    @property
    def events(self) -> Any:
        """The event types asked for, whichever way they were spelt."""
        return self.enabled_events if self.enabled_events is not None else self.event_types
