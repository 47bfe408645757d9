"""`/v1/presets`: list, read, create or replace, and delete a tenant's prompt presets."""

from __future__ import annotations

from flask import Blueprint, Response

from services.api.audit import audited
from services.api.context import runtime, tenant_id
from services.api.openapi.declare import Param, operation
from services.api.request_parsing import body_as
from services.api.respond import respond
from services.core import presets
from services.core.requests.presets import PresetRequest
from services.core.responses.presets import (
    PresetDeletedResponse,
    PresetListResponse,
    PresetResponse,
)

bp = Blueprint("presets", __name__, url_prefix="/v1/presets")
PRESET_NAME = Param(
    "name", "path", {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
)


@bp.get("")
@operation(
    summary="Every prompt preset the tenant can use: its own and the deployment's.",
    tag="presets",
    answers={200: PresetListResponse},
)
def list_presets() -> Response:
    """Every preset the tenant can use: its own, and the deployment's it does not shadow."""
    rt = runtime()
    with rt.sessions() as session:
        views = presets.list_presets(session, tenant_id(), rt.settings)
    return respond(PresetListResponse.of(views))


@bp.get("/<name>")
@operation(
    summary="One preset by name (the tenant's own, else the deployment's).",
    tag="presets",
    answers={200: PresetResponse},
    errors=(404,),
    params=(PRESET_NAME,),
)
def get_preset(name: str) -> Response:
    """The preset in force under this name (the tenant's own, else the deployment's)."""
    rt = runtime()
    with rt.sessions() as session:
        view = presets.get_preset(session, tenant_id(), name, rt.settings)
    return respond(PresetResponse.of(view))


@bp.put("/<name>")
@operation(
    summary="Create or replace one of the tenant's presets.",
    tag="presets",
    answers={200: PresetResponse},
    errors=(400, 409),
    body=PresetRequest,
    params=(PRESET_NAME,),
)
def put_preset(name: str) -> Response:
    """Create or replace the tenant's preset."""
    rt = runtime()
    body = body_as(PresetRequest)
    with rt.unit_of_work() as session:
        view = presets.put_preset(session, tenant_id(), name, body.system_prompt, rt.settings)
        audited("preset.updated", target=name, session=session)
    return respond(PresetResponse.of(view))


@bp.delete("/<name>")
@operation(
    summary="Delete one of the tenant's presets.",
    tag="presets",
    answers={200: PresetDeletedResponse},
    errors=(404,),
    params=(PRESET_NAME,),
)
def delete_preset(name: str) -> Response:
    """Delete the tenant's own preset (a deployment preset of that name applies again)."""
    rt = runtime()
    with rt.unit_of_work() as session:
        presets.delete_preset(session, tenant_id(), name, rt.settings)
        audited("preset.deleted", target=name, session=session)
    return respond(PresetDeletedResponse.of(name))
