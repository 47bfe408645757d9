"""The audit log: administrative changes and unusual behaviour, for an operator's eye.

Changes are recorded in the transaction that makes them (a change that rolls back leaves
no event): keys created and revoked, moderation policies, presets and webhook endpoints
changed, webhook secrets rotated, batches cancelled, tenant weights set. Unusual behaviour
is recorded as it happens, at most once per `SIGNAL_EVERY_S` for the same subject (a flood
must not become a flood of rows): an address failing to authenticate past its limit, a
tenant refused by its limits, an input refused by screening.

An event names its actor by a key's id (never the key), `operator` (the command line) or
`vlmq` (the service); its details are plain facts the caller could read anyway (names, ids,
counts), never a key, a secret or a URL's credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from services.core.errors import InvalidRequestError
from services.core.ids import new_id
from services.core.tables import AuditEvent

log = structlog.get_logger(__name__)
# Who acts from the command line, and who when the service notices something itself.
OPERATOR = "operator"
SERVICE = "vlmq"
# The same sign of unusual behaviour about the same subject is recorded once in this time.
SIGNAL_EVERY_S = 60
SIGNAL_PREFIX = "vlmq:audit-signal:"
MAX_PAGE = 100


@dataclass(frozen=True)
class Actor:
    """Who made a change, and from which address (None: not over the network)."""

    name: str
    address: str | None = None


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    tenant_id: str | None,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an event to the session's transaction."""
    session.add(
        AuditEvent(
            id=new_id("aud"),
            tenant_id=tenant_id,
            actor=actor.name,
            action=action,
            target=target,
            address=actor.address,
            details=details or {},
        )
    )


def record_signal(
    session: Session,
    redis_client: redis.Redis,
    action: str,
    subject: str,
    *,
    tenant_id: str | None,
    address: str | None = None,
    details: dict[str, Any] | None = None,
) -> bool:
    """Record a sign of unusual behaviour about `subject` (an address, a tenant), unless
    the same one was recorded in the last `SIGNAL_EVERY_S`; returns whether it was."""
    try:
        first = redis_client.set(
            f"{SIGNAL_PREFIX}{action}:{subject}", b"1", nx=True, ex=SIGNAL_EVERY_S
        )
    except redis.RedisError:
        log.warning("audit_signal_skipped", action=action)
        return False
    if not first:
        return False
    record(
        session,
        Actor(SERVICE, address),
        action,
        tenant_id=tenant_id,
        target=subject,
        details=details,
    )
    return True


def list_events(
    session: Session, tenant_id: str | None, *, after: str | None = None, limit: int = 20
) -> tuple[list[AuditEvent], bool]:
    """A page of events, newest first: one tenant's (None: every tenant's and the
    deployment's), those older than the event `after`; and whether more follow."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequestError(f"limit must be between 1 and {MAX_PAGE}", param="limit")
    query = sa.select(AuditEvent)
    if tenant_id is not None:
        query = query.where(AuditEvent.tenant_id == tenant_id)
    if after is not None:
        cursor = session.scalar(
            query.with_only_columns(AuditEvent.seq).where(AuditEvent.id == after)
        )
        if cursor is None:
            raise InvalidRequestError(f"no audit event {after!r} to page after", param="after")
        query = query.where(AuditEvent.seq < cursor)
    rows = list(session.scalars(query.order_by(AuditEvent.seq.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit
