"""Keyset pagination, newest first: the one way lists of jobs and batches are paged."""

from __future__ import annotations

from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core.errors import InvalidRequestError

Row = TypeVar("Row")
MAX_PAGE = 100


def newest_first_page(
    session: Session, model: type[Row], query: sa.Select[Any], cursor: Row | None, limit: int
) -> tuple[list[Row], bool]:
    """Rows of `query` older than `cursor` (by created_at, then id), and whether more follow."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequestError(f"limit must be between 1 and {MAX_PAGE}", param="limit")
    created_at, row_id = model.created_at, model.id  # type: ignore[attr-defined]
    if cursor is not None:
        query = query.where(
            sa.or_(
                created_at < cursor.created_at,  # type: ignore[attr-defined]
                sa.and_(created_at == cursor.created_at, row_id < cursor.id),  # type: ignore[attr-defined]
            )
        )
    rows = list(session.scalars(query.order_by(created_at.desc(), row_id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit
