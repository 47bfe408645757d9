"""`PUT /v1/presets/{name}`: a named system prompt."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from services.core.requests.base import VlmqRequest


class PresetRequest(VlmqRequest):
    """The preset's system prompt."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "system_prompt": "You answer questions about product photos for a shop's "
                    "customers. If the photo is unclear, say so politely."
                }
            ]
        }
    )

    system_prompt: Any = None
