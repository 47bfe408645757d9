"""`GET /v1/models`: the served models (vLLM's fields `root` and `parent` included)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from services.core.model_info import ServedModel
from services.core.responses.base import ResponseModel


class ModelCardResponse(ResponseModel):
    """A served model."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: str | None = None
    parent: str | None = None
    # What answers for this id (base and adapter checkpoints' fingerprint).
    revision: str | None = None

    @classmethod
    def of(cls, served: ServedModel) -> ModelCardResponse:
        """The model object of a served model or adapter."""
        return cls(
            id=served.id,
            object="model",
            created=served.created,
            owned_by="vlmq",
            root=public_root(served.root),
            parent=served.parent,
            revision=served.revision,
        )


def public_root(root: str) -> str:
    """What `root` shows of a checkpoint: a hub id as it is, a local folder by its name
    alone (the server's paths are not the client's business)."""
    path = Path(root)
    return path.name if path.is_absolute() or path.exists() else root


class ModelListResponse(ResponseModel):
    """The served models."""

    object: Literal["list"]
    data: list[ModelCardResponse]

    @classmethod
    def of(cls, served: list[ServedModel]) -> ModelListResponse:
        """The list of served models."""
        return cls(object="list", data=[ModelCardResponse.of(model) for model in served])
