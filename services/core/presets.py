"""Prompt presets: named system prompts, the deployment's (`VLMQ_PRESETS`) and each tenant's.

A request picks one with `"preset": name`; its text becomes the conversation's first system
message, so it is part of the canonical prompt and of the cache key. A tenant's own preset
wins over the deployment's of the same name; another tenant's presets do not exist for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core.config import Settings
from services.core.db import utcnow
from services.core.errors import ConflictError, InvalidRequestError, NotFoundError
from services.core.inputs.prompts import CanonicalRequest
from services.core.tables import Preset

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_PRESETS_PER_TENANT = 100


@dataclass(frozen=True)
class PresetView:
    """A preset as the API shows it: the tenant's own, or the deployment's."""

    name: str
    system_prompt: str
    owned_by: str  # "tenant" or "deployment"
    created_at: datetime | None = None
    updated_at: datetime | None = None


def check_name(name: str) -> str:
    """A preset name: letters, digits, `_`, `.` and `-`, at most 64; else a 400."""
    if not NAME.match(name):
        raise InvalidRequestError(
            "a preset name is 1-64 letters, digits, '_', '.' or '-', starting with a letter "
            "or digit",
            param="name",
        )
    return name


def check_system_prompt(text: Any, settings: Settings) -> str:
    """A non-empty system prompt within the question length limit; else a 400."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequestError("system_prompt must be a non-empty string", param="system_prompt")
    if "\x00" in text:  # no database stores it as text
        raise InvalidRequestError("system_prompt must not contain a NUL", param="system_prompt")
    if len(text) > settings.max_question_chars:
        raise InvalidRequestError(
            f"system_prompt is over {settings.max_question_chars} characters",
            param="system_prompt",
        )
    return text.strip()


def own_preset(session: Session, tenant_id: str, name: str) -> Preset | None:
    """The tenant's own preset of that name, if any (a name no preset can have: None)."""
    if not NAME.match(name):
        return None
    return session.get(Preset, (tenant_id, name))


def deployment_view(name: str, settings: Settings) -> PresetView | None:
    """The deployment's preset of that name, if any."""
    text = settings.presets.get(name)
    return PresetView(name, text, "deployment") if text is not None else None


def tenant_view(preset: Preset) -> PresetView:
    """A tenant's preset row as the API shows it."""
    return PresetView(
        preset.name, preset.system_prompt, "tenant", preset.created_at, preset.updated_at
    )


def get_preset(session: Session, tenant_id: str, name: str, settings: Settings) -> PresetView:
    """The preset in force under `name` for the tenant; a 404 if there is none."""
    own = own_preset(session, tenant_id, name)
    view = tenant_view(own) if own is not None else deployment_view(name, settings)
    if view is None:
        raise NotFoundError(f"no preset {name[:64]!r}", code="preset_not_found", param="preset")
    return view


def list_presets(session: Session, tenant_id: str, settings: Settings) -> list[PresetView]:
    """Every preset the tenant can use, by name (its own hide the deployment's)."""
    own = session.scalars(sa.select(Preset).where(Preset.tenant_id == tenant_id)).all()
    views = {name: PresetView(name, text, "deployment") for name, text in settings.presets.items()}
    views.update({preset.name: tenant_view(preset) for preset in own})
    return [views[name] for name in sorted(views)]


def put_preset(
    session: Session, tenant_id: str, name: str, system_prompt: Any, settings: Settings
) -> PresetView:
    """Create or replace the tenant's preset `name`; at most `MAX_PRESETS_PER_TENANT`."""
    check_name(name)
    text = check_system_prompt(system_prompt, settings)
    preset = own_preset(session, tenant_id, name)
    now = utcnow()
    if preset is None:
        count = session.scalar(
            sa.select(sa.func.count()).select_from(Preset).where(Preset.tenant_id == tenant_id)
        )
        if (count or 0) >= MAX_PRESETS_PER_TENANT:
            raise ConflictError(
                f"a tenant has at most {MAX_PRESETS_PER_TENANT} presets: delete one first",
                code="too_many_presets",
                param="name",
            )
        preset = Preset(tenant_id=tenant_id, name=name, created_at=now)
        session.add(preset)
    preset.system_prompt = text
    preset.updated_at = now
    session.flush()
    return tenant_view(preset)


def delete_preset(session: Session, tenant_id: str, name: str, settings: Settings) -> None:
    """Delete the tenant's own preset; a 404 if it has none of that name (the deployment's
    presets are the operator's, set by `VLMQ_PRESETS`)."""
    preset = own_preset(session, tenant_id, name)
    if preset is None:
        where = (
            " (the deployment's presets are set by VLMQ_PRESETS)"
            if (name in settings.presets)
            else ""
        )
        raise NotFoundError(
            f"no preset {name[:64]!r} of yours{where}", code="preset_not_found", param="preset"
        )
    session.delete(preset)


def with_preset(
    session: Session,
    tenant_id: str,
    request: CanonicalRequest,
    name: str | None,
    settings: Settings,
) -> CanonicalRequest:
    """The request with the preset's text as its first system message (unchanged without
    a preset); a 404 for a preset the tenant does not have."""
    if name is None:
        return request
    if not isinstance(name, str):
        raise InvalidRequestError("preset must be a string", param="preset")
    text = get_preset(session, tenant_id, name, settings).system_prompt
    system = {"role": "system", "content": [{"type": "text", "text": text}]}
    return replace(request, messages=[system, *request.messages])
