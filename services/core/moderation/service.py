"""Moderation: a request's inputs become scoring job specs under the policy in force, and
the tenant's stored policy."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from sqlalchemy.orm import Session

from services.core.config import Settings
from services.core.errors import InvalidRequestError
from services.core.inputs.images import CheckedImage
from services.core.inputs.prompts import (
    CanonicalRequest,
    GenerationParams,
    canonical_part,
    check_fits_context,
)
from services.core.job_spec import JobSpec, SubmitOptions
from services.core.moderation.policy import parse_policy, resolve_policy
from services.core.tables import Tenant


@dataclass(frozen=True)
class ModerationInput:
    """One input to moderate, in canonical form, and the kinds of content it has."""

    request: CanonicalRequest
    input_types: list[str]


def moderation_inputs(raw: Any, settings: Settings) -> list[ModerationInput]:
    """OpenAI's `input`: a string, a list of strings, or a list of text / image_url parts."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise InvalidRequestError(
            "input must be a string, strings, or content parts", param="input"
        )
    if all(isinstance(item, str) for item in raw):
        # Each string is a job of its own: the cap bounds what one request can fan out to.
        if len(raw) > settings.max_moderation_inputs:
            raise InvalidRequestError(
                f"at most {settings.max_moderation_inputs} inputs per request", param="input"
            )
        return [one_input([{"type": "text", "text": text}], settings) for text in raw]
    if len(raw) > settings.max_parts_per_request:
        raise InvalidRequestError(
            f"at most {settings.max_parts_per_request} content parts per request", param="input"
        )
    return [one_input(raw, settings)]


def one_input(parts: list[Any], settings: Settings) -> ModerationInput:
    """One multimodal input as a single user message."""
    images: list[CheckedImage] = []
    content = [canonical_part(part, 0, images, settings) for part in parts]
    types = sorted({"image" if part["type"] == "image" else "text" for part in content})
    return ModerationInput(CanonicalRequest([{"role": "user", "content": content}], images), types)


def tenant_policy(session: Session, tenant_id: str) -> dict[str, Any]:
    """The tenant's stored policy (empty when it has none)."""
    tenant = session.get(Tenant, tenant_id)
    return dict(tenant.moderation_policy or {}) if tenant else {}


def screens_inputs(session: Session, tenant_id: str) -> bool:
    """Whether the tenant's policy screens its jobs' inputs."""
    tenant = session.get(Tenant, tenant_id)
    return bool(tenant and tenant.screen_inputs and tenant.moderation_policy)


def set_tenant_policy(
    session: Session, settings: Settings, tenant_id: str, categories: Any, screen: bool = False
) -> dict[str, Any]:
    """Replace the tenant's policy with `categories` (checked), screening its jobs' inputs
    or not; returns it as stored."""
    parsed = parse_policy(categories, settings)
    policy = {name: asdict(category) for name, category in parsed.items()}
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise LookupError(tenant_id)
    tenant.moderation_policy = policy
    tenant.screen_inputs = screen
    return policy


def screening_policy(session: Session, tenant_id: str) -> dict[str, Any] | None:
    """The tenant's policy when it screens its jobs' inputs, else None."""
    return tenant_policy(session, tenant_id) if screens_inputs(session, tenant_id) else None


def screened(specs: list[JobSpec], policy: dict[str, Any] | None) -> list[JobSpec]:
    """The specs, each generating one with images carrying the screening `policy` (None:
    the tenant does not screen): the worker scores its images before answering."""
    if not policy:
        return specs
    changes = {
        "screen_questions": {name: spec["question"] for name, spec in policy.items()},
        "screen_thresholds": {name: float(spec["threshold"]) for name, spec in policy.items()},
    }
    return [
        replace(spec, params=spec.params.model_copy(update=changes))
        if spec.request.images and spec.params.score_questions is None
        else spec
        for spec in specs
    ]


def moderation_jobs_spec(
    session: Session,
    settings: Settings,
    tenant_id: str,
    raw_input: Any,
    categories: Any,
    thresholds: Any,
    stored_policy: dict[str, Any] | None = None,
) -> list[JobSpec]:
    """The canonical requests, parameters and options of a moderation request (nothing stored).

    `stored_policy`: the tenant's policy when the caller has read it already (a batch reads
    it once for all its lines).
    """
    if stored_policy is None:
        stored_policy = tenant_policy(session, tenant_id)
    policy = resolve_policy(settings, stored_policy, categories, thresholds)
    params = GenerationParams(
        max_tokens=1, score_questions={name: c.question for name, c in policy.items()}
    )
    specs = []
    for item in moderation_inputs(raw_input, settings):
        context = {
            "thresholds": {name: c.threshold for name, c in policy.items()},
            "input_types": item.input_types,
        }
        # Scoring runs one forward pass per question over the prompt.
        cost = check_fits_context(item.request, params, settings) * max(1, len(policy))
        options = SubmitOptions(kind="moderation", moderation=context)
        specs.append(JobSpec(item.request, params, options, cost_tokens=cost))
    return specs
