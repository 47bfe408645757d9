"""How a request waits for the model: its priority band and its queue deadline.

OpenAI's `service_tier` and vLLM's integer `priority` choose the band (see
`services.core.bands`); `max_queue_ms` bounds how long the job may wait to start (Baseten's
`max_time_in_queue`): a job not started in time ends `expired` and never runs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from services.core.bands import Band, band_of
from services.core.config import Settings
from services.core.requests.base import VlmqRequest

# A day: longer waits are what batches are for.
MAX_QUEUE_MS_LIMIT = 24 * 3600 * 1000


class QueueingRequest(VlmqRequest):
    """The fields that say how a job waits for the model."""

    service_tier: Literal["auto", "default", "flex", "priority"] | None = None
    # vLLM's: lower runs sooner; 0 is the default.
    priority: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)
    max_queue_ms: int | None = Field(default=None, ge=1, le=MAX_QUEUE_MS_LIMIT)

    def band(self) -> Band:
        """The band an interactive job of this request waits in."""
        return band_of(self.service_tier, self.priority)

    def queue_limit_ms(self, settings: Settings, *, batch_line: bool = False) -> int | None:
        """How long its job may wait to start (None: no limit). Batch lines have none unless
        they ask: their batch's window bounds them already."""
        if self.max_queue_ms is not None:
            return self.max_queue_ms
        if batch_line or settings.default_max_queue_ms <= 0:
            return None
        return settings.default_max_queue_ms
