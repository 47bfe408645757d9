"""Request shapes of `/v1/presets`."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from services.api.protocol import VlmqRequest


class PresetRequest(VlmqRequest):
    """`PUT /v1/presets/{name}`: the preset's system prompt."""

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
