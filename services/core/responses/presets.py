"""Prompt presets: one, the list, and a deleted one."""

from __future__ import annotations

from typing import Literal

from services.core.presets import PresetView
from services.core.responses.base import ResponseModel, epoch_seconds


class PresetResponse(ResponseModel):
    """A named system prompt: the tenant's own, or the deployment's."""

    object: Literal["preset"]
    name: str
    system_prompt: str
    owned_by: Literal["tenant", "deployment"]
    created_at: int | None
    updated_at: int | None

    @classmethod
    def of(cls, view: PresetView) -> PresetResponse:
        """The preset object of a preset in force."""
        return cls(
            object="preset",
            name=view.name,
            system_prompt=view.system_prompt,
            owned_by=view.owned_by,  # type: ignore[arg-type]
            created_at=epoch_seconds(view.created_at),
            updated_at=epoch_seconds(view.updated_at),
        )


class PresetListResponse(ResponseModel):
    """Every preset the tenant can use, by name."""

    object: Literal["list"]
    data: list[PresetResponse]

    @classmethod
    def of(cls, views: list[PresetView]) -> PresetListResponse:
        """The list of presets."""
        return cls(object="list", data=[PresetResponse.of(view) for view in views])


class PresetDeletedResponse(ResponseModel):
    """A deleted preset."""

    object: Literal["preset.deleted"]
    name: str
    deleted: bool

    @classmethod
    def of(cls, name: str) -> PresetDeletedResponse:
        """The answer to deleting the preset `name`."""
        return cls(object="preset.deleted", name=name, deleted=True)
