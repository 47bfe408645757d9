"""What the API does around every request to be seen: the request id (`x-request-id`, the
client's if it sent a sane one), one access line, and the request metrics."""

from __future__ import annotations

import time

import structlog
from flask import Flask, Response, g, request

from services.core import logs, metrics

log = structlog.get_logger("vlmq.access")
REQUEST_ID_HEADER = "x-request-id"
# The route label of a request no rule matched (a 404): never the raw path, which a client
# could fill with any number of values.
UNMATCHED_ROUTE = "<unmatched>"


def register(app: Flask) -> None:
    """Bind the request id before any other handler runs, and answer it with every response."""
    metrics.start_api_series()

    @app.before_request
    def start_request() -> None:
        g.started_at = time.perf_counter()
        g.request_id = logs.accepted_request_id(request.headers.get(REQUEST_ID_HEADER))
        structlog.contextvars.clear_contextvars()
        logs.annotate(request_id=g.request_id)
        g.in_flight = True
        metrics.request_started()

    @app.after_request
    def finish_request(response: Response) -> Response:
        request_id = g.get("request_id") or logs.new_request_id()
        response.headers[REQUEST_ID_HEADER] = request_id
        started_at = g.get("started_at")
        took_s = time.perf_counter() - started_at if started_at is not None else 0.0
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
        metrics.http_request(request.method, route, response.status_code, took_s)
        log.info(
            "request",
            method=request.method,
            route=route,
            status=response.status_code,
            duration_ms=round(took_s * 1000, 1),
            tenant=caller.tenant_id if (caller := g.get("caller")) else None,
        )
        return response

    @app.teardown_request
    def end_request(_error: BaseException | None) -> None:
        if g.pop("in_flight", False):
            metrics.request_ended()
        structlog.contextvars.clear_contextvars()
