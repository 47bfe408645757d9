"""Bearer-key authentication for every `/v1/` route."""

from __future__ import annotations

from flask import Flask, g, request

from services.api.context import runtime
from services.core.auth import authenticate


def register(app: Flask) -> None:
    """Require an API key on `/v1/*` and remember the caller's tenant."""

    @app.before_request
    def require_api_key() -> None:
        if not request.path.startswith("/v1/"):
            return
        with runtime().sessions() as session:
            g.tenant_id = authenticate(session, request.headers.get("Authorization")).id
