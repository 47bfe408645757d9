"""Access to the runtime and the caller from inside a request."""

from __future__ import annotations

from flask import current_app, g

from services.core.auth import Caller
from services.core.runtime import Runtime


def runtime() -> Runtime:
    """The app's runtime (database, Redis, broker)."""
    value: Runtime = current_app.extensions["vlmq"]
    return value


def caller() -> Caller:
    """Who sent this request (set by authentication)."""
    value: Caller = g.caller
    return value


def tenant_id() -> str:
    """The id of the tenant whose key authenticated this request."""
    return caller().tenant_id
