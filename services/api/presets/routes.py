"""`/v1/presets`: list, read, create or replace, and delete a tenant's prompt presets."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from services.api.context import runtime, tenant_id
from services.api.presets.protocol import PresetRequest
from services.api.request_parsing import json_object, validate
from services.core import presets

bp = Blueprint("presets", __name__, url_prefix="/v1/presets")


@bp.get("")
def list_presets() -> Response:
    """Every preset the tenant can use: its own, and the deployment's it does not shadow."""
    rt = runtime()
    with rt.sessions() as session:
        views = presets.list_presets(session, tenant_id(), rt.settings)
    return jsonify({"object": "list", "data": [view.to_dict() for view in views]})


@bp.get("/<name>")
def get_preset(name: str) -> Response:
    """The preset in force under this name (the tenant's own, else the deployment's)."""
    rt = runtime()
    with rt.sessions() as session:
        view = presets.get_preset(session, tenant_id(), name, rt.settings)
    return jsonify(view.to_dict())


@bp.put("/<name>")
def put_preset(name: str) -> Response:
    """Create or replace the tenant's preset."""
    rt = runtime()
    body = validate(PresetRequest, json_object())
    with rt.unit_of_work() as session:
        view = presets.put_preset(session, tenant_id(), name, body.system_prompt, rt.settings)
    return jsonify(view.to_dict())


@bp.delete("/<name>")
def delete_preset(name: str) -> Response:
    """Delete the tenant's own preset (a deployment preset of that name applies again)."""
    rt = runtime()
    with rt.unit_of_work() as session:
        presets.delete_preset(session, tenant_id(), name, rt.settings)
    return jsonify({"object": "preset.deleted", "name": name, "deleted": True})
