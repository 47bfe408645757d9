"""The audit log from inside a request: the caller's changes and its listing route."""

from __future__ import annotations

from typing import Any

import structlog
from flask import Blueprint, Response, g, request
from sqlalchemy.orm import Session

from services.api.address_limit import client_address
from services.api.context import caller, runtime, tenant_id
from services.api.openapi.declare import LIMIT, after, operation
from services.api.request_parsing import page_limit
from services.api.respond import respond
from services.core.audit import Actor, list_events, record, record_signal
from services.core.responses.audit import AuditEventListResponse

bp = Blueprint("audit", __name__, url_prefix="/v1/audit_events")
log = structlog.get_logger(__name__)


def audited(
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    session: Session | None = None,
) -> None:
    """Record a change the caller made: in `session`'s transaction, the one that made it;
    without one (the change committed a transaction of its own), in a transaction of its
    own right after."""
    actor = Actor(caller().key_id, client_address())
    if session is not None:
        record(session, actor, action, tenant_id=tenant_id(), target=target, details=details)
        return
    with runtime().unit_of_work() as own:
        record(own, actor, action, tenant_id=tenant_id(), target=target, details=details)


def signal(action: str, subject: str, tenant: str | None, details: dict[str, Any]) -> None:
    """Record a sign of unusual behaviour the API noticed (at most once a minute per
    subject; never at the cost of the answer it goes with)."""
    try:
        rt = runtime()
        with rt.unit_of_work() as session:
            record_signal(
                session,
                rt.redis,
                action,
                subject,
                tenant_id=tenant,
                address=client_address(),
                details=details,
            )
    except Exception:
        log.warning("audit_signal_failed", action=action)


def signal_refusal(status: int, code: str) -> None:
    """A 429 for an authenticated tenant (its limits refused it), or for an address that
    failed to authenticate too often, is worth an operator's eye."""
    if status != 429:
        return
    known = getattr(g, "caller", None)
    if known is not None:
        signal("limits.refused", known.tenant_id, known.tenant_id, {"code": code})
    elif request.path.startswith("/v1/"):
        signal("auth.failures_exceeded", client_address(), None, {"code": code})


@bp.get("")
@operation(
    summary="The tenant's audit events, newest first (administrative changes and unusual "
    "behaviour).",
    tag="audit",
    answers={200: AuditEventListResponse},
    errors=(400,),
    params=(LIMIT, after("audit event")),
    operation_id="listAuditEvents",
)
def list_all() -> Response:
    """A page of the tenant's events: `limit` (1-100, 20), `after` (an event id: older ones)."""
    with runtime().sessions() as session:
        events, has_more = list_events(
            session, tenant_id(), after=request.args.get("after"), limit=page_limit()
        )
        return respond(AuditEventListResponse.of(events, has_more))
