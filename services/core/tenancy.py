"""Reading a tenant's own objects: another tenant's id answers exactly like an unknown one."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

from services.core.errors import NotFoundError


class Owned(Protocol):
    """A row that belongs to a tenant."""

    tenant_id: Any


Row = TypeVar("Row", bound=Owned)
MAX_ID_CHARS = 64


def get_owned(
    session: Session, model: type[Row], tenant_id: str, object_id: str, *, noun: str, param: str
) -> Row:
    """The tenant's `model` row with this id, or a 404 naming the `noun` (also for another
    tenant's row, so ids of other tenants cannot be probed)."""
    # An id no object can have (a NUL byte, which PostgreSQL refuses to compare, or one
    # longer than any id column) is unknown without asking the database.
    if len(object_id) > MAX_ID_CHARS or not object_id.isprintable():
        raise NotFoundError(f"no {noun} {object_id[:MAX_ID_CHARS]!r}", param=param)
    row = session.get(model, object_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFoundError(f"no {noun} {object_id!r}", param=param)
    return row
