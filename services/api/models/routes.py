"""`GET /v1/models` and `GET /v1/models/{id}`: the model this deployment serves."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from services.api.context import runtime
from services.core.errors import NotFoundError
from services.core.model_info import model_card

bp = Blueprint("models", __name__, url_prefix="/v1/models")


@bp.get("")
def list_models() -> Response:
    """The served model, in the OpenAI list shape (with vLLM's `root`)."""
    return jsonify({"object": "list", "data": [model_card(runtime().settings)]})


@bp.get("/<path:model_id>")
def retrieve_model(model_id: str) -> Response:
    """One served model by id (ids may hold a `/`, as Hugging Face names do); else a 404."""
    card = model_card(runtime().settings)
    if model_id != card["id"]:
        raise NotFoundError(
            f"no model {model_id!r}: this deployment serves {card['id']!r}",
            code="model_not_found",
            param="model",
        )
    return jsonify(card)
