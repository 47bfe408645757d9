"""`/v1/chat/completions`: an OpenAI chat call that runs as a queued job and waits for it."""

from __future__ import annotations

import functools
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request

from services.api.chat.protocol import ChatCompletionRequest, refuse_unsupported
from services.api.chat.streaming import stream_chat
from services.api.context import runtime, tenant_id
from services.api.request_parsing import json_object, validate
from services.api.submissions import (
    check_quota,
    idempotency_claim,
    quota_checked,
    webhook_fields,
    with_requested_preset,
)
from services.core import idempotency
from services.core.errors import InvalidRequestError
from services.core.inputs.prompts import (
    CanonicalRequest,
    GenerationParams,
    build_params,
    canonical_from_messages,
)
from services.core.jobs import service as jobs
from services.core.model_info import served_model
from services.core.models import Job
from services.core.serialize import chat_completion_response

bp = Blueprint("chat", __name__, url_prefix="/v1/chat")


@bp.post("/completions")
def create_chat_completion() -> Response:
    """Queue the conversation as a job (`n` jobs for `n` choices, which the worker batches
    into one model call), wait until it finishes, answer as OpenAI does."""
    rt = runtime()
    check_quota()
    raw = json_object()
    body = validate(ChatCompletionRequest, raw)
    refuse_unsupported(raw)
    model = served_model(body.model, rt.settings)
    check_choices(body, rt.settings.max_choices)
    canonical = canonical_from_messages(body.messages, rt.settings)
    canonical = with_requested_preset(canonical, body.preset)
    params = build_params(body.model_dump(), rt.settings)
    hook = webhook_fields(raw)
    if body.n > 1:
        choices = [
            quota_checked(functools.partial(submit_choice, body, model, canonical, choice_params))()
            for choice_params in choice_parameters(params, body.n)
        ]
        deadline = time.monotonic() + rt.settings.sync_timeout_s
        finished = [
            jobs.wait_for_success(
                rt.sessions, rt.job_ends, job, max(0.0, deadline - time.monotonic())
            )
            for job in choices
        ]
        return jsonify(chat_completion_response(*finished))
    claim = idempotency_claim(
        "/v1/chat/completions", canonical, params, stream=body.stream, model=model, **hook
    )
    job, _ = idempotency.submit_once(
        rt.sessions,
        claim,
        quota_checked(
            lambda: jobs.submit_job(
                rt, tenant_id(), canonical, params, chat_options(body, model, hook, claim)
            )
        ),
        finished_job,
    )
    if body.stream:
        events = stream_chat(rt, job, body.include_usage)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return Response(events, mimetype="text/event-stream", headers=headers)
    job = jobs.wait_for_success(rt.sessions, rt.job_ends, job, rt.settings.sync_timeout_s)
    return jsonify(chat_completion_response(job))


def submit_choice(
    body: ChatCompletionRequest,
    model: str,
    canonical: CanonicalRequest,
    params: GenerationParams,
) -> Job:
    """Submit one of the `n` choices of a chat request as a job."""
    hook = webhook_fields(json_object())
    options = chat_options(body, model, hook)
    return jobs.submit_job(runtime(), tenant_id(), canonical, params, options)


def chat_options(
    body: ChatCompletionRequest, model: str, hook: dict[str, Any], claim: Any = None
) -> jobs.SubmitOptions:
    """How a chat request's jobs (answered by `model`) are submitted."""
    return jobs.SubmitOptions(
        kind="chat", model=model, stream=body.stream, idempotency=claim, **hook
    )


def check_choices(body: ChatCompletionRequest, cap: int) -> None:
    """`n` within the deployment's cap; more than one choice neither streams nor takes an
    `Idempotency-Key` (a replay would have several jobs to answer with)."""
    if not 1 <= body.n <= cap:
        raise InvalidRequestError(f"n must be between 1 and {cap}", param="n")
    if body.n > 1 and body.stream:
        raise InvalidRequestError(
            "n > 1 cannot be streamed: ask for one choice per streamed request",
            code="unsupported_parameter",
            param="n",
        )
    if body.n > 1 and request.headers.get(idempotency.HEADER):
        raise InvalidRequestError(
            f"n > 1 cannot be combined with {idempotency.HEADER}",
            code="unsupported_parameter",
            param=idempotency.HEADER,
        )


def choice_parameters(params: GenerationParams, n: int) -> list[GenerationParams]:
    """The parameters of each of `n` choices: with sampling and a seed, seed, seed+1, …
    (so the choices differ and each is reproducible); greedy choices are the same answer,
    which the cache and single flight compute once."""
    if params.temperature > 0 and params.seed is not None:
        return [params.model_copy(update={"seed": params.seed + index}) for index in range(n)]
    return [params] * n


def finished_job(job_id: str) -> Job:
    """The job an earlier call with the same `Idempotency-Key` made; a 409 while it runs
    (its answer belongs to the call still waiting for it)."""
    with runtime().sessions() as session:
        job = jobs.get_job(session, tenant_id(), job_id)
    if not job.job_status.is_terminal():
        raise idempotency.IdempotencyKeyInFlightError(
            f"the request with this {idempotency.HEADER} is still in flight (job {job_id})",
            param=idempotency.HEADER,
        )
    return job
