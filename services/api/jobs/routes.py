"""`/v1/jobs`: submit, poll, list, cancel."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from services.api.context import runtime, tenant_id
from services.api.jobs.protocol import JobCreateRequest
from services.api.request_parsing import (
    json_object,
    page_limit,
    prefer_wait_s,
    validate,
)
from services.api.submissions import (
    check_quota,
    idempotency_claim,
    quota_checked,
    webhook_fields,
    with_requested_preset,
)
from services.core import idempotency
from services.core.errors import InvalidRequestError
from services.core.inputs.images import check_image, image_bytes_from_reference
from services.core.inputs.prompts import (
    CanonicalRequest,
    build_params,
    canonical_from_messages,
    canonical_from_question,
)
from services.core.jobs import service as jobs
from services.core.model_info import served_model
from services.core.models import Job
from services.core.serialize import job_response
from services.core.webhooks.status import deliveries_of

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


def parse_submission() -> tuple[CanonicalRequest, dict[str, Any], dict[str, str]]:
    """The canonical request, the raw parameters and the metadata of a submission."""
    settings = runtime().settings
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("image")
        if upload is None:
            raise InvalidRequestError("multipart upload needs an 'image' file", param="image")
        data = upload.stream.read(settings.max_image_bytes + 1)
        form: dict[str, Any] = {key: value for key, value in request.form.items() if key != "image"}
        for field in ("max_tokens", "seed"):
            if field in form:
                form[field] = parse_number(form[field], int, field)
        for field in ("temperature", "top_p"):
            if field in form:
                form[field] = parse_number(form[field], float, field)
        if "webhook_events_filter" in form:
            # A form repeats the field, or lists the events in one, comma-separated.
            form["webhook_events_filter"] = [
                event.strip()
                for value in request.form.getlist("webhook_events_filter")
                for event in value.split(",")
                if event.strip()
            ]
        body = validate(JobCreateRequest, form)
        canonical = canonical_from_question(check_image(data, settings), body.question, settings)
        return canonical, body.model_dump(), body.metadata
    body = validate(JobCreateRequest, json_object())
    if body.messages is not None:
        if body.image is not None or body.question is not None:
            raise InvalidRequestError("send either messages or image + question, not both")
        canonical = canonical_from_messages(body.messages, settings)
    elif body.image is not None:
        image = check_image(image_bytes_from_reference(body.image, settings), settings)
        canonical = canonical_from_question(image, body.question, settings)
    else:
        raise InvalidRequestError("send messages, or an image and a question", param="image")
    return canonical, body.model_dump(), body.metadata


def parse_number(value: str, kind: type[int] | type[float], field: str) -> int | float:
    """A form field as a number, or a 400."""
    try:
        return kind(value)
    except ValueError as exc:
        raise InvalidRequestError(f"{field} must be a number", param=field) from exc


@bp.post("")
def create_job() -> tuple[Response, int, dict[str, str]]:
    """Submit a job; `Prefer: wait=N` waits up to N seconds for it to finish.

    With an `Idempotency-Key`, a repeated request answers with the job the first one made.
    """
    rt = runtime()
    check_quota()
    canonical, raw, metadata = parse_submission()
    model = served_model(raw.get("model"), rt.settings)
    canonical = with_requested_preset(canonical, raw.get("preset"))
    params = build_params(raw, rt.settings)
    hook = webhook_fields(raw)
    claim = idempotency_claim("/v1/jobs", canonical, params, metadata=metadata, model=model, **hook)
    options = jobs.SubmitOptions(model=model, metadata=metadata, idempotency=claim, **hook)
    job, replayed = idempotency.submit_once(
        rt.sessions,
        claim,
        quota_checked(lambda: jobs.submit_job(rt, tenant_id(), canonical, params, options)),
        read_job,
    )
    wait_s = prefer_wait_s(rt.settings.max_prefer_wait_s)
    if wait_s > 0:
        job, _ = jobs.wait_until_terminal(rt.sessions, rt.job_ends, job, wait_s)
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return jsonify(job_response(job)), 202, headers


def read_job(job_id: str) -> Job:
    """The calling tenant's job."""
    with runtime().sessions() as session:
        return jobs.get_job(session, tenant_id(), job_id)


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    """Poll one job."""
    with runtime().sessions() as session:
        return jsonify(job_response(jobs.get_job(session, tenant_id(), job_id)))


@bp.get("/<job_id>/webhook_deliveries")
def job_webhook_deliveries(job_id: str) -> Response:
    """The job's webhook events: status, attempts, and what the last attempt got back."""
    with runtime().sessions() as session:
        job = jobs.get_job(session, tenant_id(), job_id)
        data = deliveries_of(session, tenant_id(), job_id=job.id)
    return jsonify({"object": "list", "data": data})


@bp.get("")
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
        data = [job_response(job) for job in page]
    return jsonify(
        {
            "object": "list",
            "data": data,
            "has_more": has_more,
            "next_cursor": data[-1]["id"] if has_more else None,
        }
    )


@bp.post("/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    """Cancel a queued or running job."""
    with runtime().unit_of_work() as session:
        job = jobs.cancel_job(session, tenant_id(), job_id)
    return jsonify(job_response(job))
