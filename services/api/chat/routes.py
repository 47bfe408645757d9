"""`/v1/chat/completions`: an OpenAI chat call that runs as a queued job and waits for it."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from services.api.chat.protocol import ChatCompletionRequest
from services.api.chat.streaming import stream_chat
from services.api.context import runtime, tenant_id
from services.api.request_parsing import check_model, json_object, validate
from services.api.submissions import (
    check_quota,
    idempotency_claim,
    quota_checked,
    webhook_fields,
)
from services.core import idempotency
from services.core.errors import InvalidRequestError
from services.core.inputs.prompts import build_params, canonical_from_messages
from services.core.jobs import service as jobs
from services.core.models import Job
from services.core.serialize import chat_completion_response

bp = Blueprint("chat", __name__, url_prefix="/v1/chat")


@bp.post("/completions")
def create_chat_completion() -> Response:
    """Queue the conversation as a job, wait until it finishes, answer as OpenAI does."""
    rt = runtime()
    check_quota()
    raw = json_object()
    body = validate(ChatCompletionRequest, raw)
    check_model(body.model, rt.settings.model_id)
    if body.n != 1:
        raise InvalidRequestError("only n=1 is supported", param="n")
    canonical = canonical_from_messages(body.messages, rt.settings)
    params = build_params(body.model_dump(), rt.settings)
    hook = webhook_fields(raw)
    claim = idempotency_claim("/v1/chat/completions", canonical, params, stream=body.stream, **hook)
    options = jobs.SubmitOptions(kind="chat", stream=body.stream, idempotency=claim, **hook)
    job, _ = idempotency.submit_once(
        rt.sessions,
        claim,
        quota_checked(lambda: jobs.submit_job(rt, tenant_id(), canonical, params, options)),
        finished_job,
    )
    if body.stream:
        events = stream_chat(rt, job, body.include_usage)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return Response(events, mimetype="text/event-stream", headers=headers)
    job = jobs.wait_for_success(rt.sessions, rt.job_ends, job, rt.settings.sync_timeout_s)
    return jsonify(chat_completion_response(job))


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
