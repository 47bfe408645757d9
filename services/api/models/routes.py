"""`GET /v1/models`: the model this deployment serves."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from services.api.context import runtime
from services.core.model_info import model_card

bp = Blueprint("models", __name__, url_prefix="/v1/models")


@bp.get("")
def list_models() -> Response:
    """The served model, in the OpenAI list shape (with vLLM's `root`)."""
    return jsonify({"object": "list", "data": [model_card(runtime().settings)]})
