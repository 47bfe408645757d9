"""The work of one job: claim it, build the model request, predict, record, cache."""

from __future__ import annotations

import logging
import time
from typing import Any

import sqlalchemy as sa
from celery.exceptions import SoftTimeLimitExceeded

from services.core import cache
from services.core.images import to_rgb
from services.core.jobs import Claim, claim_job, fail_job, finish_job
from services.core.models import Image, Job
from services.core.prompts import GenerationParams
from services.core.runtime import Runtime
from workers.backends.base import PredictRequest, VLMBackend

log = logging.getLogger(__name__)


def build_request(runtime: Runtime, job_id: str) -> tuple[PredictRequest, str | None]:
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
        return PredictRequest(messages, GenerationParams.model_validate(job.params)), job.cache_key


def run_job(runtime: Runtime, backend: VLMBackend, job_id: str) -> str:
    """Run one job to a terminal state; returns what happened (for logs and tests)."""
    claim = claim_job(runtime, job_id)
    if claim is None:
        return "skipped"
    try:
        request, key = build_request(runtime, job_id)
    except Exception as exc:
        fail_job(runtime, job_id, claim, "invalid_input", f"could not load the job's input: {exc}")
        return "failed"
    # No database session is open here: inference can take minutes, and a held
    # connection would pin a pool slot (or, on SQLite, a read snapshot) all that time.
    return predict_and_record(runtime, backend, claim, request, key)


def predict_and_record(
    runtime: Runtime,
    backend: VLMBackend,
    claim: Claim,
    request: PredictRequest,
    key: str | None,
) -> str:
    """Predict, then record the answer (or the failure) for the claimed attempt."""
    started = time.perf_counter()
    try:
        prediction = backend.predict([request])[0]
    except SoftTimeLimitExceeded:
        fail_job(runtime, claim.job_id, claim, "timeout", "the job ran past its time limit")
        return "failed"
    except Exception as exc:
        log.exception("event=inference_failed job_id=%s", claim.job_id)
        fail_job(runtime, claim.job_id, claim, "inference_error", f"{type(exc).__name__}: {exc}")
        return "failed"
    inference_ms = (time.perf_counter() - started) * 1000
    result = prediction.result()
    # Cache before finishing: a client woken by the finish may repeat the request at once.
    # The answer is valid even if this attempt turns out to be stale.
    if key is not None:
        try:
            cache.put_cached(
                runtime.redis,
                key,
                {"output": prediction.answer, "result": result},
                runtime.settings.cache_ttl_s,
            )
        except Exception:
            log.warning("event=cache_put_failed job_id=%s", claim.job_id)
    finished = finish_job(
        runtime, claim, output=prediction.answer, result=result, inference_ms=inference_ms
    )
    return "succeeded" if finished else "stale"
