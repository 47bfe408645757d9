"""The audit log's objects, as `GET /v1/audit_events` answers them."""

from __future__ import annotations

from typing import Any, Literal

from services.core.responses.base import OpenAIPage, ResponseModel
from services.core.tables import AuditEvent


class AuditEventResponse(ResponseModel):
    """One audit event."""

    id: str
    object: Literal["audit_event"]
    created_at: int
    # A key's id (`key_...`), `operator` (the command line) or `vlmq` (the service).
    actor: str
    action: str
    target: str | None
    address: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventResponse:
        """The event as the API shows it."""
        return cls(
            id=event.id,
            object="audit_event",
            created_at=int(event.created_at.timestamp()),
            actor=event.actor,
            action=event.action,
            target=event.target,
            address=event.address,
            details=event.details or {},
        )


class AuditEventListResponse(OpenAIPage):
    """A page of audit events, newest first."""

    data: list[AuditEventResponse]

    @classmethod
    def of(cls, events: list[AuditEvent], has_more: bool) -> AuditEventListResponse:
        """The page of these events."""
        return cls(
            data=[AuditEventResponse.of(event) for event in events],
            **cls.page_fields([event.id for event in events], has_more=has_more),
        )
