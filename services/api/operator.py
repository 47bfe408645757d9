"""Who may see the operator's views on the public port: `/metrics` and `/readyz`'s reasons.

A request carrying `VLMQ_OPERATOR_TOKEN` as its bearer token is the operator's. Without a
configured token, a scrape from this host (a loopback peer, as a Prometheus beside
`vlmq up` is) may read `/metrics`; anyone else finds nothing there (`404`).
"""

from __future__ import annotations

import hmac
import ipaddress

from flask import Request

from services.core.config import Settings


def is_operator(request: Request, settings: Settings) -> bool:
    """Whether the request carries the operator token (compared in constant time)."""
    token = settings.operator_token
    header = request.headers.get("Authorization", "")
    if not token or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header.removeprefix("Bearer ").encode(), token.encode())


def is_loopback_peer(request: Request) -> bool:
    """Whether the request's client is on this host."""
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def may_scrape(request: Request, settings: Settings) -> bool:
    """Whether the request may read `/metrics`."""
    if settings.operator_token:
        return is_operator(request, settings)
    return is_loopback_peer(request)
