"""`/v1/usage`: what the calling tenant holds now, beside its limits."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, Response

from services.api.context import runtime, tenant_id
from services.api.openapi.declare import operation
from services.api.respond import respond
from services.core.quota import unfinished_interactive_work
from services.core.responses.usage import UsageResponse
from services.core.storage import open_batches, stored_bytes

bp = Blueprint("usage", __name__, url_prefix="/v1/usage")


@bp.get("")
@operation(
    summary="What the tenant holds now (unfinished jobs, queued tokens, stored bytes, open "
    "batches), beside its limits.",
    tag="operations",
    answers={200: UsageResponse},
)
def get_usage() -> Response:
    """The tenant's counts, read now, and the limits they are held to."""
    rt = runtime()
    tenant = tenant_id()
    with rt.sessions() as session:
        unfinished, tokens = session.execute(sa.select(*unfinished_interactive_work(tenant))).one()
        usage = UsageResponse.of(
            rt.settings,
            unfinished_jobs=int(unfinished or 0),
            queued_tokens=int(tokens or 0),
            stored_bytes=stored_bytes(session, tenant),
            open_batches=open_batches(session, tenant),
        )
    return respond(usage)
