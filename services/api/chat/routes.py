"""`/v1/chat/completions`: an OpenAI chat call that runs as a queued job and waits for it."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from flask import Blueprint, Response

from services.api.chat.streaming import stream_chat
from services.api.context import runtime, tenant_id
from services.api.openapi.declare import IDEMPOTENCY_KEY, operation, text
from services.api.request_parsing import body_as
from services.api.respond import respond
from services.api.submitting import submit_as_caller
from services.core.jobs import service as jobs
from services.core.requests.chat import ChatCompletionRequest
from services.core.responses.chat import ChatCompletionResponse
from services.core.submit import chat_specs
from services.core.waiting import WaitingSlot, take_slot

bp = Blueprint("chat", __name__, url_prefix="/v1/chat")


@bp.post("/completions")
@operation(
    summary="OpenAI chat completion (images as `image_url` parts), answered when the job "
    "ends; `stream: true` answers server-sent events.",
    tag="openai",
    answers={200: {"application/json": ChatCompletionResponse, **text("text/event-stream")}},
    errors=(400, 404, 409, 413, 415, 422, 429, 500, 504),
    body=ChatCompletionRequest,
    params=(IDEMPOTENCY_KEY,),
    creates_jobs=True,
    operation_id="createChatCompletion",
)
def create_chat_completion() -> Response:
    """Queue the conversation as a job (`n` jobs for `n` choices, which the worker batches
    into one model call), wait until they finish, answer as OpenAI does."""
    rt = runtime()
    body = body_as(ChatCompletionRequest)
    # The call holds this thread until its jobs end: one of the tenant's waiting slots,
    # taken before anything is queued.
    slot = take_slot(rt, tenant_id())
    try:
        submitted = submit_as_caller(partial(chat_specs, body=body), replay_finished_only=True)
        if body.stream:
            events = stream_chat(rt, submitted.jobs[0], body.include_usage)
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            streaming = released_at_end(events, slot)
            slot = None  # the stream releases it
            return Response(streaming, mimetype="text/event-stream", headers=headers)
        return respond(ChatCompletionResponse.of(*jobs.wait_for_all(rt, submitted.jobs)))
    finally:
        if slot is not None:
            slot.release()


def released_at_end(events: Iterator[str], slot: WaitingSlot | None) -> Iterator[str]:
    """The stream's events; the waiting slot is freed when it ends or its client leaves."""
    try:
        yield from events
    finally:
        if slot is not None:
            slot.release()
