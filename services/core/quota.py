"""The caps on a tenant's unfinished interactive work: jobs (`VLMQ_TENANT_MAX_QUEUED`) and
the tokens they may cost (`VLMQ_TENANT_MAX_QUEUED_TOKENS`)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from services.core import metrics
from services.core.config import Settings
from services.core.errors import TooManyRequestsError
from services.core.tables import UNFINISHED_STATUSES, Job

# A tenant at its cap waits for jobs to finish: a second is a fair first guess.
QUOTA_RETRY_AFTER_S = 1


def unfinished_interactive_work(
    tenant_id: Any,
) -> tuple[sa.ScalarSelect[int], sa.ScalarSelect[int]]:
    """How many of the tenant's interactive jobs are unfinished, and the tokens they may
    cost (batch lines do not count: a batch has its own line cap); `tenant_id` is an id or a
    column holding one."""
    unfinished = (
        Job.tenant_id == tenant_id,
        Job.status.in_(UNFINISHED_STATUSES),
        Job.batch_id.is_(None),
    )
    return (
        sa.select(sa.func.count()).select_from(Job).where(*unfinished).scalar_subquery(),
        sa.select(sa.func.coalesce(sa.func.sum(Job.cost_tokens), 0))
        .where(*unfinished)
        .scalar_subquery(),
    )


def refuse_over_quota(
    unfinished: int,
    settings: Settings,
    adding: int = 1,
    *,
    unfinished_tokens: int = 0,
    adding_tokens: int = 0,
) -> None:
    """A 429 when `adding` jobs to the tenant's `unfinished` would pass `tenant_max_queued`,
    or their tokens would pass `tenant_max_queued_tokens`."""
    cap = settings.tenant_max_queued
    if cap > 0 and unfinished + adding > cap:
        metrics.refused_by_limit("queue")
        raise TooManyRequestsError(
            f"this API key has {unfinished} unfinished jobs, the most allowed is {cap}: wait "
            "for some to finish, or send the work as a batch",
            code="quota_exceeded",
            retry_after_s=QUOTA_RETRY_AFTER_S,
        )
    token_cap = settings.tenant_max_queued_tokens
    if token_cap > 0 and unfinished_tokens + adding_tokens > token_cap:
        metrics.refused_by_limit("queued_tokens")
        raise TooManyRequestsError(
            f"this API key's unfinished jobs may cost {unfinished_tokens} tokens and this "
            f"request {adding_tokens} more; the most allowed is {token_cap} "
            "(VLMQ_TENANT_MAX_QUEUED_TOKENS, prompt plus max_tokens): wait for some to finish, "
            "lower max_tokens, or send the work as a batch",
            code="quota_exceeded",
            param="max_tokens",
            retry_after_s=QUOTA_RETRY_AFTER_S,
        )
