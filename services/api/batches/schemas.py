"""Request shapes of `/v1/batches`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BatchCreateRequest(BaseModel):
    """OpenAI's batch request, plus an optional `webhook` for the batch's completion."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    webhook: str | None = None
