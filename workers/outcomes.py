"""What a claimed attempt leaves behind, for one job and for batch lines alike: the error a
failure records, the held marks dropped, the fair queue's charges settled, the answers
cached and the single-flight lead given up."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.orm import Session

from services.core import audit, cache
from services.core.fair_queue import Settlement
from services.core.jobs.lifecycle import Claim, fail_job
from services.core.runtime import Runtime
from workers.failures import client_message
from workers.schedulers import RequestCanceled
from workers.screening import ContentFiltered

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Failure:
    """An attempt that failed, and the error its job records."""

    claim: Claim
    error_type: str
    message: str


def input_failure(claim: Claim, error: Exception) -> Failure:
    """The error of an attempt whose input could not be loaded or decoded."""
    return Failure(claim, "invalid_input", f"could not load the job's input: {error}")


def call_failure(claim: Claim, error: Exception) -> Failure | None:
    """The error an attempt records for the exception its model call failed with; None when
    its job was canceled (it has ended already: there is nothing to record)."""
    if isinstance(error, RequestCanceled):
        return None
    if isinstance(error, TimeoutError):
        return Failure(claim, "timeout", "the job ran past its time limit")
    if isinstance(error, ContentFiltered):
        return Failure(claim, "content_filter", str(error))
    log.error("inference_failed", job_id=claim.job_id, exc_info=error)
    return Failure(claim, "inference_error", client_message(error))


def record_failures(session: Session, failures: list[Failure]) -> None:
    """Fail the jobs of these attempts (each a no-op if its attempt is no longer current)."""
    for failure in failures:
        fail_job(session, failure.claim.job_id, failure.claim, failure.error_type, failure.message)
        if failure.error_type == "content_filter":
            audit.record(
                session,
                audit.Actor(audit.SERVICE),
                "screening.refused",
                tenant_id=failure.claim.tenant_id,
                target=failure.claim.job_id,
                details={"message": failure.message},
            )


def drop_held(runtime: Runtime, job_ids: list[str]) -> None:
    """Forget that this worker holds these jobs unclaimed (it claimed them, or could not);
    if Redis is down, the marks only expire later."""
    try:
        runtime.broker.fair.drop_held(job_ids)
    except Exception:
        log.warning("held_mark_delete_failed", job_ids=job_ids)


def settle(runtime: Runtime, served: list[tuple[Claim, int]]) -> None:
    """Correct what fair queuing charged these attempts' tenants to the tokens they really
    cost (0 for an answer from the cache). A failure leaves the estimate standing."""
    try:
        runtime.broker.fair.settle(settlements(served))
    except Exception:
        log.warning("settle_failed", jobs=len(served))


def settlements(served: list[tuple[Claim, int]]) -> list[Settlement]:
    """The fair queue's corrections for these attempts and the tokens each really cost."""
    return [
        Settlement(claim.band, claim.tenant_id, claim.cost_tokens, tokens)
        for claim, tokens in served
    ]


def tokens_served(result: dict[str, Any], *, cache_hit: bool = False, extra: int = 0) -> int:
    """The model tokens an answer took (prompt plus completion, plus the `extra` tokens of
    the other passes it took: `Prediction.extra_tokens`; none from the cache)."""
    if cache_hit:
        return 0
    usage = result.get("usage") or {}
    return int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0) + extra


def cache_answers(
    runtime: Runtime,
    answers: dict[str, dict[str, Any]],
    *,
    lead: str | None = None,
    served: list[tuple[Claim, int]] | None = None,
) -> None:
    """Cache answers by cache key, give up the single-flight lead of `lead`, and settle what
    the `served` attempts cost with the fair queue, in one round trip. A failure only costs
    later requests a model call (the answers are recorded all the same, and a lead left
    behind lasts until its TTL) and leaves the fair queue's estimates standing."""
    if not answers and lead is None and not served:
        return
    try:
        pipeline = runtime.redis.pipeline(transaction=False)
        for key, answer in answers.items():
            cache.put_cached(pipeline, key, answer, runtime.settings.cache_ttl_s)
        if lead is not None:
            cache.release_lead(pipeline, lead)
        runtime.broker.fair.settle(settlements(served or []), pipeline)
        pipeline.execute()
    except Exception:
        log.warning("cache_put_failed", answers=len(answers))


def give_up_lead(runtime: Runtime, claim: Claim) -> None:
    """Give up the single-flight lead of the claim's cache key, if this job still holds it
    (after a failed attempt)."""
    if claim.cache_key is not None:
        with contextlib.suppress(Exception):  # a lead left behind lasts only until its TTL
            cache.release_lead_if_held(runtime.redis, claim.cache_key, claim.job_id)
