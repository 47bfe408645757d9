"""Access to the runtime and the calling tenant from inside a request."""

from __future__ import annotations

from flask import current_app, g

from services.core.runtime import Runtime


def runtime() -> Runtime:
    """The app's runtime (database, Redis, Celery)."""
    value: Runtime = current_app.extensions["vlmq"]
    return value


def tenant_id() -> str:
    """The id of the tenant whose key authenticated this request."""
    value: str = g.tenant_id
    return value
