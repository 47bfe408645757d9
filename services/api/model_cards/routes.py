"""`GET /v1/models` and `GET /v1/models/{id}`: the base model and its LoRA adapters."""

from __future__ import annotations

from flask import Blueprint, Response

from services.api.context import runtime
from services.api.openapi.declare import Param, operation
from services.api.respond import respond
from services.core.errors import NotFoundError
from services.core.model_info import served_models
from services.core.responses.model_cards import ModelCardResponse, ModelListResponse

bp = Blueprint("models", __name__, url_prefix="/v1/models")


@bp.get("")
@operation(
    summary="The served model and its LoRA adapters.",
    tag="openai",
    answers={200: ModelListResponse},
)
def list_models() -> Response:
    """The served models, in the OpenAI list shape (with vLLM's `root` and `parent`)."""
    return respond(ModelListResponse.of(served_models(runtime().settings)))


@bp.get("/<path:model_id>")
@operation(
    summary="One served model by id (a 404 for any other id).",
    tag="openai",
    answers={200: ModelCardResponse},
    errors=(404,),
    params=(Param("model_id", "path", {"type": "string", "minLength": 1}),),
)
def get_model(model_id: str) -> Response:
    """One served model by id (ids may hold a `/`, as Hugging Face names do); else a 404."""
    served = {model.id: model for model in served_models(runtime().settings)}
    if model_id not in served:
        raise NotFoundError(
            f"no model {model_id!r}: this deployment serves {', '.join(map(repr, served))}",
            code="model_not_found",
            param="model",
        )
    return respond(ModelCardResponse.of(served[model_id]))
