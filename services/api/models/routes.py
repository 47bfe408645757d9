"""`GET /v1/models` and `GET /v1/models/{id}`: the base model and its LoRA adapters."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from services.api.context import runtime
from services.core.errors import NotFoundError
from services.core.model_info import model_cards

bp = Blueprint("models", __name__, url_prefix="/v1/models")


@bp.get("")
def list_models() -> Response:
    """The served models, in the OpenAI list shape (with vLLM's `root` and `parent`)."""
    return jsonify({"object": "list", "data": model_cards(runtime().settings)})


@bp.get("/<path:model_id>")
def retrieve_model(model_id: str) -> Response:
    """One served model by id (ids may hold a `/`, as Hugging Face names do); else a 404."""
    cards = {card["id"]: card for card in model_cards(runtime().settings)}
    if model_id not in cards:
        raise NotFoundError(
            f"no model {model_id!r}: this deployment serves {', '.join(map(repr, cards))}",
            code="model_not_found",
            param="model",
        )
    return jsonify(cards[model_id])
