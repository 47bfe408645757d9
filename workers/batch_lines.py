"""Batch lines in chunks: claim, run and record up to `max_batch` lines together.

A chunk's lines are claimed by one UPDATE, their images read by one SELECT, answered together
in shared model calls (a line the cache knows, or one that repeats another line of the chunk,
costs no model time) and recorded by one UPDATE. Every line keeps its own attempt and
lease, so a crash re-runs only the lines that had not finished, and a line that fails (an
image that will not decode, a poison input) fails alone.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from services.core import cache, logs, metrics
from services.core.jobs.lifecycle import Claim, Finished, claim_jobs, finish_batch_lines
from services.core.runtime import Runtime
from workers.leases import LeaseKeeper
from workers.model_requests import company_limit, load_inputs, predict_request
from workers.outcomes import (
    Failure,
    cache_answers,
    call_failure,
    drop_held,
    input_failure,
    record_failures,
    tokens_served,
)
from workers.schedulers import CallResult, Scheduler
from workers.screening import run_screened, screening_key

log = structlog.get_logger(__name__)


def run_chunk(
    runtime: Runtime, scheduler: Scheduler, leases: LeaseKeeper, job_ids: list[str]
) -> str:
    """Run the lines of one chunk to a terminal state; returns what happened (for logs).

    The caller holds one of the worker's chunk-loading slots (`WorkerState.chunk_loading`),
    so a worker's memory does not grow with the number of chunks its threads have taken, and
    it took the lines only then: a worker never holds more lines than it is about to run,
    so a crash costs an attempt to those lines only.
    """
    try:
        with runtime.unit_of_work() as session:
            claims = claim_jobs(session, runtime.settings, job_ids)
    finally:
        # As for one job: the lines are taken, claimed or not (see `pipeline.run_job`).
        drop_held(runtime, job_ids)
    # The deliveries of each line can be counted from this line (bench.moderation_batch).
    log.info("chunk_received", lines=len(job_ids), claimed=len(claims))
    if not claims:
        return "skipped"
    first = claims[0]
    with logs.bound(request_id=first.request_id, batch_id=first.batch_id):
        outcome = run_claimed_chunk(runtime, scheduler, leases, claims)
        log.info("chunk_done", outcome=outcome)
        return outcome


def run_claimed_chunk(
    runtime: Runtime, scheduler: Scheduler, leases: LeaseKeeper, claims: list[Claim]
) -> str:
    """Answer and record the claimed lines of a chunk (their leases renewed meanwhile)."""
    with leases.holding(claims):
        answers, failures = answer_chunk(runtime, scheduler, claims)
        with runtime.unit_of_work() as session:
            finish_batch_lines(session, answers)
            record_failures(session, failures)
    return f"chunk lines={len(claims)} answered={len(answers)} failed={len(failures)}"


def answer_chunk(
    runtime: Runtime, scheduler: Scheduler, claims: list[Claim]
) -> tuple[list[Finished], list[Failure]]:
    """The answers of a chunk's claimed lines (from the cache or the model) and its failures."""
    cached = cached_answers(runtime, claims)
    answers = [
        Finished(claim, str(hit.get("output") or ""), hit.get("result") or {}, 0.0, True)
        for claim in claims
        if (hit := cached.get(claim.job_id)) is not None
    ]
    # A line that repeats an earlier line of the chunk (same cache key) shares its answer.
    runs: list[Claim] = []
    repeats: dict[str, list[Claim]] = {}
    for claim in claims:
        if claim.job_id in cached:
            continue
        if claim.cache_key is not None and claim.cache_key in repeats:
            repeats[claim.cache_key].append(claim)
            continue
        runs.append(claim)
        if claim.cache_key is not None:
            repeats[claim.cache_key] = []
    failures: list[Failure] = []
    inputs = load_inputs(runtime, runs)
    requests, runnable = [], []
    for claim in runs:
        try:
            requests.append(predict_request(claim, inputs, runtime.settings))
            runnable.append(claim)
        except Exception as exc:
            failures += with_repeats(input_failure(claim, exc), repeats)
    started = time.perf_counter()
    job_ends, batch_id = runtime.job_ends, claims[0].batch_id or ""
    outcomes = run_screened(
        scheduler,
        requests,
        runtime=runtime,
        keys=[screening_key(runtime, c, r) for c, r in zip(runnable, requests, strict=True)],
        company=min((company_limit(c.attempt, runtime.settings) for c in runnable), default=1),
        time_limit_s=runtime.settings.task_soft_time_limit_s,
        tenant=claims[0].tenant_id,
        # A canceled batch's lines leave the model's batch at the next decode step.
        canceled=lambda: job_ends.ended(batch_id),
    )
    inference_ms = (time.perf_counter() - started) * 1000
    to_cache: dict[str, dict[str, Any]] = {}
    # The tokens of other passes each answer took (attention maps, screening), by job.
    extra_tokens: dict[str, int] = {}
    for claim, outcome in zip(runnable, outcomes, strict=True):
        shared = repeats.get(claim.cache_key or "", [])
        if isinstance(outcome, CallResult):
            prediction = outcome.prediction
            extra_tokens[claim.job_id] = prediction.extra_tokens
            result = prediction.result()
            answers.append(
                Finished(claim, prediction.answer, result, inference_ms, False, outcome.batch_size)
            )
            answers.extend(Finished(c, prediction.answer, result, 0.0, True) for c in shared)
            if claim.cache_key is not None:
                to_cache[claim.cache_key] = {"output": prediction.answer, "result": result}
            continue
        failed = call_failure(claim, outcome)
        if failed is not None:  # None: the batch was canceled, its lines have ended
            failures += with_repeats(failed, repeats)
    served = [
        (
            a.claim,
            tokens_served(
                a.result, cache_hit=a.cache_hit, extra=extra_tokens.get(a.claim.job_id, 0)
            ),
        )
        for a in answers
    ]
    cache_answers(runtime, to_cache, served=served)
    return answers, failures


def with_repeats(failure: Failure, repeats: dict[str, list[Claim]]) -> list[Failure]:
    """The failure, and the same one for each line of the chunk that repeats its line."""
    lines = repeats.get(failure.claim.cache_key or "", [])
    return [failure, *(Failure(line, failure.error_type, failure.message) for line in lines)]


def cached_answers(runtime: Runtime, claims: list[Claim]) -> dict[str, dict[str, Any]]:
    """The cached answers of the chunk's lines, by job id (one round trip). Nothing checked
    the cache for them yet: the expansion that made them does not."""
    keyed = [claim for claim in claims if claim.cache_key is not None]
    if not keyed:
        return {}
    try:
        found = cache.get_many(runtime.redis, [claim.cache_key or "" for claim in keyed])
    except Exception:
        log.warning("cache_read_failed", lines=len(keyed))
        return {}
    answers = {
        claim.job_id: value for claim, value in zip(keyed, found, strict=True) if value is not None
    }
    model = keyed[0].model
    metrics.cache_looked_up(model, hit=True, count=len(answers))
    metrics.cache_looked_up(model, hit=False, count=len(keyed) - len(answers))
    return answers
