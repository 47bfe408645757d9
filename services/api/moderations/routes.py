"""`/v1/moderations`: OpenAI's moderation shape, scored by the VLM; and the tenant's policy."""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, Response, jsonify

from services.api.context import runtime, tenant_id
from services.api.moderations.schemas import ModerationRequest, PolicyRequest
from services.api.requests import check_model, json_object, validate
from services.core import jobs
from services.core.db import session_scope
from services.core.errors import JobFailedError
from services.core.models import JobStatus, Tenant
from services.core.moderation import parse_policy
from services.core.moderations import moderation_response, submit_moderation, tenant_policy

bp = Blueprint("moderations", __name__, url_prefix="/v1/moderations")


@bp.post("")
def create_moderation() -> Response:
    """Score every input against the policy in force; runs as queued jobs and waits."""
    rt = runtime()
    body = validate(ModerationRequest, json_object())
    check_model(body.model, rt.settings.model_id)
    submitted = submit_moderation(rt, tenant_id(), body.input, body.categories, body.thresholds)
    finished = []
    for job in submitted:
        job = jobs.wait_for_result(rt, job, rt.settings.sync_timeout_s)
        if job.status != JobStatus.SUCCEEDED:
            message = (job.error or {}).get("message", job.status)
            raise JobFailedError(f"job {job.id} {job.status}: {message}")
        finished.append(job)
    return jsonify(moderation_response(finished))


@bp.get("/policy")
def get_policy() -> Response:
    """The tenant's own policy (empty: the deployment's default applies)."""
    return jsonify(
        {"object": "moderation.policy", "categories": tenant_policy(runtime(), tenant_id())}
    )


@bp.put("/policy")
def put_policy() -> Response:
    """Replace the tenant's policy."""
    body = validate(PolicyRequest, json_object())
    policy = {name: asdict(category) for name, category in parse_policy(body.categories).items()}
    with session_scope(runtime().sessions) as session:
        tenant = session.get(Tenant, tenant_id())
        assert tenant is not None
        tenant.moderation_policy = policy
    return jsonify({"object": "moderation.policy", "categories": policy})
