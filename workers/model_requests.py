"""The model request of a claimed attempt: its images read and decoded, its adapter, and the
company its model call may keep."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from services.core.config import Settings
from services.core.inputs.images import to_rgb
from services.core.inputs.prompts import GenerationParams
from services.core.jobs.lifecycle import Claim
from services.core.runtime import Runtime
from services.core.tables import Image, image_hashes
from workers.backends.base import PredictRequest


def load_images(runtime: Runtime, claims: list[Claim]) -> dict[str, bytes]:
    """The stored bytes of every image these claims' messages name: a job's first image came
    with its claim, the others (if any) in one read."""
    images = dict(claim.first_image for claim in claims if claim.first_image is not None)
    hashes = sorted(
        {sha for claim in claims for sha in image_hashes(claim.messages)} - images.keys()
    )
    if hashes:
        with runtime.sessions() as session:
            rows = session.execute(
                sa.select(Image.sha256, Image.data).where(Image.sha256.in_(hashes))
            )
            images.update((sha, data) for sha, data in rows)
    return images


def predict_request(claim: Claim, images: dict[str, bytes], settings: Settings) -> PredictRequest:
    """The model request of a claimed job: its messages with each image decoded, and the
    LoRA adapter its `model` names (None: the base model)."""
    messages: list[dict[str, Any]] = []
    for message in claim.messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "image":
                parts.append({"type": "image", "image": to_rgb(images[part["sha256"]])})
            else:
                parts.append(part)
        messages.append({"role": message["role"], "content": parts})
    adapter = claim.model if claim.model in settings.adapters else None
    return PredictRequest(messages, GenerationParams.model_validate(claim.params), adapter=adapter)


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
