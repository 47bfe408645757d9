"""The moderation service: submit inputs as scoring jobs, and shape their results."""

from __future__ import annotations

from typing import Any

from services.core.jobs import SubmitOptions, submit_job
from services.core.models import Job, Tenant
from services.core.moderation import moderation_inputs, moderation_result, resolve_policy
from services.core.prompts import GenerationParams
from services.core.runtime import Runtime


def tenant_policy(runtime: Runtime, tenant_id: str) -> dict[str, Any]:
    """The tenant's stored policy (empty when it has none)."""
    with runtime.sessions() as session:
        tenant = session.get(Tenant, tenant_id)
        return dict(tenant.moderation_policy or {}) if tenant else {}


def moderation_jobs_spec(
    runtime: Runtime, tenant_id: str, raw_input: Any, categories: Any, thresholds: Any
) -> list[tuple[Any, GenerationParams, SubmitOptions]]:
    """The canonical requests, parameters and options of a moderation request (nothing stored)."""
    policy = resolve_policy(
        runtime.settings, tenant_policy(runtime, tenant_id), categories, thresholds
    )
    params = GenerationParams(
        max_tokens=1, score_questions={name: c.question for name, c in policy.items()}
    )
    specs = []
    for item in moderation_inputs(raw_input, runtime.settings):
        context = {
            "thresholds": {name: c.threshold for name, c in policy.items()},
            "input_types": item.input_types,
        }
        specs.append((item.request, params, SubmitOptions(kind="moderation", moderation=context)))
    return specs


def submit_moderation(
    runtime: Runtime, tenant_id: str, raw_input: Any, categories: Any, thresholds: Any
) -> list[Job]:
    """Validate everything first, then submit one scoring job per input."""
    specs = moderation_jobs_spec(runtime, tenant_id, raw_input, categories, thresholds)
    return [
        submit_job(runtime, tenant_id, request, params, options)
        for request, params, options in specs
    ]


def job_moderation_result(job: Job) -> dict[str, Any]:
    """The OpenAI `results` entry of a finished scoring job."""
    context = job.moderation or {}
    scores = (job.result or {}).get("scores") or {}
    return moderation_result(scores, context.get("thresholds", {}), context.get("input_types", []))


def moderation_response(finished: list[Job]) -> dict[str, Any]:
    """OpenAI's moderation response for jobs of one request."""
    return {
        "id": "modr-" + finished[0].id.removeprefix("job_"),
        "model": finished[0].model,
        "results": [job_moderation_result(job) for job in finished],
    }
