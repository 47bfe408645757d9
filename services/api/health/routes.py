"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, Response, current_app

from services.api.context import runtime
from services.api.openapi.declare import operation, text
from services.api.respond import respond
from services.core import metrics as vlmq_metrics
from services.core.gauges import DeploymentCollector
from services.core.heartbeats import live_model_workers, load_failure
from services.core.responses.health import HealthResponse, ReadinessResponse

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@operation(
    summary="The process is up.", tag="operations", answers={200: HealthResponse}, public=True
)
def healthz() -> Response:
    """The process is up."""
    return respond(HealthResponse(status="ok"))


@bp.get("/readyz")
@operation(
    summary="Ready when the database, Redis and a worker with its model answer.",
    tag="operations",
    answers={200: ReadinessResponse, 503: ReadinessResponse},
    public=True,
)
def readyz() -> Response:
    """Ready when the database and Redis answer and a worker has its model loaded; when
    not, `reasons` says what is down and why."""
    rt = runtime()
    reasons: dict[str, str] = {}
    try:
        with rt.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as exc:
        reasons["database"] = describe(exc)
    try:
        rt.redis.ping()
    except Exception as exc:
        reasons["redis"] = describe(exc)
    if "redis" in reasons:
        reasons["worker"] = "unknown: worker heartbeats live in Redis"
    else:
        try:
            if not live_model_workers(rt.redis, rt.settings.model_id):
                failure = load_failure(rt.redis, rt.settings.model_id)
                reasons["worker"] = (
                    f"a worker failed to load the model: {failure}"
                    if failure
                    else f"no live worker has {rt.settings.model_id} loaded"
                )
        except Exception as exc:
            reasons["worker"] = describe(exc)
    body = ReadinessResponse.of(reasons)
    if reasons:
        return respond(body, 503, {"Retry-After": "5"})
    return respond(body)


def describe(exc: Exception) -> str:
    """An exception as one short line."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


@bp.get("/metrics")
@operation(
    summary="Prometheus metrics of this host's vlmq processes.",
    tag="operations",
    answers={200: text("text/plain")},
    public=True,
)
def metrics() -> Response:
    """Prometheus metrics of this host's vlmq processes and of the deployment's queue."""
    registry = current_app.extensions.get("vlmq_scrape")
    if registry is None:
        rt = runtime()
        collector = DeploymentCollector(
            rt.sessions,
            rt.redis,
            rt.settings.model_id,
            fair=rt.broker.fair,
            show_tenant_ids=rt.settings.metrics_tenant_ids,
        )
        registry = vlmq_metrics.scrape_registry([collector])
        current_app.extensions["vlmq_scrape"] = registry
    return Response(vlmq_metrics.exposition(registry), mimetype=vlmq_metrics.CONTENT_TYPE)
