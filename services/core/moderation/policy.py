"""Moderation: each category is a yes/no question put to the VLM; its score is P("yes").

A policy maps category names to questions and thresholds. The request's own categories
win over the tenant's policy, which wins over the deployment's default policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.core.config import Settings
from services.core.errors import InvalidRequestError

DEFAULT_THRESHOLD = 0.5
MAX_CATEGORIES = 32
# A category's name is a key of every result: short, like OpenAI's category names.
MAX_NAME_CHARS = 64


@dataclass(frozen=True)
class Category:
    """One moderation category."""

    question: str
    threshold: float = DEFAULT_THRESHOLD


Policy = dict[str, Category]


def parse_policy(raw: Any, settings: Settings, param: str = "categories") -> Policy:
    """A policy from `{name: question}` or `{name: {"question": ..., "threshold": ...}}`,
    within the size limits: every job it scores asks each question over its input."""
    if not isinstance(raw, dict) or not raw:
        raise InvalidRequestError(
            f"{param} must be a non-empty object of category: question", param=param
        )
    if len(raw) > MAX_CATEGORIES:
        raise InvalidRequestError(f"at most {MAX_CATEGORIES} categories", param=param)
    policy: Policy = {}
    for name, spec in raw.items():
        if isinstance(spec, str):
            spec = {"question": spec}
        question = spec.get("question") if isinstance(spec, dict) else None
        threshold = spec.get("threshold", DEFAULT_THRESHOLD) if isinstance(spec, dict) else None
        if not isinstance(question, str) or not question.strip():
            raise InvalidRequestError(f"category {name!r} needs a question", param=param)
        if not str(name) or len(str(name)) > MAX_NAME_CHARS:
            raise InvalidRequestError(
                f"a category name is 1 to {MAX_NAME_CHARS} characters", param=param
            )
        if len(question) > settings.max_question_chars:
            raise InvalidRequestError(
                f"category {name!r}: question is over {settings.max_question_chars} characters",
                param=param,
            )
        policy[str(name)] = Category(
            question.strip(), check_threshold(threshold, f"{param}.{name}")
        )
    total = sum(len(category.question) for category in policy.values())
    if total > settings.max_policy_chars:
        raise InvalidRequestError(
            f"the policy's questions are {total} characters together, over the limit of "
            f"{settings.max_policy_chars}",
            param=param,
        )
    return policy


def check_threshold(value: Any, param: str) -> float:
    """A threshold between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidRequestError("a threshold must be a number between 0 and 1", param=param)
    return float(value)


def resolve_policy(
    settings: Settings,
    tenant_policy: dict[str, Any] | None,
    categories: Any,
    thresholds: Any,
) -> Policy:
    """The policy in force for one request."""
    if categories is not None:
        policy = parse_policy(categories, settings)
    elif tenant_policy:
        policy = parse_policy(tenant_policy, settings, "policy")
    elif settings.moderation_policy:
        policy = parse_policy(settings.moderation_policy, settings, "VLMQ_MODERATION_POLICY")
    else:
        raise InvalidRequestError("no moderation policy: send categories or configure one")
    if thresholds is not None:
        if not isinstance(thresholds, dict):
            raise InvalidRequestError("thresholds must be an object", param="thresholds")
        for name, value in thresholds.items():
            if name not in policy:
                raise InvalidRequestError(
                    f"threshold for unknown category {name!r}", param="thresholds"
                )
            policy[name] = Category(
                policy[name].question, check_threshold(value, f"thresholds.{name}")
            )
    return policy
