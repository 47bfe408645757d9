"""The work of one job: claim it, build the model request, predict (scheduled with other
requests), record, cache."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime
from typing import Any

import structlog

from services.core import cache, logs, metrics, notify
from services.core.db import utcnow
from services.core.jobs.lifecycle import Claim, claim_job, finish_job, keep_stream_log
from services.core.jobs.service import has_ended
from services.core.runtime import Runtime
from workers.backends.base import Prediction, PredictRequest
from workers.leases import LeaseKeeper
from workers.model_requests import company_limit, load_inputs, predict_request
from workers.outcomes import (
    Failure,
    cache_answers,
    call_failure,
    drop_held,
    give_up_lead,
    input_failure,
    record_failures,
    settle,
    tokens_served,
)
from workers.schedulers import Scheduler
from workers.screening import run_one_screened, screening_key

log = structlog.get_logger(__name__)


def run_job(runtime: Runtime, scheduler: Scheduler, leases: LeaseKeeper, job_id: str) -> str:
    """Run one job to a terminal state; returns what happened (for logs and tests).

    From its claim until its result is recorded, the job's lease is renewed by `leases`.
    The job's held mark (see `FairQueue.pick`) goes once it is claimed (a claimed job is
    the lease's to watch), in the same round trip as its cache check when it has a cache key.
    """
    with scheduler.incoming():
        try:
            with runtime.unit_of_work() as session:
                claim = claim_job(session, runtime.settings, job_id)
        except Exception:
            # Not claimed: the maintenance pass must be free to send the job again.
            drop_held(runtime, [job_id])
            raise
        if claim is None:
            drop_held(runtime, [job_id])
            return "skipped"
    # Every line about the job, here and in its webhook's delivery, carries the id of the
    # request that made it.
    with logs.bound(request_id=claim.request_id, job_id=job_id), leases.holding([claim]):
        outcome = run_claimed(runtime, scheduler, claim)
        log.info("job_done", outcome=outcome, attempt=claim.attempt, tenant=claim.tenant_id)
        return outcome


def run_claimed(runtime: Runtime, scheduler: Scheduler, claim: Claim) -> str:
    """Answer (from the cache, a job in flight, or the model) and record one attempt."""
    key = claim.cache_key
    leading = False
    if key is None:
        drop_held(runtime, [claim.job_id])
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
            delete=runtime.broker.fair.held_key(claim.job_id),
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
    with scheduler.incoming():
        try:
            request = predict_request(claim, load_inputs(runtime, [claim]), runtime.settings)
        except Exception as exc:
            return fail_attempt(runtime, claim, input_failure(claim, exc), leading=leading)
    # No database session is open from here on: inference can take minutes, and a held
    # connection would pin a pool slot (or, on SQLite, a read snapshot) all that time.
    return predict_and_record(runtime, scheduler, claim, request, leading=leading)


def finish_from_cache(runtime: Runtime, claim: Claim, cached: dict[str, Any]) -> None:
    """Finish the job with an answer from the cache (another job just computed it)."""
    settle(runtime, [(claim, 0)])
    if claim.stream:
        if claim.attempt > 1:
            notify.publish_attempt(runtime.redis, claim.job_id, claim.attempt)
        notify.publish_delta(runtime.redis, claim.job_id, cached.get("output") or "")
        end_stream(runtime, claim)
    with runtime.unit_of_work() as session:
        finish_job(
            session,
            claim,
            output=cached.get("output") or "",
            result=cached.get("result") or {},
            inference_ms=0.0,
            cache_hit=True,
        )


def end_stream(runtime: Runtime, claim: Claim) -> None:
    """Mark the end of the attempt's stream; a background response's stream is then kept
    with its row (before the row is final, so a final row's stream is there to replay)."""
    notify.publish_end(runtime.redis, claim.job_id)
    if claim.keeps_stream:
        stream_log = notify.stream_log(runtime.redis, claim.job_id)
        with runtime.unit_of_work() as session:
            keep_stream_log(session, claim, stream_log)


def predict_and_record(
    runtime: Runtime, scheduler: Scheduler, claim: Claim, request: PredictRequest, *, leading: bool
) -> str:
    """Predict in the next model call, then record the answer (or the failure) for this attempt.

    `leading`: this job holds the single-flight lead of its cache key, given up with the
    answer's caching, or after a failure.
    """
    if claim.stream:
        redis_client, job_id = runtime.redis, claim.job_id
        if claim.attempt > 1:
            # Readers of the stream start the new attempt's text afresh, not after the text
            # of the attempt that was cut off.
            notify.publish_attempt(redis_client, job_id, claim.attempt)
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
        call_result = run_one_screened(
            scheduler,
            request,
            runtime=runtime,
            key=screening_key(runtime, claim, request),
            company=company_limit(claim.attempt, runtime.settings),
            time_limit_s=runtime.settings.task_soft_time_limit_s,
            band=claim.band,
            tenant=claim.tenant_id,
            # A canceled job's row leaves the batch at the next decode step.
            canceled=lambda: job_ends.ended(job_id),
        )
    except Exception as exc:
        return fail_attempt(runtime, claim, call_failure(claim, exc), leading=leading)
    finally:
        if claim.stream:
            end_stream(runtime, claim)
    inference_ms = (time.perf_counter() - started) * 1000
    prediction = call_result.prediction
    record_token_timing(claim, prediction, submitted_at)
    result = prediction.result()
    # Cache before finishing: a client woken by the finish may repeat the request at once.
    # The answer is valid even if this attempt turns out to be stale.
    cache_answers(
        runtime,
        {}
        if claim.cache_key is None
        else {claim.cache_key: {"output": prediction.answer, "result": result}},
        lead=claim.cache_key if leading else None,
        served=[(claim, tokens_served(result, extra=prediction.extra_tokens))],
    )
    with runtime.unit_of_work() as session:
        finished = finish_job(
            session,
            claim,
            output=prediction.answer,
            result=result,
            inference_ms=inference_ms,
            batch_size=call_result.batch_size,
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


def fail_attempt(runtime: Runtime, claim: Claim, failure: Failure | None, *, leading: bool) -> str:
    """Give up the attempt's lead, if it holds one, and record its failure (None: its job was
    canceled, and has ended already)."""
    if leading:
        give_up_lead(runtime, claim)
    if failure is None:
        return "canceled"
    with runtime.unit_of_work() as session:
        record_failures(session, [failure])
    return "failed"
