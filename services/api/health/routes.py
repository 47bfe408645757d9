"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import sqlalchemy as sa
import structlog
from flask import Blueprint, Response, current_app, request

from services.api.context import runtime
from services.api.openapi.declare import operation, text
from services.api.operator import is_operator, may_scrape
from services.api.respond import respond
from services.core import metrics as vlmq_metrics
from services.core.errors import NotFoundError
from services.core.gauges import DeploymentCollector
from services.core.heartbeats import live_model_workers, load_failure
from services.core.responses.health import HealthResponse, ReadinessResponse

bp = Blueprint("health", __name__)
log = structlog.get_logger(__name__)
# The reasons this process last logged, so that a probe every few seconds logs a change
# once, not every probe.
LAST_REASONS: dict[str, dict[str, str]] = {"logged": {}}


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
    not, `checks` says what is down, and the log why (`reasons` says it too, to a request
    with the operator token; to anyone else only `unavailable`: the reasons name internal
    hosts and ports)."""
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
    if reasons != LAST_REASONS["logged"]:
        LAST_REASONS["logged"] = dict(reasons)
        if reasons:
            log.warning("not_ready", **reasons)
        else:
            log.info("ready")
    if not is_operator(request, rt.settings):
        reasons = dict.fromkeys(reasons, "unavailable")
    body = ReadinessResponse.of(reasons)
    if reasons:
        return respond(body, 503, {"Retry-After": "5"})
    return respond(body)


def describe(exc: Exception) -> str:
    """An exception as one short line."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


@bp.get("/metrics")
@operation(
    summary="Prometheus metrics of this host's vlmq processes (the operator's: see below).",
    tag="operations",
    answers={200: text("text/plain")},
    errors=(404,),
    public=True,
)
def metrics() -> Response:
    """Prometheus metrics of this host's vlmq processes and of the deployment's queue, to
    the operator only: a request with `VLMQ_OPERATOR_TOKEN`, or, with no token set, from
    this host; anyone else gets `404`. Tenants are labelled by a hash of their id unless
    `VLMQ_METRICS_TENANT_IDS` is on."""
    rt = runtime()
    if not may_scrape(request, rt.settings):
        raise NotFoundError("not found")
    registry = current_app.extensions.get("vlmq_scrape")
    if registry is None:
        collector = DeploymentCollector(
            rt.sessions, rt.redis, rt.settings.model_id, fair=rt.broker.fair
        )
        registry = vlmq_metrics.scrape_registry(
            [collector], show_tenant_ids=rt.settings.metrics_tenant_ids
        )
        current_app.extensions["vlmq_scrape"] = registry
    return Response(vlmq_metrics.exposition(registry), mimetype=vlmq_metrics.CONTENT_TYPE)
