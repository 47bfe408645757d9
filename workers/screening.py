"""Screening: a job of a tenant whose moderation policy screens is answered only once its
images pass that policy.

Before the answer, each screened request's images are scored with the policy's questions
(P("yes") of each, as `/v1/moderations` scores: scoring requests of one call, a batch
chunk's lines, run together), and a request whose score reaches a category's threshold is
not answered: its outcome is `ContentFiltered`, naming the flagged categories and scores.
The others go on to the model without their screening.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import redis
import structlog

from services.core import cache
from services.core.inputs.prompts import GenerationParams, image_parts
from services.core.jobs.lifecycle import Claim
from services.core.model_info import served_revision
from services.core.runtime import Runtime
from workers.backends.base import PredictRequest
from workers.schedulers import CallResult, Scheduler

log = structlog.get_logger(__name__)


class ContentFiltered(Exception):
    """The input was flagged by its tenant's screening policy."""

    def __init__(self, flagged: dict[str, float], thresholds: dict[str, float]) -> None:
        self.flagged = flagged
        described = ", ".join(
            f"{name} {score:.3f} (threshold {thresholds[name]:g})"
            for name, score in flagged.items()
        )
        super().__init__(f"the input was flagged by the tenant's screening policy: {described}")


def scoring_request(request: PredictRequest) -> PredictRequest:
    """The request that scores `request`'s images (alone, in one user turn: the request's own
    words would change what the questions ask) with its screening questions."""
    questions = request.params.screen_questions or {}
    messages = [{"role": "user", "content": image_parts(request.messages)}]
    return PredictRequest(messages, GenerationParams(score_questions=questions))


def unscreened(request: PredictRequest) -> PredictRequest:
    """The request as the model answers it, without its screening."""
    params = request.params.model_copy(
        update={"screen_questions": None, "screen_thresholds": None, "screen_policy": None}
    )
    return dataclasses.replace(request, params=params)


def screening_key(runtime: Runtime, claim: Claim, request: PredictRequest) -> str | None:
    """The cache key of a screened job's scores: its images and the policy's questions,
    under the base model's revision (scores are cached like any answer)."""
    questions = request.params.screen_questions
    if not questions:
        return None
    settings = runtime.settings
    return cache.cache_key(
        model_revision=served_revision(settings, settings.model_id),
        messages=[{"role": "user", "content": image_parts(claim.messages)}],
        params=GenerationParams(score_questions=questions),
        tenant_id=None if settings.cache_shared else claim.tenant_id,
    )


def cached_scores(runtime: Runtime | None, keys: list[str | None]) -> list[dict[str, float] | None]:
    """The scores cached under these keys (None: not cached, or Redis is unreachable)."""
    wanted = [key for key in keys if key is not None]
    if runtime is None or not wanted:
        return [None] * len(keys)
    try:
        found = dict(zip(wanted, cache.get_many(runtime.redis, wanted), strict=True))
    except redis.RedisError:
        return [None] * len(keys)
    return [
        ((found.get(key) or {}).get("result") or {}).get("scores") if key else None for key in keys
    ]


def cache_scores(runtime: Runtime | None, scored: dict[str, dict[str, float]]) -> None:
    """Cache freshly computed scores (a Redis outage only costs a later recount)."""
    if runtime is None or not scored:
        return
    values = {key: {"output": "", "result": {"scores": scores}} for key, scores in scored.items()}
    try:
        cache.put_many(runtime.redis, values, runtime.settings.cache_ttl_s)
    except redis.RedisError:
        log.warning("screening_scores_not_cached", count=len(values))


def run_screened(
    scheduler: Scheduler,
    requests: list[PredictRequest],
    *,
    runtime: Runtime | None = None,
    keys: list[str | None] | None = None,
    **options: Any,
) -> list[CallResult | Exception]:
    """`scheduler.run_many` (same options), with each screened request's input scored
    first (or its scores read from the cache under `keys`, one per request): a flagged
    one's outcome is `ContentFiltered`, and it is never answered."""
    screened = [i for i, request in enumerate(requests) if request.params.screen_questions]
    outcomes: list[CallResult | Exception | None] = [None] * len(requests)
    # The tokens of each request's scoring pass (none for scores from the cache).
    scoring_tokens: dict[int, int] = {}
    if screened:
        screen_keys = [(keys or [None] * len(requests))[i] for i in screened]
        known = cached_scores(runtime, screen_keys)
        missing = [slot for slot, scores in enumerate(known) if scores is None]
        computed = scheduler.run_many(
            [scoring_request(requests[screened[slot]]) for slot in missing], **options
        )
        fresh: dict[str, dict[str, float]] = {}
        for slot, score in zip(missing, computed, strict=True):
            if isinstance(score, Exception):
                outcomes[screened[slot]] = score
                continue
            known[slot] = score.prediction.scores or {}
            scoring_tokens[screened[slot]] = score.prediction.prompt_tokens
            if (key := screen_keys[slot]) is not None:
                fresh[key] = known[slot] or {}
        cache_scores(runtime, fresh)
        for slot, index in enumerate(screened):
            scores = known[slot]
            if outcomes[index] is not None or scores is None:
                continue
            thresholds = requests[index].params.screen_thresholds or {}
            flagged = {
                name: value for name, value in scores.items() if value >= thresholds.get(name, 1.0)
            }
            if flagged:
                outcomes[index] = ContentFiltered(flagged, thresholds)
    answering = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if answering:
        answers = scheduler.run_many([unscreened(requests[i]) for i in answering], **options)
        for index, answer in zip(answering, answers, strict=True):
            outcomes[index] = charged(answer, scoring_tokens.get(index, 0))
    return [outcome for outcome in outcomes if outcome is not None]


def charged(outcome: CallResult | Exception, tokens: int) -> CallResult | Exception:
    """The answer, charged `tokens` more model tokens (its screening pass's), as fair queuing
    charges its tenant."""
    if isinstance(outcome, Exception) or not tokens:
        return outcome
    prediction = outcome.prediction
    extra = prediction.extra_tokens + tokens
    return dataclasses.replace(
        outcome, prediction=dataclasses.replace(prediction, extra_tokens=extra)
    )


def run_one_screened(
    scheduler: Scheduler,
    request: PredictRequest,
    *,
    runtime: Runtime | None = None,
    key: str | None = None,
    **options: Any,
) -> CallResult:
    """`scheduler.run` of one request, screened first (`run_screened`; `key`: where its
    scores are cached): its result, or the exception it failed with (`ContentFiltered`
    when its input was flagged)."""
    if not request.params.screen_questions:
        return scheduler.run(request, **options)
    (outcome,) = run_screened(scheduler, [request], runtime=runtime, keys=[key], **options)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
