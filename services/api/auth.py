"""Bearer-key authentication for every route that is not declared public."""

from __future__ import annotations

from flask import Flask, current_app, g, request

from services.api.address_limit import address_limit
from services.api.context import runtime
from services.api.openapi.declare import operation_of
from services.api.request_parsing import idempotency_key
from services.core.auth import authenticate
from services.core.errors import AuthenticationError
from services.core.quota import refuse_over_quota


def register(app: Flask) -> None:
    """Require an API key on `/v1/*` and remember the caller. A route declared as creating
    jobs also counts the tenant's unfinished jobs, in the same read, and a tenant already at
    its cap is refused before the body is read (with an `Idempotency-Key`, `submit` checks
    when it creates a job instead: replaying an accepted request is never refused)."""

    @app.before_request
    def require_api_key() -> None:
        if not request.path.startswith("/v1/"):
            return
        declared = operation_of(current_app.view_functions.get(request.endpoint or ""))
        if declared is not None and declared.public:
            return
        creates_jobs = declared is not None and declared.creates_jobs
        rt = runtime()
        by_address = address_limit()
        if by_address is not None:
            by_address.refuse_if_over()
        try:
            with rt.sessions() as session:
                g.caller = authenticate(
                    session,
                    request.headers.get("Authorization"),
                    rt.settings,
                    count_jobs=creates_jobs,
                )
        except AuthenticationError:
            if by_address is not None:
                by_address.count()
            raise
        if creates_jobs and idempotency_key() is None:
            refuse_over_quota(g.caller.unfinished_jobs, rt.settings)
