"""`/v1/chat/completions`: an OpenAI chat call that runs as a queued job and waits for it."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from services.api.chat.schemas import ChatCompletionRequest, chat_completion_response
from services.api.chat.streaming import stream_chat
from services.api.context import runtime, tenant_id
from services.api.requests import check_model, json_object, validate
from services.core import jobs
from services.core.errors import InvalidRequestError, JobFailedError, SyncTimeoutError
from services.core.events import wait_for_job
from services.core.models import JobStatus
from services.core.prompts import build_params, canonical_from_messages

bp = Blueprint("chat", __name__, url_prefix="/v1/chat")


@bp.post("/completions")
def create_chat_completion() -> Response:
    """Queue the conversation as a job, wait until it finishes, answer as OpenAI does."""
    rt = runtime()
    body = validate(ChatCompletionRequest, json_object())
    check_model(body.model, rt.settings.model_id)
    if body.n != 1:
        raise InvalidRequestError("only n=1 is supported", param="n")
    canonical = canonical_from_messages(body.messages, rt.settings)
    params = build_params(body.model_dump(), rt.settings)
    options = jobs.SubmitOptions(kind="chat", stream=body.stream)
    job = jobs.submit_job(rt, tenant_id(), canonical, params, options)
    if body.stream:
        events = stream_chat(rt, tenant_id(), job, body.include_usage)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return Response(events, mimetype="text/event-stream", headers=headers)
    finished = wait_for_job(
        rt.redis, job.id, lambda: jobs.is_terminal(rt, job.id), rt.settings.sync_timeout_s
    )
    with rt.sessions() as session:
        job = jobs.get_job(session, tenant_id(), job.id)
    if not finished:
        raise SyncTimeoutError(f"job {job.id} did not finish in time; poll /v1/jobs/{job.id}")
    if job.status != JobStatus.SUCCEEDED:
        message = (job.error or {}).get("message", job.status)
        raise JobFailedError(f"job {job.id} {job.status}: {message}")
    return jsonify(chat_completion_response(job))
