"""`/v1/moderations`: OpenAI's moderation shape, scored by the VLM; and the tenant's policy."""

from __future__ import annotations

from functools import partial

from flask import Blueprint, Response

from services.api.audit import audited
from services.api.context import runtime, tenant_id
from services.api.openapi.declare import IDEMPOTENCY_KEY, operation
from services.api.request_parsing import body_as
from services.api.respond import respond
from services.api.submitting import submit_as_caller
from services.core.jobs.service import wait_for_all
from services.core.moderation.service import screens_inputs, set_tenant_policy, tenant_policy
from services.core.requests.moderations import ModerationRequest, PolicyRequest
from services.core.responses.moderations import ModerationPolicyResponse, ModerationResponse
from services.core.submit import moderation_specs
from services.core.waiting import waiting

bp = Blueprint("moderations", __name__, url_prefix="/v1/moderations")


@bp.post("")
@operation(
    summary="OpenAI moderation of images (and text), each category a yes/no question.",
    tag="openai",
    answers={200: ModerationResponse},
    errors=(400, 404, 409, 413, 415, 422, 429, 500, 504),
    body=ModerationRequest,
    params=(IDEMPOTENCY_KEY,),
    creates_jobs=True,
)
def create_moderation() -> Response:
    """Score every input against the policy in force; runs as queued jobs and waits."""
    rt = runtime()
    body = body_as(ModerationRequest)
    # The call holds this thread until its jobs end (one deadline for all its inputs).
    with waiting(rt, tenant_id()):
        submitted = submit_as_caller(
            partial(moderation_specs, body=body), replay_finished_only=True
        )
        return respond(ModerationResponse.of(wait_for_all(rt, submitted.jobs)))


@bp.get("/policy")
@operation(
    summary="The tenant's moderation categories.",
    tag="moderation",
    answers={200: ModerationPolicyResponse},
    operation_id="getModerationPolicy",
)
def get_policy() -> Response:
    """The tenant's own policy (empty: the deployment's default applies)."""
    with runtime().sessions() as session:
        policy = tenant_policy(session, tenant_id())
        return respond(ModerationPolicyResponse.of(policy, screens_inputs(session, tenant_id())))


@bp.put("/policy")
@operation(
    summary="Replace the tenant's moderation categories.",
    tag="moderation",
    answers={200: ModerationPolicyResponse},
    errors=(400, 413),
    body=PolicyRequest,
    operation_id="putModerationPolicy",
)
def put_policy() -> Response:
    """Replace the tenant's policy."""
    body = body_as(PolicyRequest)
    with runtime().unit_of_work() as session:
        policy = set_tenant_policy(
            session, runtime().settings, tenant_id(), body.categories, body.screen
        )
        audited(
            "moderation_policy.updated",
            details={"categories": sorted(policy), "screen": body.screen},
            session=session,
        )
    return respond(ModerationPolicyResponse.of(policy, body.screen))
