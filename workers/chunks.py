"""Batch lines in chunks: claim, run and record up to `max_batch` lines together.

A chunk's lines are claimed by one UPDATE, their images read by one SELECT, answered in one
batched model call (a line the cache knows, or one that repeats another line of the chunk,
costs no model time) and recorded by one UPDATE. Every line keeps its own attempt and
lease, so a crash re-runs only the lines that had not finished, and a line that fails (an
image that will not decode, a poison input) fails alone.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog

from services.core import cache, logs, metrics
from services.core.jobs.lifecycle import Claim, Finished, claim_jobs, fail_job, finish_batch_lines
from services.core.runtime import Runtime
from workers.batching import Batcher, BatchResult, RequestCanceled
from workers.failures import client_message
from workers.leases import LeaseKeeper
from workers.pipeline import company_limit, load_images, predict_request

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class LineFailure:
    """A line that failed, and the error it records."""

    claim: Claim
    error_type: str
    message: str


def run_chunk(
    runtime: Runtime,
    batcher: Batcher,
    leases: LeaseKeeper,
    job_ids: list[str],
    loading: threading.Semaphore,
) -> str:
    """Run the lines of one chunk to a terminal state; returns what happened (for logs).

    `loading` bounds how many chunks of one worker hold decoded images at once, so a
    worker's memory does not grow with the number of chunks its threads have taken.
    """
    # Lines are claimed only once the chunk may load: a worker never holds more lines than
    # it is about to run, so a crash costs an attempt to those lines only, and the lines of
    # chunks still waiting stay free for another worker.
    with loading:
        try:
            with runtime.unit_of_work() as session:
                claims = claim_jobs(session, runtime.settings, job_ids)
        finally:
            # As for one job: the message is consumed, claimed or not (see `run_job`).
            forget_messages(runtime, job_ids)
        # The deliveries of each line can be counted from this line (bench.moderation_batch).
        log.info("chunk_received", lines=len(job_ids), claimed=len(claims))
        if not claims:
            return "skipped"
        first = claims[0]
        with logs.bound(request_id=first.request_id, batch_id=first.batch_id):
            outcome = run_claimed_chunk(runtime, batcher, leases, claims)
            log.info("chunk_done", outcome=outcome)
            return outcome


def run_claimed_chunk(
    runtime: Runtime, batcher: Batcher, leases: LeaseKeeper, claims: list[Claim]
) -> str:
    """Answer and record the claimed lines of a chunk (their leases renewed meanwhile)."""
    with leases.holding(claims):
        answers, failures = answer_chunk(runtime, batcher, claims)
        with runtime.unit_of_work() as session:
            finish_batch_lines(session, answers)
            for failure in failures:
                fail_job(
                    session,
                    failure.claim.job_id,
                    failure.claim,
                    failure.error_type,
                    failure.message,
                )
    return f"chunk lines={len(claims)} answered={len(answers)} failed={len(failures)}"


def answer_chunk(
    runtime: Runtime, batcher: Batcher, claims: list[Claim]
) -> tuple[list[Finished], list[LineFailure]]:
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
    failures: list[LineFailure] = []
    images = load_images(runtime, runs)
    requests, runnable = [], []
    for claim in runs:
        try:
            requests.append(predict_request(claim, images, runtime.settings))
            runnable.append(claim)
        except Exception as exc:
            message = f"could not load the job's input: {exc}"
            for line in [claim, *repeats.get(claim.cache_key or "", [])]:
                failures.append(LineFailure(line, "invalid_input", message))
    started = time.perf_counter()
    job_ends, batch_id = runtime.job_ends, claims[0].batch_id or ""
    outcomes = batcher.run_many(
        requests,
        company=min((company_limit(c.attempt, runtime.settings) for c in runnable), default=1),
        time_limit_s=runtime.settings.task_soft_time_limit_s,
        # A canceled batch's lines leave the model's batch at the next decode step.
        canceled=lambda: job_ends.ended(batch_id),
    )
    inference_ms = (time.perf_counter() - started) * 1000
    to_cache: dict[str, dict[str, Any]] = {}
    for claim, outcome in zip(runnable, outcomes, strict=True):
        shared = repeats.get(claim.cache_key or "", [])
        if isinstance(outcome, BatchResult):
            prediction = outcome.prediction
            result = prediction.result()
            answers.append(
                Finished(claim, prediction.answer, result, inference_ms, False, outcome.batch_size)
            )
            answers.extend(Finished(c, prediction.answer, result, 0.0, True) for c in shared)
            if claim.cache_key is not None:
                to_cache[claim.cache_key] = {"output": prediction.answer, "result": result}
            continue
        failure = line_failure(claim, outcome)
        failures.append(failure)
        failures.extend(LineFailure(c, failure.error_type, failure.message) for c in shared)
    try:
        cache.put_many(runtime.redis, to_cache, runtime.settings.cache_ttl_s)
    except Exception:
        log.warning("cache_put_failed", lines=len(to_cache))
    return answers, failures


def line_failure(claim: Claim, error: Exception) -> LineFailure:
    """The error a line records for the exception its prediction failed with."""
    if isinstance(error, TimeoutError):
        return LineFailure(claim, "timeout", "the job ran past its time limit")
    if isinstance(error, RequestCanceled):  # the line is canceled already: this records nothing
        return LineFailure(claim, "canceled", "the batch was canceled")
    log.error("inference_failed", job_id=claim.job_id, error=repr(error))
    return LineFailure(claim, "inference_error", client_message(error))


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


def forget_messages(runtime: Runtime, job_ids: list[str]) -> None:
    """Drop the chunk's enqueue markers; if Redis is down, they only expire later."""
    try:
        runtime.broker.drop_markers(job_ids)
    except Exception:
        log.warning("marker_delete_failed", jobs=len(job_ids))
