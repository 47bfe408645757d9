"""The base of every response model, and the time formats the bodies use."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class ResponseModel(BaseModel):
    """A response body: the fields it names, and possibly more (as OpenAI's objects do).

    Fields a client may not rely on stay open (`dict[str, Any]`). Schemathesis checks live
    answers against the document built from these in `make test`.
    """

    model_config = ConfigDict(extra="allow")

    def dump(self) -> dict[str, Any]:
        """The body as JSON-ready data (fields never set stay out)."""
        return self.model_dump(mode="json", exclude_unset=True)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds, or None."""
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else None


def epoch_seconds(value: datetime | None) -> int | None:
    """A timestamp as Unix seconds (OpenAI's objects use them), or None."""
    return int(value.timestamp()) if value else None


class OpenAIPage(ResponseModel):
    """The paging fields of OpenAI's lists: `data`, `first_id`, `last_id`, `has_more`."""

    object: Literal["list"]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @staticmethod
    def page_fields(ids: list[str], has_more: bool) -> dict[str, Any]:
        """The paging fields of a page whose objects have these ids."""
        return {
            "object": "list",
            "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None,
            "has_more": has_more,
        }
