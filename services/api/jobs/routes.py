"""`/v1/jobs`: submit, poll, list, cancel."""

from __future__ import annotations

from functools import partial
from typing import Any

from flask import Blueprint, Response, request

from services.api.context import runtime, tenant_id
from services.api.openapi.declare import IDEMPOTENCY_KEY, LIMIT, Param, after, operation
from services.api.request_parsing import body_as, page_limit, prefer_wait_s
from services.api.respond import respond
from services.api.submitting import submit_as_caller
from services.core.errors import InvalidRequestError
from services.core.jobs import service as jobs
from services.core.requests.jobs import JobCreateRequest
from services.core.responses.jobs import JobListResponse, JobResponse
from services.core.responses.webhooks import WebhookDeliveryListResponse
from services.core.submit import job_specs
from services.core.waiting import take_slot
from services.core.webhooks.status import deliveries_of

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")

PREFER = Param(
    "Prefer",
    "header",
    {"type": "string", "pattern": r"^wait=[0-9]{1,2}$"},
    "`wait=N`: answer once the job ended or N seconds passed (capped by the deployment).",
)
JOB_FORM = {
    "type": "object",
    "required": ["image", "question"],
    "properties": {
        "image": {"type": "string", "format": "binary"},
        "question": {"type": "string", "minLength": 1},
        "max_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "seed": {"type": "integer"},
        "model": {"type": "string"},
        "preset": {"type": "string"},
        "webhook": {"type": "string"},
    },
}
JOB_LINKS = {
    "GetJob": {"operationId": "getJob", "parameters": {"job_id": "$response.body#/id"}},
    "CancelJob": {"operationId": "cancelJob", "parameters": {"job_id": "$response.body#/id"}},
}
STATUS = Param(
    "status",
    "query",
    {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "canceled"]},
)


def parse_submission() -> tuple[JobCreateRequest, bytes | None]:
    """The request of a JSON body or of a multipart upload (and the uploaded image)."""
    if request.mimetype != "multipart/form-data":
        return body_as(JobCreateRequest), None
    upload = request.files.get("image")
    if upload is None:
        raise InvalidRequestError("multipart upload needs an 'image' file", param="image")
    data = upload.stream.read(runtime().settings.max_image_bytes + 1)
    form: dict[str, Any] = {key: value for key, value in request.form.items() if key != "image"}
    if "webhook_events_filter" in form:
        # A form repeats the field, or lists the events in one, comma-separated.
        form["webhook_events_filter"] = [
            event.strip()
            for value in request.form.getlist("webhook_events_filter")
            for event in value.split(",")
            if event.strip()
        ]
    return body_as(JobCreateRequest, form), data


@bp.post("")
@operation(
    summary="Submit a job: an image (JSON data URL or URL, or a multipart upload) and a "
    "question, or OpenAI `messages`.",
    tag="jobs",
    answers={202: JobResponse},
    errors=(400, 404, 409, 413, 415, 422, 429),
    body=JobCreateRequest,
    multipart=JOB_FORM,
    params=(PREFER, IDEMPOTENCY_KEY),
    creates_jobs=True,
    links=JOB_LINKS,
    headers={"Location": {"schema": {"type": "string"}, "description": "The job's URL."}},
)
def create_job() -> Response:
    """Submit a job; `Prefer: wait=N` waits up to N seconds for it to finish. With an
    `Idempotency-Key`, a repeated request answers with the job the first one made."""
    rt = runtime()
    body, upload = parse_submission()
    submitted = submit_as_caller(partial(job_specs, body=body, upload=upload))
    job = submitted.jobs[0]
    wait_s = prefer_wait_s(rt.settings.max_prefer_wait_s)
    # A tenant holding all its waiting slots is answered at once (`Prefer` is a preference).
    slot = take_slot(rt, job.tenant_id, refuse=False) if wait_s > 0 else None
    if slot is not None:
        try:
            job, _ = jobs.wait_until_terminal(rt.sessions, rt.job_ends, job, wait_s)
        finally:
            slot.release()
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if submitted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return respond(JobResponse.of(job), 202, headers)


@bp.get("/<job_id>")
@operation(summary="Poll one job.", tag="jobs", answers={200: JobResponse}, errors=(404,))
def get_job(job_id: str) -> Response:
    """Poll one job (while it is queued, with about how much work runs before it)."""
    with runtime().sessions() as session:
        job = jobs.get_job(session, tenant_id(), job_id)
    return respond(JobResponse.of(job, jobs.queue_position(runtime(), job)))


@bp.get("/<job_id>/webhook_deliveries")
@operation(
    summary="The job's webhook events: status, attempts, and the last attempt's answer.",
    tag="jobs",
    answers={200: WebhookDeliveryListResponse},
    errors=(404,),
    operation_id="listJobWebhookDeliveries",
)
def job_webhook_deliveries(job_id: str) -> Response:
    """The job's webhook events: status, attempts, and what the last attempt got back."""
    with runtime().sessions() as session:
        job = jobs.get_job(session, tenant_id(), job_id)
        return respond(deliveries_of(session, tenant_id(), job_id=job.id))


@bp.get("")
@operation(
    summary="The tenant's jobs, newest first.",
    tag="jobs",
    answers={200: JobListResponse},
    errors=(400, 404),
    params=(LIMIT, after("job"), STATUS),
)
def list_jobs() -> Response:
    """List the tenant's jobs, newest first: `?limit=&after=&status=`."""
    with runtime().sessions() as session:
        page, has_more = jobs.list_jobs(
            session,
            tenant_id(),
            status=request.args.get("status"),
            limit=page_limit(),
            after=request.args.get("after"),
        )
        return respond(JobListResponse.of(page, has_more))


@bp.post("/<job_id>/cancel")
@operation(
    summary="Cancel a queued or running job (a finished one is returned as it is).",
    tag="jobs",
    answers={200: JobResponse},
    errors=(404,),
)
def cancel_job(job_id: str) -> Response:
    """Cancel a queued or running job; a finished one is answered unchanged."""
    with runtime().unit_of_work() as session:
        job = jobs.cancel_job(session, tenant_id(), job_id)
    jobs.leave_queue(runtime(), job)
    return respond(JobResponse.of(job))
