"""OpenAI's moderation response, and a tenant's moderation policy."""

from __future__ import annotations

from typing import Any, Literal

from services.core.moderation.policy import DEFAULT_THRESHOLD
from services.core.responses.base import ResponseModel
from services.core.tables import Job


class ModerationResult(ResponseModel):
    """One input's categories: flagged at its threshold, and each score."""

    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]

    @classmethod
    def of(cls, job: Job) -> ModerationResult:
        """The result of a finished scoring job: a category is flagged at its threshold."""
        context = job.moderation or {}
        scores: dict[str, float] = (job.result or {}).get("scores") or {}
        thresholds = context.get("thresholds", {})
        flags = {name: scores[name] >= thresholds.get(name, DEFAULT_THRESHOLD) for name in scores}
        return cls(
            flagged=any(flags.values()),
            categories=flags,
            category_scores=scores,
            category_applied_input_types={name: context.get("input_types", []) for name in scores},
        )


class ModerationResponse(ResponseModel):
    """OpenAI's moderation response."""

    id: str
    model: str
    results: list[ModerationResult]

    @classmethod
    def of(cls, finished: list[Job]) -> ModerationResponse:
        """The response of one request, from its finished scoring jobs."""
        return cls(
            id="modr-" + finished[0].id.removeprefix("job_"),
            model=finished[0].model,
            results=[ModerationResult.of(job) for job in finished],
        )


class ModerationPolicyResponse(ResponseModel):
    """A tenant's moderation categories (empty: the deployment's default applies)."""

    object: Literal["moderation.policy"]
    categories: dict[str, Any]
    # Whether the policy screens every job of the tenant before it is answered.
    screen: bool = False

    @classmethod
    def of(cls, categories: dict[str, Any], screen: bool = False) -> ModerationPolicyResponse:
        """The policy object of stored categories."""
        return cls(object="moderation.policy", categories=categories, screen=screen)
