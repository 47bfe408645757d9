"""`/v1/responses`: OpenAI's Responses API, each response a queued job.

Three modes, as OpenAI offers them: synchronous (the call waits for the job), `stream`
(events as the worker generates text) and `background` (answered `queued` at once, then
polled, streamed, resumed or cancelled from any API process). A background response has
every promise a job has: it survives a worker's loss and an API restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from flask import Blueprint, Response, request

from services.api.chat.routes import released_at_end
from services.api.context import runtime, tenant_id
from services.api.openapi.declare import IDEMPOTENCY_KEY, Param, operation
from services.api.request_parsing import body_as
from services.api.respond import respond
from services.api.responses.streaming import stream_response
from services.api.submitting import submit_as_caller
from services.core.errors import InvalidRequestError, SyncTimeoutError
from services.core.jobs import service as jobs
from services.core.jobs.responses import delete_response, get_response
from services.core.requests.responses import ResponseCreateRequest
from services.core.responses.responses_api import DeletedResponse, ResponseObject, response_id
from services.core.runtime import Runtime
from services.core.submit import response_specs
from services.core.tables import Job
from services.core.waiting import take_slot

bp = Blueprint("responses", __name__, url_prefix="/v1/responses")

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# The events of a stream, each named by its type (`event:`) with its JSON as `data:`.
EVENT_STREAM = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "required": ["event", "data"],
            "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
        }
    }
}
STREAM = Param("stream", "query", {"type": "boolean"}, "Answer the response's events.")
STARTING_AFTER = Param(
    "starting_after",
    "query",
    {"type": "integer", "minimum": -1, "maximum": 2**31 - 1},
    "With `stream`: the events after this `sequence_number` (a resumed stream).",
)


@bp.post("")
@operation(
    summary="OpenAI Responses API: answered when the job ends, streamed (`stream: true`), "
    "or at once with `background: true` (then polled, streamed or cancelled).",
    tag="openai",
    answers={200: {"application/json": ResponseObject, **EVENT_STREAM}},
    errors=(400, 404, 409, 413, 415, 422, 429, 500, 504),
    body=ResponseCreateRequest,
    params=(IDEMPOTENCY_KEY,),
    creates_jobs=True,
    operation_id="createResponse",
)
def create_response() -> Response:
    """Queue the input as a job; answer as OpenAI does in the mode asked for."""
    rt = runtime()
    body = body_as(ResponseCreateRequest)
    if body.background and not body.stream:
        submitted = submit_as_caller(partial(response_specs, body=body))
        return respond(ResponseObject.of(submitted.jobs[0]))
    # The call holds this thread while it waits or streams: one of the tenant's waiting
    # slots, taken before anything is queued.
    slot = take_slot(rt, tenant_id())
    try:
        submitted = submit_as_caller(
            partial(response_specs, body=body), replay_finished_only=not body.background
        )
        job = submitted.jobs[0]
        if body.stream:
            events = stream_response(rt, job)
            slot, held = None, slot
            return Response(
                forgotten_at_end(rt, released_at_end(events, held), job),
                mimetype="text/event-stream",
                headers=STREAM_HEADERS,
            )
        timeout_s = rt.settings.sync_timeout_s
        job, ended = jobs.wait_until_terminal(rt.sessions, rt.job_ends, job, timeout_s)
        if not ended:
            where = (
                f"retrieve it with GET /v1/responses/{response_id(job)}"
                if body.store
                else "it was made with store: false, so it cannot be retrieved"
            )
            raise SyncTimeoutError(f"response {response_id(job)} did not finish in time; {where}")
        answer = respond(ResponseObject.of(job))
        forget_unstored(rt, job)
        return answer
    finally:
        if slot is not None:
            slot.release()


@bp.get("/<response_id>")
@operation(
    summary="Retrieve a response; `stream=true` answers its events (after `starting_after`), "
    "then follows it live.",
    tag="openai",
    answers={200: {"application/json": ResponseObject, **EVENT_STREAM}},
    errors=(400, 404, 429),
    params=(STREAM, STARTING_AFTER),
    operation_id="getResponse",
)
def retrieve_response(response_id: str) -> Response:
    """Poll a response, or stream its events from where a client left off."""
    with runtime().sessions() as session:
        job = get_response(session, tenant_id(), response_id)
    if request.args.get("stream", "false").lower() != "true":
        return respond(ResponseObject.of(job))
    after, rt = starting_after(), runtime()
    slot = take_slot(rt, job.tenant_id)
    events = released_at_end(stream_response(rt, job, after=after), slot)
    return Response(events, mimetype="text/event-stream", headers=STREAM_HEADERS)


@bp.post("/<response_id>/cancel")
@operation(
    summary="Cancel a background response (a finished one is returned as it is).",
    tag="openai",
    answers={200: ResponseObject},
    errors=(400, 404),
    operation_id="cancelResponse",
)
def cancel_response(response_id: str) -> Response:
    """Cancel a queued or running background response; cancelling again, or cancelling a
    finished one, answers the final object."""
    rt = runtime()
    with rt.unit_of_work() as session:
        job = get_response(session, tenant_id(), response_id)
        if not (job.response or {}).get("background"):
            raise InvalidRequestError(
                "only a response created with background: true can be cancelled",
                param="response_id",
            )
        job = jobs.cancel_job(session, tenant_id(), job.id)
    jobs.leave_queue(rt, job)
    return respond(ResponseObject.of(job))


@bp.delete("/<response_id>")
@operation(
    summary="Delete a finished response.",
    tag="openai",
    answers={200: DeletedResponse},
    errors=(404, 409),
    operation_id="deleteResponse",
)
def delete(response_id: str) -> Response:
    """Delete a stored response that has finished."""
    with runtime().unit_of_work() as session:
        job = get_response(session, tenant_id(), response_id)
        delete_response(session, job)
    return respond(DeletedResponse(id=response_id, object="response", deleted=True))


def starting_after() -> int:
    """The `starting_after` query parameter (-1: from the first event), or a 400."""
    value = request.args.get("starting_after", "-1")
    try:
        number = int(value)
    except ValueError:
        number = -2
    if not -1 <= number < 2**31:
        raise InvalidRequestError("starting_after must be an integer", param="starting_after")
    return number


def forgotten_at_end(rt: Runtime, events: Iterator[str], job: Job) -> Iterator[str]:
    """The stream's events; a response made with `store: false` is deleted once read."""
    yield from events
    forget_unstored(rt, job)


def forget_unstored(rt: Runtime, job: Job) -> None:
    """Delete a finished response made with `store: false`: it was only for its caller."""
    if (job.response or {}).get("store", True):
        return
    with rt.unit_of_work() as session:
        fresh = session.get(Job, job.id)
        if fresh is not None and fresh.job_status.is_terminal():
            delete_response(session, fresh)
