"""`POST /v1/batches` and the lines of a batch's input file."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from services.core.requests.base import Metadata, VlmqRequest

MAX_CUSTOM_ID_CHARS = 200


class ExpiresAfter(VlmqRequest):
    """OpenAI's expiration policy of a file: `seconds` after its `anchor` ("created_at")."""

    anchor: str
    seconds: int


class BatchCreateRequest(VlmqRequest):
    """OpenAI's batch request, plus an optional `webhook` for the batch's completion."""

    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: Metadata | None = None
    output_expires_after: ExpiresAfter | None = None
    webhook: str | None = None


class BatchLine(VlmqRequest):
    """One line of a batch's input file: a request to the batch's endpoint. Its `body` is
    parsed by the endpoint's own request model, as the live endpoint parses it."""

    model_config = {"extra": "ignore"}

    custom_id: str = Field(min_length=1, max_length=MAX_CUSTOM_ID_CHARS)
    method: str = "POST"
    url: str
    body: dict[str, Any]
