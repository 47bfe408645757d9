"""Moderation: each category is a yes/no question put to the VLM; its score is P("yes").

A policy maps category names to questions and thresholds. The request's own categories
win over the tenant's policy, which wins over the deployment's default policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.core.config import Settings
from services.core.errors import InvalidRequestError
from services.core.images import CheckedImage
from services.core.prompts import CanonicalRequest, canonical_part

DEFAULT_THRESHOLD = 0.5
MAX_CATEGORIES = 32


@dataclass(frozen=True)
class Category:
    """One moderation category."""

    question: str
    threshold: float = DEFAULT_THRESHOLD


Policy = dict[str, Category]


def parse_policy(raw: Any, param: str = "categories") -> Policy:
    """A policy from `{name: question}` or `{name: {"question": ..., "threshold": ...}}`."""
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
        policy[str(name)] = Category(
            question.strip(), check_threshold(threshold, f"{param}.{name}")
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
        policy = parse_policy(categories)
    elif tenant_policy:
        policy = parse_policy(tenant_policy, "policy")
    elif settings.moderation_policy:
        policy = parse_policy(settings.moderation_policy, "VLMQ_MODERATION_POLICY")
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
        return [one_input([{"type": "text", "text": text}], settings) for text in raw]
    return [one_input(raw, settings)]


def one_input(parts: list[Any], settings: Settings) -> ModerationInput:
    """One multimodal input as a single user message."""
    images: list[CheckedImage] = []
    content = [canonical_part(part, 0, images, settings) for part in parts]
    types = sorted({"image" if part["type"] == "image" else "text" for part in content})
    return ModerationInput(CanonicalRequest([{"role": "user", "content": content}], images), types)


def moderation_result(
    scores: dict[str, float], thresholds: dict[str, float], input_types: list[str]
) -> dict[str, Any]:
    """One entry of OpenAI's `results`."""
    flags = {name: scores[name] >= thresholds.get(name, DEFAULT_THRESHOLD) for name in scores}
    return {
        "flagged": any(flags.values()),
        "categories": flags,
        "category_scores": scores,
        "category_applied_input_types": {name: input_types for name in scores},
    }
