"""A tenant's usage: what it holds now, beside each of its limits."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from services.core.config import Settings
from services.core.responses.base import ResponseModel


class UsageLimits(BaseModel):
    """The tenant's limits (0 or empty: none)."""

    rate_limit: str
    max_unfinished_jobs: int
    max_queued_tokens: int
    max_waiting: int
    max_stored_bytes: int
    max_open_batches: int


class UsageResponse(ResponseModel):
    """What the tenant holds now: unfinished interactive jobs and the tokens they may cost,
    stored bytes (files and its jobs' images), and batches that have not ended."""

    object: Literal["usage"]
    unfinished_jobs: int
    queued_tokens: int
    stored_bytes: int
    open_batches: int
    limits: UsageLimits

    @classmethod
    def of(
        cls,
        settings: Settings,
        *,
        unfinished_jobs: int,
        queued_tokens: int,
        stored_bytes: int,
        open_batches: int,
    ) -> UsageResponse:
        """The usage object of a tenant's counts under these settings."""
        return cls(
            object="usage",
            unfinished_jobs=unfinished_jobs,
            queued_tokens=queued_tokens,
            stored_bytes=stored_bytes,
            open_batches=open_batches,
            limits=UsageLimits(
                rate_limit=settings.rate_limit,
                max_unfinished_jobs=settings.tenant_max_queued,
                max_queued_tokens=settings.tenant_max_queued_tokens,
                max_waiting=settings.tenant_max_waiting,
                max_stored_bytes=settings.tenant_max_stored_bytes,
                max_open_batches=settings.tenant_max_open_batches,
            ),
        )
