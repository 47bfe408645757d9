"""Bearer-key authentication for every `/v1/` route."""

from __future__ import annotations

from flask import Flask, g, request

from services.api.context import runtime
from services.api.submissions import JOB_CREATING_ENDPOINTS
from services.core.auth import authenticate
from services.core.jobs.service import authenticate_submitter


def register(app: Flask) -> None:
    """Require an API key on `/v1/*` and remember the caller's tenant (and, for a route that
    creates jobs, how many of the tenant's jobs are unfinished, read in the same query)."""

    @app.before_request
    def require_api_key() -> None:
        if not request.path.startswith("/v1/"):
            return
        header = request.headers.get("Authorization")
        rt = runtime()
        with rt.sessions() as session:
            if request.endpoint in JOB_CREATING_ENDPOINTS and request.method == "POST":
                g.tenant_id, g.unfinished_jobs = authenticate_submitter(
                    session, header, rt.settings
                )
            else:
                g.tenant_id = authenticate(session, header)
