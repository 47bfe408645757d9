"""Request shapes of `/v1/batches`."""

from __future__ import annotations

from pydantic import Field

from services.api.protocol import VlmqRequest


class BatchCreateRequest(VlmqRequest):
    """OpenAI's batch request, plus an optional `webhook` for the batch's completion."""

    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    webhook: str | None = None
