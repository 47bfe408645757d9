"""The model request of a claimed attempt: its images and policy read, its images decoded,
its adapter, and the company its model call may keep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from services.core.config import Settings
from services.core.inputs.images import to_rgb
from services.core.jobs.lifecycle import Claim
from services.core.moderation.stored import PolicyCache, job_params
from services.core.runtime import Runtime
from services.core.tables import Image, image_hashes
from workers.backends.base import PredictRequest

# The moderation policies this worker process has read (see `services.core.moderation.stored`).
POLICIES = PolicyCache()


@dataclass(frozen=True)
class StoredInputs:
    """What claimed jobs name by hash: image bytes, and moderation policies' questions."""

    images: dict[str, bytes]
    policies: dict[str, dict[str, str]]


def load_inputs(runtime: Runtime, claims: list[Claim]) -> StoredInputs:
    """The stored bytes of every image these claims' messages name (a job's first image came
    with its claim, the others in one read), and the policies they score."""
    images = dict(claim.first_image for claim in claims if claim.first_image is not None)
    hashes = sorted(
        {sha for claim in claims for sha in image_hashes(claim.messages)} - images.keys()
    )
    policy_hashes = {
        str(sha)
        for claim in claims
        for name in ("score_policy", "screen_policy")
        if (sha := claim.params.get(name))
    }
    policies: dict[str, dict[str, str]] = {}
    if hashes or policy_hashes:
        with runtime.sessions() as session:
            if hashes:
                rows = session.execute(
                    sa.select(Image.sha256, Image.data).where(Image.sha256.in_(hashes))
                )
                images.update((sha, data) for sha, data in rows)
            if policy_hashes:
                policies = POLICIES.read(session, policy_hashes)
    return StoredInputs(images, policies)


def predict_request(claim: Claim, inputs: StoredInputs, settings: Settings) -> PredictRequest:
    """The model request of a claimed job: its messages with each image decoded, the
    questions of the policy it scores, and the LoRA adapter its `model` names (None: the
    base model; a JSON request to the base model goes to the deployment's JSON adapter)."""
    messages: list[dict[str, Any]] = []
    for message in claim.messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "image":
                parts.append({"type": "image", "image": to_rgb(inputs.images[part["sha256"]])})
            else:
                parts.append(part)
        messages.append({"role": message["role"], "content": parts})
    params = job_params(claim.params, inputs.policies)
    adapter = claim.model if claim.model in settings.adapters else None
    if adapter is None and params.grammar is not None and params.grammar.is_json:
        adapter = settings.json_adapter_name
    return PredictRequest(messages, params, adapter=adapter)


def company_limit(attempt: int, settings: Settings) -> int:
    """How many requests an attempt's model call may hold.

    A job on a later attempt may be what killed its worker, so it shares smaller calls
    with other retried jobs only (a quarter of the batch per earlier attempt), and its
    last attempt runs alone: a poison input fails by itself, while the innocent jobs of a
    worker that was killed for another reason still run together.
    """
    if attempt >= settings.max_attempts:
        return 1
    return max(1, settings.max_batch // 4 ** (attempt - 1))
