"""Request shapes of `/v1/batches`."""

from __future__ import annotations

from pydantic import Field

from services.api.protocol import VlmqRequest


class ExpiresAfter(VlmqRequest):
    """OpenAI's expiration policy of a file: `seconds` after its `anchor` ("created_at")."""

    anchor: str
    seconds: int


class BatchCreateRequest(VlmqRequest):
    """OpenAI's batch request, plus an optional `webhook` for the batch's completion."""

    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    output_expires_after: ExpiresAfter | None = None
    webhook: str | None = None
