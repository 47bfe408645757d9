"""The work of one job: claim it, build the model request, predict (batched), record, cache."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog

from services.core import cache, logs, metrics, notify
from services.core.config import Settings
from services.core.db import utcnow
from services.core.inputs.images import to_rgb
from services.core.inputs.prompts import GenerationParams
from services.core.jobs.lifecycle import Claim, claim_job, fail_job, finish_job
from services.core.jobs.service import has_ended
from services.core.models import Image, image_hashes
from services.core.runtime import Runtime
from workers.backends.base import Prediction, PredictRequest
from workers.batching import Batcher, RequestCanceled
from workers.failures import client_message
from workers.leases import LeaseKeeper

log = structlog.get_logger(__name__)


def load_images(runtime: Runtime, claims: list[Claim]) -> dict[str, bytes]:
    """The stored bytes of every image these claims' messages name: a job's first image came
    with its claim, the others (if any) in one read."""
    images = dict(claim.first_image for claim in claims if claim.first_image is not None)
    hashes = sorted(
        {sha for claim in claims for sha in image_hashes(claim.messages)} - images.keys()
    )
    if hashes:
        with runtime.sessions() as session:
            rows = session.execute(
                sa.select(Image.sha256, Image.data).where(Image.sha256.in_(hashes))
            )
            images.update((sha, data) for sha, data in rows)
    return images


def predict_request(claim: Claim, images: dict[str, bytes], settings: Settings) -> PredictRequest:
    """The model request of a claimed job: its messages with each image decoded, and the
    LoRA adapter its `model` names (None: the base model)."""
    messages: list[dict[str, Any]] = []
    for message in claim.messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "image":
                parts.append({"type": "image", "image": to_rgb(images[part["sha256"]])})
            else:
                parts.append(part)
        messages.append({"role": message["role"], "content": parts})
    adapter = claim.model if claim.model in settings.adapters else None
    return PredictRequest(messages, GenerationParams.model_validate(claim.params), adapter=adapter)


def run_job(runtime: Runtime, batcher: Batcher, leases: LeaseKeeper, job_id: str) -> str:
    """Run one job to a terminal state; returns what happened (for logs and tests).

    From its claim until its result is recorded, the job's lease is renewed by `leases`.
    The job's enqueue marker goes once it is claimed (a claimed job is the lease's to
    watch), in the same round trip as its cache check when it has a cache key.
    """
    with batcher.incoming():
        try:
            with runtime.unit_of_work() as session:
                claim = claim_job(session, runtime.settings, job_id)
        except Exception:
            # Not claimed: the maintenance pass must be free to send the job again.
            forget_message(runtime, job_id)
            raise
        if claim is None:
            forget_message(runtime, job_id)
            return "skipped"
    # Every line about the job, here and in its webhook's delivery, carries the id of the
    # request that made it.
    with logs.bound(request_id=claim.request_id, job_id=job_id), leases.holding([claim]):
        outcome = run_claimed(runtime, batcher, claim)
        log.info("job_done", outcome=outcome, attempt=claim.attempt, tenant=claim.tenant_id)
        return outcome


def run_claimed(runtime: Runtime, batcher: Batcher, claim: Claim) -> str:
    """Answer (from the cache, a job in flight, or the model) and record one attempt."""
    key = claim.cache_key
    leading = False
    if key is None:
        forget_message(runtime, claim.job_id)
    else:
        time_limit_s = runtime.settings.task_soft_time_limit_s
        # The API checked the cache at submit; checking again in the round trip that drops
        # the marker and takes the lead costs nothing, and answers a job whose twin
        # finished while it was queued (without loading its images).
        cached, leader = cache.check_or_lead(
            runtime.redis,
            key,
            claim.job_id,
            time_limit_s,
            delete=runtime.broker.marker_key(claim.job_id),
        )
        metrics.cache_looked_up(claim.model, hit=cached is not None)
        if cached is None and leader is not None:
            metrics.followed(claim.model)
            runtime.job_ends.wait(leader, lambda: has_ended(runtime.sessions, leader), time_limit_s)
            cached = cache.get_cached(runtime.redis, key)
            if cached is not None:
                finish_from_cache(runtime, claim, cached)
                return "shared"
        if cached is not None:
            finish_from_cache(runtime, claim, cached)
            return "cached"
        leading = leader is None
    with batcher.incoming():
        try:
            request = predict_request(claim, load_images(runtime, [claim]), runtime.settings)
        except Exception as exc:
            release_lead(runtime, claim, leading)
            fail_attempt(runtime, claim, "invalid_input", f"could not load the job's input: {exc}")
            return "failed"
    # No database session is open from here on: inference can take minutes, and a held
    # connection would pin a pool slot (or, on SQLite, a read snapshot) all that time.
    return predict_and_record(runtime, batcher, claim, request, leading=leading)


def release_lead(runtime: Runtime, claim: Claim, leading: bool) -> None:
    """Give up the single-flight lead after a failed attempt, if this job still holds it."""
    if leading and claim.cache_key is not None:
        with contextlib.suppress(Exception):  # a lead left behind lasts only until its TTL
            cache.release_lead_if_held(runtime.redis, claim.cache_key, claim.job_id)


def finish_from_cache(runtime: Runtime, claim: Claim, cached: dict[str, Any]) -> None:
    """Finish the job with an answer from the cache (another job just computed it)."""
    if claim.stream:
        notify.publish_delta(runtime.redis, claim.job_id, cached.get("output") or "")
        notify.publish_end(runtime.redis, claim.job_id)
    with runtime.unit_of_work() as session:
        finish_job(
            session,
            claim,
            output=cached.get("output") or "",
            result=cached.get("result") or {},
            inference_ms=0.0,
            cache_hit=True,
        )


def predict_and_record(
    runtime: Runtime, batcher: Batcher, claim: Claim, request: PredictRequest, *, leading: bool
) -> str:
    """Predict in the next batch, then record the answer (or the failure) for this attempt.

    `leading`: this job holds the single-flight lead of its cache key, given up with the
    answer's caching, or after a failure.
    """
    if claim.stream:
        redis_client, job_id = runtime.redis, claim.job_id
        request = dataclasses.replace(
            request,
            on_text=lambda delta, logprobs: notify.publish_delta(
                redis_client, job_id, delta, logprobs
            ),
        )
    submitted_at = utcnow()
    started = time.perf_counter()
    job_ends, job_id = runtime.job_ends, claim.job_id
    try:
        batch_result = batcher.run(
            request,
            company=company_limit(claim.attempt, runtime.settings),
            time_limit_s=runtime.settings.task_soft_time_limit_s,
            # A canceled job's row leaves the batch at the next decode step.
            canceled=lambda: job_ends.ended(job_id),
        )
    except Exception as exc:
        release_lead(runtime, claim, leading)
        if isinstance(exc, RequestCanceled):
            return "canceled"
        if isinstance(exc, TimeoutError):
            fail_attempt(runtime, claim, "timeout", "the job ran past its time limit")
        else:
            log.exception("inference_failed", job_id=claim.job_id)
            fail_attempt(runtime, claim, "inference_error", client_message(exc))
        return "failed"
    finally:
        if claim.stream:
            notify.publish_end(runtime.redis, claim.job_id)
    inference_ms = (time.perf_counter() - started) * 1000
    prediction = batch_result.prediction
    record_token_timing(claim, prediction, submitted_at)
    result = prediction.result()
    # Cache before finishing: a client woken by the finish may repeat the request at once.
    # The answer is valid even if this attempt turns out to be stale.
    cache_answer(runtime, claim, {"output": prediction.answer, "result": result}, leading)
    with runtime.unit_of_work() as session:
        finished = finish_job(
            session,
            claim,
            output=prediction.answer,
            result=result,
            inference_ms=inference_ms,
            batch_size=batch_result.batch_size,
        )
    return "succeeded" if finished else "stale"


def record_token_timing(claim: Claim, prediction: Prediction, submitted_at: datetime) -> None:
    """Time to first token (from the job's submit) and decode time per token, when the
    backend timed its generation."""
    timing = prediction.timing
    if timing is None or claim.created_at is None:
        return
    waited_s = (submitted_at - claim.created_at).total_seconds()
    metrics.token_timing(
        claim.model,
        waited_s + timing.first_token_s,
        timing.decode_s,
        prediction.completion_tokens,
    )


def cache_answer(runtime: Runtime, claim: Claim, answer: dict[str, Any], leading: bool) -> None:
    """Cache the attempt's answer and give up its single-flight lead, in one round trip."""
    key = claim.cache_key
    if key is None:
        return
    try:
        pipeline = runtime.redis.pipeline(transaction=False)
        cache.put_cached(pipeline, key, answer, runtime.settings.cache_ttl_s)
        if leading:
            cache.release_lead(pipeline, key)
        pipeline.execute()
    except Exception:
        # A lead left behind only lasts until its TTL; the answer is recorded all the same.
        log.warning("cache_put_failed", job_id=claim.job_id)


def forget_message(runtime: Runtime, job_id: str) -> None:
    """Drop the job's enqueue marker; if Redis is down, the marker only expires later."""
    try:
        runtime.broker.drop_markers([job_id])
    except Exception:
        log.warning("marker_delete_failed", job_id=job_id)


def fail_attempt(runtime: Runtime, claim: Claim, error_type: str, message: str) -> None:
    """Fail the job of a claimed attempt (a no-op if the attempt is no longer current)."""
    with runtime.unit_of_work() as session:
        fail_job(session, claim.job_id, claim, error_type, message)


def company_limit(attempt: int, settings: Settings) -> int:
    """How many requests an attempt's model call may hold.

    A job on a later attempt may be what killed its worker, so it shares smaller calls
    with other retried jobs only (a quarter of the batch per earlier attempt), and its
    last attempt runs alone: a poison input fails by itself, while the innocent jobs of a
    worker that was killed for another reason still run together.
    """
    if attempt >= settings.max_attempts:
        return 1
    return max(1, settings.max_batch // 4 ** (attempt - 1))
