"""The work of one job: claim it, build the model request, predict (batched), record, cache."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from services.core import cache, notify
from services.core.config import Settings
from services.core.inputs.images import to_rgb
from services.core.inputs.prompts import GenerationParams
from services.core.jobs.lifecycle import Claim, claim_job, fail_job, finish_job
from services.core.jobs.service import has_ended
from services.core.models import Image, Job
from services.core.runtime import Runtime
from workers.backends.base import PredictRequest
from workers.batching import Batcher
from workers.failures import client_message
from workers.leases import LeaseKeeper

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobInput:
    """What the worker needs of a job row."""

    request: PredictRequest
    cache_key: str | None
    stream: bool


def load_input(runtime: Runtime, job_id: str) -> JobInput:
    """The model request of a job (images decoded from the database) and its cache key."""
    with runtime.sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise LookupError(job_id)
        hashes = job.image_hashes
        images = {
            row.sha256: row.data
            for row in session.scalars(sa.select(Image).where(Image.sha256.in_(hashes)))
        }
        messages: list[dict[str, Any]] = []
        for message in job.messages:
            parts = []
            for part in message["content"]:
                if part["type"] == "image":
                    parts.append({"type": "image", "image": to_rgb(images[part["sha256"]])})
                else:
                    parts.append(part)
            messages.append({"role": message["role"], "content": parts})
        params = GenerationParams.model_validate(job.params)
        return JobInput(PredictRequest(messages, params), job.cache_key, job.stream)


def run_job(runtime: Runtime, batcher: Batcher, leases: LeaseKeeper, job_id: str) -> str:
    """Run one job to a terminal state; returns what happened (for logs and tests).

    From its claim until its result is recorded, the job's lease is renewed by `leases`.
    """
    with batcher.incoming():
        try:
            with runtime.unit_of_work() as session:
                claim = claim_job(session, runtime.settings, job_id)
        finally:
            # The message is consumed either way: a claimed job is the lease's to watch now,
            # and one the database could not claim must be re-sent by the maintenance pass.
            forget_message(runtime, job_id)
        if claim is None:
            return "skipped"
    with leases.holding(claim):
        return run_claimed(runtime, batcher, claim)


def run_claimed(runtime: Runtime, batcher: Batcher, claim: Claim) -> str:
    """Load, answer (from the cache, a job in flight, or the model) and record one attempt."""
    with batcher.incoming():
        try:
            job_input = load_input(runtime, claim.job_id)
        except Exception as exc:
            message = f"could not load the job's input: {exc}"
            fail_attempt(runtime, claim, "invalid_input", message)
            return "failed"
    # No database session is open from here on: inference can take minutes, and a held
    # connection would pin a pool slot (or, on SQLite, a read snapshot) all that time.
    key = job_input.cache_key
    if key is None:
        return predict_and_record(runtime, batcher, claim, job_input)
    if answer_from_cache(runtime, claim, key, job_input.stream):
        return "cached"
    time_limit_s = runtime.settings.task_soft_time_limit_s
    leader = cache.lead_or_follow(runtime.redis, key, claim.job_id, time_limit_s)
    if leader is not None:
        notify.wait_for_job(
            runtime.redis, leader, lambda: has_ended(runtime.sessions, leader), time_limit_s
        )
        if answer_from_cache(runtime, claim, key, job_input.stream):
            return "shared"
    try:
        return predict_and_record(runtime, batcher, claim, job_input)
    finally:
        if leader is None:
            cache.release_lead(runtime.redis, key, claim.job_id)


def answer_from_cache(runtime: Runtime, claim: Claim, key: str, stream: bool) -> bool:
    """Finish the job from the cache if the answer is there (another job just computed it)."""
    cached = cache.get_cached(runtime.redis, key)
    if cached is None:
        return False
    if stream:
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
    return True


def predict_and_record(
    runtime: Runtime, batcher: Batcher, claim: Claim, job_input: JobInput
) -> str:
    """Predict in the next batch, then record the answer (or the failure) for this attempt."""
    request = job_input.request
    if job_input.stream:
        redis_client, job_id = runtime.redis, claim.job_id
        request = PredictRequest(
            request.messages,
            request.params,
            on_text=lambda delta: notify.publish_delta(redis_client, job_id, delta),
        )
    started = time.perf_counter()
    try:
        batch_result = batcher.run(
            request,
            company=company_limit(claim.attempt, runtime.settings),
            time_limit_s=runtime.settings.task_soft_time_limit_s,
        )
    except TimeoutError:
        fail_attempt(runtime, claim, "timeout", "the job ran past its time limit")
        return "failed"
    except Exception as exc:
        log.exception("event=inference_failed job_id=%s", claim.job_id)
        fail_attempt(runtime, claim, "inference_error", client_message(exc))
        return "failed"
    finally:
        if job_input.stream:
            notify.publish_end(runtime.redis, claim.job_id)
    inference_ms = (time.perf_counter() - started) * 1000
    prediction = batch_result.prediction
    result = prediction.result()
    # Cache before finishing: a client woken by the finish may repeat the request at once.
    # The answer is valid even if this attempt turns out to be stale.
    if job_input.cache_key is not None:
        try:
            cache.put_cached(
                runtime.redis,
                job_input.cache_key,
                {"output": prediction.answer, "result": result},
                runtime.settings.cache_ttl_s,
            )
        except Exception:
            log.warning("event=cache_put_failed job_id=%s", claim.job_id)
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


def forget_message(runtime: Runtime, job_id: str) -> None:
    """Drop the job's enqueue marker; if Redis is down, the marker only expires later."""
    try:
        runtime.broker.drop_markers([job_id])
    except Exception:
        log.warning("event=marker_delete_failed job_id=%s", job_id)


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
