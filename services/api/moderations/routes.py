"""`/v1/moderations`: OpenAI's moderation shape, scored by the VLM; and the tenant's policy."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from services.api.context import runtime, tenant_id
from services.api.moderations.protocol import ModerationRequest, PolicyRequest
from services.api.request_parsing import json_object, validate
from services.api.submissions import check_quota
from services.core.errors import InvalidRequestError
from services.core.jobs.service import wait_for_success
from services.core.model_info import served_model
from services.core.moderation.service import set_tenant_policy, submit_moderation, tenant_policy
from services.core.serialize import moderation_response

bp = Blueprint("moderations", __name__, url_prefix="/v1/moderations")


@bp.post("")
def create_moderation() -> Response:
    """Score every input against the policy in force; runs as queued jobs and waits."""
    rt = runtime()
    check_quota()
    body = validate(ModerationRequest, json_object())
    if served_model(body.model, rt.settings) != rt.settings.model_id:
        raise InvalidRequestError(
            "moderation scores with the base model only, not a LoRA adapter", param="model"
        )
    submitted = submit_moderation(rt, tenant_id(), body.input, body.categories, body.thresholds)
    timeout_s = rt.settings.sync_timeout_s
    finished = [wait_for_success(rt.sessions, rt.job_ends, job, timeout_s) for job in submitted]
    return jsonify(moderation_response(finished))


@bp.get("/policy")
def get_policy() -> Response:
    """The tenant's own policy (empty: the deployment's default applies)."""
    with runtime().sessions() as session:
        policy = tenant_policy(session, tenant_id())
    return jsonify({"object": "moderation.policy", "categories": policy})


@bp.put("/policy")
def put_policy() -> Response:
    """Replace the tenant's policy."""
    body = validate(PolicyRequest, json_object())
    with runtime().unit_of_work() as session:
        policy = set_tenant_policy(session, tenant_id(), body.categories)
    return jsonify({"object": "moderation.policy", "categories": policy})
